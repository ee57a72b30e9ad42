"""A real compiled StateGraph on our checkpointers: a tool-like node behind a human
approval (interrupt / Command(resume=...)), resumed by a *new* saver instance (state
really is in Postgres), then time travel: replay from an old checkpoint, and fork at the
approval with another answer (update_state). Sync and async."""

from __future__ import annotations

import asyncio
import operator
from typing import Annotated, Any, TypedDict
from uuid import uuid4

import pytest
from langgraph.checkpoint.serde.types import INTERRUPT
from langgraph.graph import END, START, StateGraph
from langgraph.types import Command, interrupt

from memstate_pg import AsyncMemoryStore, MemoryStore
from memstate_pg.langgraph import AsyncMemStateCheckpointer, MemStateCheckpointer


class State(TypedDict, total=False):
    messages: Annotated[list[str], operator.add]
    city: str
    approved: bool
    result: str


class Tools:
    """The 'tool': counts its calls, so a replay that re-runs it is visible."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def weather(self, city: str) -> str:
        self.calls.append(city)
        return {"Berlin": "rain", "Lisbon": "sun"}.get(city, "unknown")


def build(tools: Tools) -> StateGraph:
    def plan(state: State) -> State:
        return {"messages": [f"plan: weather for {state['city']}"]}

    def approve(state: State) -> State:
        answer = interrupt({"question": f"call the weather tool for {state['city']}?"})
        return {"approved": answer == "yes", "messages": [f"human: {answer}"]}

    def tool(state: State) -> State:
        if not state["approved"]:
            return {"result": "skipped", "messages": ["tool: skipped"]}
        result = tools.weather(state["city"])
        return {"result": result, "messages": [f"tool: {result}"]}

    builder = StateGraph(State)
    builder.add_node("plan", plan)
    builder.add_node("approve", approve)
    builder.add_node("tool", tool)
    builder.add_edge(START, "plan")
    builder.add_edge("plan", "approve")
    builder.add_edge("approve", "tool")
    builder.add_edge("tool", END)
    return builder


def _checkpoint_id(config: dict[str, Any]) -> str:
    return config["configurable"]["checkpoint_id"]


def _ancestors(graph: Any, config: dict[str, Any]) -> list[str]:
    """Checkpoint ids from `config` up the parent pointers to the thread's first."""
    ids = []
    snapshot = graph.get_state(config)
    while snapshot.parent_config is not None:
        ids.append(_checkpoint_id(snapshot.parent_config))
        snapshot = graph.get_state(snapshot.parent_config)
    return ids


def test_interrupt_resume_and_time_travel_sync(dsn: str) -> None:
    tools = Tools()
    builder = build(tools)
    config = {"configurable": {"thread_id": f"t-{uuid4()}"}}

    with MemStateCheckpointer.from_conn_string(dsn) as saver:
        graph = builder.compile(checkpointer=saver)
        out = graph.invoke({"city": "Berlin", "messages": ["user: weather?"]}, config)
        assert out["__interrupt__"][0].value == {"question": "call the weather tool for Berlin?"}
        state = graph.get_state(config)
        assert state.next == ("approve",)
        assert tools.calls == []
        # the interrupt is a pending write of the interrupted checkpoint
        assert INTERRUPT in {w[1] for w in saver.get_tuple(config).pending_writes}

    with MemStateCheckpointer.from_conn_string(dsn) as saver:  # a new process, in effect
        graph = builder.compile(checkpointer=saver)
        out = graph.invoke(Command(resume="yes"), config)
        assert out["result"] == "rain"
        assert out["messages"] == [
            "user: weather?",
            "plan: weather for Berlin",
            "human: yes",
            "tool: rain",
        ]
        assert tools.calls == ["Berlin"]

        history = list(graph.get_state_history(config))
        assert [s.next for s in history][:2] == [(), ("tool",)]
        # every snapshot points at its parent, newest first
        for newer, older in zip(history, history[1:], strict=False):
            assert _checkpoint_id(newer.parent_config) == _checkpoint_id(older.config)

        # time travel 1: replay the tool step from the checkpoint before it
        before_tool = next(s for s in history if s.next == ("tool",))
        replay = graph.invoke(None, before_tool.config)
        assert replay["result"] == "rain"
        assert tools.calls == ["Berlin", "Berlin"]
        chain = _ancestors(graph, graph.get_state(config).config)
        assert _checkpoint_id(before_tool.config) in chain  # a branch off the old checkpoint
        assert _checkpoint_id(history[0].config) not in chain

        # time travel 2: fork at the approval checkpoint with another answer (as InMemorySaver
        # does, the stored writes of the approved task are replayed, so fork by update_state)
        at_approval = next(s for s in history if s.next == ("approve",))
        forked = graph.update_state(
            at_approval.config, {"approved": False, "messages": ["human: no"]}, as_node="approve"
        )
        assert _checkpoint_id(at_approval.config) in _ancestors(graph, forked)
        fork = graph.invoke(None, forked)
        assert fork["result"] == "skipped"
        assert tools.calls == ["Berlin", "Berlin"]
        assert graph.get_state(config).values["result"] == "skipped"
        # the original branch is still there
        assert graph.get_state(history[0].config).values["result"] == "rain"


def test_interrupt_resume_and_time_travel_async(dsn: str) -> None:
    tools = Tools()
    builder = build(tools)
    config = {"configurable": {"thread_id": f"t-{uuid4()}"}}

    async def run() -> None:
        async with AsyncMemStateCheckpointer.from_conn_string(dsn) as saver:
            graph = builder.compile(checkpointer=saver)
            out = await graph.ainvoke({"city": "Lisbon", "messages": []}, config)
            assert "__interrupt__" in out
            assert (await graph.aget_state(config)).next == ("approve",)

        async with AsyncMemStateCheckpointer.from_conn_string(dsn) as saver:
            graph = builder.compile(checkpointer=saver)
            out = await graph.ainvoke(Command(resume="yes"), config)
            assert out["result"] == "sun"
            history = [s async for s in graph.aget_state_history(config)]
            before_tool = next(s for s in history if s.next == ("tool",))
            replay = await graph.ainvoke(None, before_tool.config)
            assert replay["result"] == "sun"
            assert tools.calls == ["Lisbon", "Lisbon"]
            at_approval = next(s for s in history if s.next == ("approve",))
            forked = await graph.aupdate_state(
                at_approval.config, {"approved": False}, as_node="approve"
            )
            fork = await graph.ainvoke(None, forked)
            assert fork["result"] == "skipped"
            assert len([s async for s in graph.aget_state_history(config)]) > len(history)

    asyncio.run(run())


def test_sync_graph_on_the_async_saver_from_a_worker_thread(dsn: str) -> None:
    """graph.invoke (sync) with an async saver: LangGraph calls its sync methods from a
    thread, which run on the saver's loop."""
    tools = Tools()
    graph_builder = build(tools)
    config = {"configurable": {"thread_id": f"t-{uuid4()}"}}

    async def run() -> None:
        async with AsyncMemStateCheckpointer.from_conn_string(dsn) as saver:
            graph = graph_builder.compile(checkpointer=saver)
            await asyncio.to_thread(graph.invoke, {"city": "Berlin", "messages": []}, config)
            out = await asyncio.to_thread(graph.invoke, Command(resume="yes"), config)
            assert out["result"] == "rain"

    asyncio.run(run())


# --- a checkpointer made from a memory store (MemState's `MemStateCheckpointer(memory=mem)`)


def test_a_checkpointer_from_a_memory_store_runs_a_graph(dsn: str) -> None:
    tools = Tools()
    builder = build(tools)
    with MemoryStore(dsn, max_size=2) as mem:
        for saver in (MemStateCheckpointer(memory=mem), MemStateCheckpointer(mem)):
            assert saver.conn is mem.pool and saver.memory is mem
            saver.setup()  # the store's migrations: already at head
            config = {"configurable": {"thread_id": f"t-{uuid4()}"}}
            graph = builder.compile(checkpointer=saver)
            assert "__interrupt__" in graph.invoke({"city": "Berlin", "messages": []}, config)
            assert graph.invoke(Command(resume="yes"), config)["result"] == "rain"
            assert len(list(graph.get_state_history(config))) >= 4
    assert tools.calls == ["Berlin", "Berlin"]
    with pytest.raises(TypeError, match="MemoryStore"):
        MemStateCheckpointer("postgresql://nowhere")
    with MemoryStore(dsn, max_size=1) as other, pytest.raises(TypeError, match="not two"):
        MemStateCheckpointer(mem, memory=other)


def test_an_async_checkpointer_from_an_async_memory_store_runs_a_graph(dsn: str) -> None:
    tools = Tools()
    builder = build(tools)
    mem = AsyncMemoryStore(dsn, max_size=2)  # its pool opens on first use

    async def run() -> None:
        for saver in (AsyncMemStateCheckpointer(memory=mem), AsyncMemStateCheckpointer(mem)):
            await saver.setup()
            config = {"configurable": {"thread_id": f"t-{uuid4()}"}}
            graph = builder.compile(checkpointer=saver)
            assert "__interrupt__" in await graph.ainvoke(
                {"city": "Lisbon", "messages": []}, config
            )
            assert (await graph.ainvoke(Command(resume="yes"), config))["result"] == "sun"
            # LangGraph's sync API from a worker thread, on the saver's loop
            state = await asyncio.to_thread(graph.get_state, config)
            assert state.values["result"] == "sun"
        await mem.close()

    asyncio.run(run())
    assert tools.calls == ["Lisbon", "Lisbon"]
    with pytest.raises(TypeError, match="AsyncMemoryStore"):
        AsyncMemStateCheckpointer(MemoryStore.__new__(MemoryStore))
