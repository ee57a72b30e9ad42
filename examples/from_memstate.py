"""MemState's README, run on memstate-pg.

The "Quick Start" and "LangGraph Integration" of MemState 0.5.1's README (PyPI
`memstate`), with the imports changed. Where memstate-pg spells a line differently, the
MemState line stays right above it as a comment; docs/from-memstate.md maps every name.

What memstate-pg does differently: the fact and its vector commit in ONE PostgreSQL
transaction; Chroma is a mirror fed from the transactional outbox by a SyncWorker, so a
commit never fails (or rolls back) because the vector store is down, and `rollback(1)` is
a new commit whose delete reaches Chroma through the outbox too.

    python examples/from_memstate.py             # the embedded server, or $MEMSTATE_DSN
"""

from __future__ import annotations

import os
from typing import Any

import chromadb
from pydantic import BaseModel

from memstate_pg import ChromaMirror, Fact, MemoryStore, SyncWorker
from memstate_pg import MemStateError as HookError  # no hook here can fail a commit

# MemState:
# from memstate import MemoryStore, SQLiteStorage, HookError
# from memstate.integrations.chroma import ChromaSyncHook
# import chromadb


# 1. Define Data Schema
class UserPref(BaseModel):
    content: str
    role: str


def open_store(dsn: str | None = None) -> MemoryStore:
    # 2. Setup Storage (Local)
    # MemState: sqlite = SQLiteStorage("agent_memory.db")
    dsn = dsn or os.environ.get("MEMSTATE_DSN")
    # MemState: mem = MemoryStore(sqlite)
    mem = MemoryStore(dsn) if dsn else MemoryStore.embedded()
    mem.migrate()  # idempotent (MemState creates its tables on first use)
    return mem


def quick_start(mem: MemoryStore, chroma: Any = None) -> dict[str, Any]:
    """MemState's Quick Start, steps 2 to 5; returns what happened, for the test."""
    chroma = chroma if chroma is not None else chromadb.Client()

    # 3. Initialize with Sync Hook
    # MemState: mem.add_hook(ChromaSyncHook(chroma, "agent_memory", text_field="content", metadata_fields=["role"]))
    mem.add_mirror(ChromaMirror(chroma, "agent_memory"), name="chroma", metadata_fields=["role"])
    # MemState: mem.register_schema("preference", UserPref)
    mem.register_schema("preference", UserPref, text_field="content")

    # 4. Atomic Commit
    # Validates Pydantic model -> Writes SQL (fact + vector, one transaction) -> outbox -> Chroma
    try:
        # MemState: mem.commit_model(model=UserPref(content="User prefers vegetarian", role="preference"))
        fid = mem.commit(
            Fact(
                type="preference",
                payload=UserPref(content="User prefers vegetarian", role="preference"),
            )
        )
    except HookError as e:
        print("Commit failed, SQL rolled back automatically:", e)
        raise

    worker = SyncWorker(mem)  # in production: `memstate-pg sync` runs beside the app
    worker.drain()
    mirror = mem.mirror("chroma")
    in_chroma = str(fid) in mirror.get([str(fid)])
    hits = [(h.fact.payload["content"], round(h.score, 3)) for h in mem.search("vegetarian")]

    # 5. Undo (if needed)
    mem.rollback(1)
    worker.drain()
    worker.close()
    # the Chroma client above lives in this process only: unregister its mirror, or the
    # outbox would keep rows for it that no other process can deliver
    in_chroma_after_rollback = str(fid) in mirror.get([str(fid)])
    mem.remove_mirror("chroma")
    return {
        "fact_id": fid,
        "in_chroma_after_commit": in_chroma,
        "hits": hits,
        "live_after_rollback": mem.get(fid) is not None,
        "in_chroma_after_rollback": in_chroma_after_rollback,
        "history": [(v.op, v.kind) for v in mem.history(fid)],
    }


def unregistered_type(mem: MemoryStore) -> Any:
    """MemState stores a type nobody registered as given (a schema is opt-in)."""
    return mem.commit(
        Fact(type="profile_update", payload={"content": "User moved to Paris", "role": "city"})
    )


def langgraph_integration(mem: MemoryStore) -> Any:
    """MemState's "LangGraph Integration": a checkpointer built from the memory store."""
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph

    from memstate_pg.langgraph import MemStateCheckpointer

    # MemState: from memstate.integrations.langgraph import MemStateCheckpointer

    class State(TypedDict):
        turns: int

    workflow = StateGraph(State)
    workflow.add_node("agent", lambda state: {"turns": state["turns"] + 1})
    workflow.add_edge(START, "agent")
    workflow.add_edge("agent", END)

    checkpointer = MemStateCheckpointer(memory=mem)
    app = workflow.compile(checkpointer=checkpointer)

    config = {"configurable": {"thread_id": "from-memstate"}}
    app.invoke({"turns": 0}, config)
    return app.invoke({"turns": app.get_state(config).values["turns"]}, config)


def main(dsn: str | None = None) -> None:
    mem = open_store(dsn)
    try:
        result = quick_start(mem)
        print("committed", result["fact_id"], "search:", result["hits"])
        print(
            "in Chroma after the commit:",
            result["in_chroma_after_commit"],
            "| after rollback(1):",
            result["in_chroma_after_rollback"],
            "| history:",
            result["history"],
        )
        print("unregistered type committed as", unregistered_type(mem))
        try:
            print("LangGraph state:", langgraph_integration(mem))
        except ImportError:  # the LangGraph lines need the langgraph extra
            print('LangGraph part skipped: pip install "memstate-pg[langgraph]"')
    finally:
        mem.close()


if __name__ == "__main__":
    main()
