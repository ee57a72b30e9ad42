"""AsyncMemoryStore behaves exactly like MemoryStore: one behavioural suite, written once,
run against both. The async store is driven through `SyncView`, which runs its
coroutines on an event loop in another thread and blocks for the result, so every test
below reads as plain sync code whichever store it gets."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg_pool import AsyncConnectionPool

from memstate_pg import (
    AsyncMemoryStore,
    ConflictError,
    Fact,
    MemoryStore,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from tests.support.helpers import live_state, register_test_types

_ASYNC_TYPES = (AsyncMemoryStore, psycopg.AsyncConnection, psycopg.AsyncCursor)


class SyncView:
    """Blocking access to an async object: coroutine methods run on `loop` (in another
    thread) and are waited for; async context managers become sync ones; results that are
    async objects themselves (a transaction, a connection, a cursor) are wrapped too."""

    def __init__(self, target: Any, loop: asyncio.AbstractEventLoop) -> None:
        self._target = target
        self._loop = loop

    def _wait(self, awaitable: Any) -> Any:
        async def run() -> Any:
            return await awaitable

        return self._wrap(asyncio.run_coroutine_threadsafe(run(), self._loop).result(60))

    def _wrap(self, value: Any) -> Any:
        if isinstance(value, _ASYNC_TYPES) or type(value).__name__ == "AsyncTransaction":
            return SyncView(value, self._loop)
        return value

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._target, name)
        if not callable(attr):
            return self._wrap(attr)

        def call(*args: Any, **kwargs: Any) -> Any:
            result = attr(*args, **kwargs)
            if inspect.isawaitable(result):
                return self._wait(result)
            if hasattr(result, "__aenter__"):
                return self._context(result)
            return result

        return call

    @contextlib.contextmanager
    def _context(self, manager: Any) -> Iterator[Any]:
        entered = self._wait(manager.__aenter__())
        try:
            yield entered
        except BaseException as exc:
            if not self._wait(manager.__aexit__(type(exc), exc, exc.__traceback__)):
                raise
        else:
            self._wait(manager.__aexit__(None, None, None))


@pytest.fixture(params=["sync", "async"])
def store(request: pytest.FixtureRequest, dsn: str) -> Iterator[Any]:
    """MemoryStore, or AsyncMemoryStore seen through SyncView, with the test types."""
    if request.param == "sync":
        mem: Any = MemoryStore(dsn, max_size=4)
    else:
        lp = request.getfixturevalue("loop")
        mem = SyncView(
            asyncio.run_coroutine_threadsafe(AsyncMemoryStore.open(dsn, max_size=4), lp).result(),
            lp,
        )
    register_test_types(mem)
    try:
        yield mem
    finally:
        mem.close()


def note(text: str, **extra: Any) -> Fact:
    return Fact(type="note", payload={"text": text, **extra})


# --- the suite ---------------------------------------------------------------------------


def test_commit_and_get(store: Any) -> None:
    fid = store.commit(
        Fact(type="profile", payload={"field": "city", "value": "Berlin"}), namespace="u1"
    )
    fact = store.get(fid)
    assert (fact.id, fact.type, fact.namespace, fact.version) == (fid, "profile", "u1", 1)
    assert fact.payload == {"field": "city", "value": "Berlin"} and fact.content == "Berlin"
    assert store.get("00000000-0000-0000-0000-000000000000") is None


def test_singleton_commit_updates_the_same_fact(store: Any) -> None:
    first = store.commit(
        Fact(type="profile", payload={"field": "city", "value": "Berlin"}), namespace="u1"
    )
    second = store.commit(
        Fact(type="profile", payload={"field": "city", "value": "Lisbon"}), namespace="u1"
    )
    other_ns = store.commit(
        Fact(type="profile", payload={"field": "city", "value": "Oslo"}), namespace="u2"
    )
    assert first == second != other_ns
    assert store.get(first).version == 2
    assert [f.payload["value"] for f in store.query("profile", namespace="u1")] == ["Lisbon"]


def test_update_with_expected_version(store: Any) -> None:
    fid = store.commit(note("v1"), namespace="u1")
    assert store.update(fid, {"payload": {"text": "v2"}}, expected_version=1) == 2
    with pytest.raises(ConflictError):
        store.update(fid, {"payload": {"text": "stale"}}, expected_version=1)
    assert store.get(fid).payload == {"text": "v2", "tags": []}
    with pytest.raises(ValidationFailed):
        store.update(fid, {"namespace": "elsewhere"})


def test_immutable_facts_refuse_updates(store: Any) -> None:
    fid = store.commit(Fact(type="event", payload={"text": "signed up"}), namespace="u1")
    with pytest.raises(ConflictError):
        store.update(fid, {"payload": {"text": "rewritten"}})
    assert store.get(fid).payload["text"] == "signed up"


def test_delete(store: Any) -> None:
    fid = store.commit(note("temp"), namespace="u1")
    seq = store.delete(fid)
    assert store.get(fid) is None
    assert [(v.op, v.seq) for v in store.history(fid)][-1] == ("delete", seq)
    with pytest.raises(NotFound):
        store.delete(fid)


def test_bad_input_writes_nothing(store: Any) -> None:
    with pytest.raises(ValidationFailed):
        store.commit(Fact(type="profile", payload={"field": "city"}), namespace="u1")  # no value
    with pytest.raises(ValidationFailed):
        # an unregistered type is schemaless, but its payload must still be a JSON object
        store.commit(Fact.model_construct(type="nope", payload=[1], namespace=None), namespace="u1")
    with pytest.raises(ValidationFailed):
        store.commit(note("nul \x00 byte"), namespace="u1")
    assert store.query(namespace="u1") == [] and store.commits(namespace="u1") == []


def test_transaction_with_callers_sql(store: Any, dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int PRIMARY KEY, status text)")
        conn.execute("INSERT INTO orders VALUES (1, 'open')")
    with store.transaction(namespace="u1", reason="checkout") as tx:
        a = tx.commit(note("paid"))
        b = tx.commit(Fact(type="profile", payload={"field": "plan", "value": "pro"}))
        tx.connection.execute("UPDATE orders SET status = 'paid' WHERE id = 1")
    assert store.get(a).commit_seq == store.get(b).commit_seq == tx.seq
    with pytest.raises(RuntimeError), store.transaction(namespace="u1") as tx:
        tx.commit(note("lost"))
        tx.connection.execute("UPDATE orders SET status = 'lost' WHERE id = 1")
        raise RuntimeError("abort")
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT status FROM orders").fetchone()[0] == "paid"
    assert sorted(f.payload.get("text", "") for f in store.query(namespace="u1")) == ["", "paid"]


def test_search_with_filters(store: Any) -> None:
    store.commit(
        Fact(type="preference", payload={"topic": "drink", "value": "green tea"}), namespace="u1"
    )
    store.commit(
        Fact(
            type="preference",
            payload={"topic": "drink", "value": "black coffee", "role": "dislike"},
        ),
        namespace="u1",
    )
    store.commit(
        Fact(type="preference", payload={"topic": "food", "value": "green curry"}), namespace="u1"
    )
    store.commit(note("green tea is mentioned in a note"), namespace="u1")
    store.commit(
        Fact(type="preference", payload={"topic": "drink", "value": "green tea"}), namespace="u2"
    )
    hits = store.search("green tea", k=2, namespace="u1", type="preference")
    assert [h.fact.payload["value"] for h in hits][0] == "green tea"
    assert len(hits) == 2 and hits[0].score >= hits[1].score
    assert {h.fact.namespace for h in hits} == {"u1"}
    dislikes = store.search("coffee", namespace="u1", filters={"role": "dislike"})
    assert [h.fact.payload["value"] for h in dislikes] == ["black coffee"]
    assert {
        f.payload["value"] for f in store.query("preference", {"topic": "drink"}, namespace="u1")
    } == {"green tea", "black coffee"}
    with pytest.raises(ValidationFailed):
        store.search("x", namespace="u1", filters={"": 1})


def test_history_and_as_of(store: Any) -> None:
    fid = store.commit(note("one"), namespace="u1")
    s1 = store.get(fid).commit_seq
    store.update(fid, {"payload": {"text": "two"}})
    other = store.commit(note("other"), namespace="u1")
    assert [(v.version, v.op, v.payload["text"]) for v in store.history(fid)] == [
        (1, "put", "one"),
        (2, "update", "two"),
    ]
    assert [v.fact_id for v in store.history(namespace="u1")] == [fid, fid, other]
    assert [f.payload["text"] for f in store.as_of(s1, namespace="u1")] == ["one"]
    assert store.as_of(0, namespace="u1") == []


def test_rollback_twice_goes_back_two_steps(store: Any) -> None:
    fid = store.commit(note("a"), namespace="u1")
    store.update(fid, {"payload": {"text": "b"}})
    s2 = store.get(fid).commit_seq
    store.update(fid, {"payload": {"text": "c"}})
    store.commit(note("d"), namespace="u1")
    store.rollback(namespace="u1")
    store.rollback(namespace="u1")
    assert live_state(store, "u1") == {
        f.id: (f.payload, f.session_id) for f in store.as_of(s2, namespace="u1")
    }
    assert store.get(fid).payload["text"] == "b"
    assert store.history(fid)[-1].kind == "rollback"
    with pytest.raises(NotFound):
        store.rollback(namespace="empty-namespace")


def test_revert_of_a_rollback_is_redo(store: Any) -> None:
    fid = store.commit(note("a"), namespace="u1")
    bad = store.update(fid, {"payload": {"text": "bad"}})
    assert bad == 2
    undo = store.rollback(namespace="u1")
    assert store.get(fid).payload["text"] == "a"
    store.revert(undo)
    assert store.get(fid).payload["text"] == "bad"
    with pytest.raises(ConflictError):
        store.revert(undo)  # already undone


def test_promote_and_discard_sessions(store: Any) -> None:
    keep = store.commit(note("keep"), namespace="u1", session_id="s1")
    drop = store.commit(note("drop"), namespace="u1", session_id="s2")
    assert store.promote_session("s1", namespace="u1") is not None
    assert store.get(keep).session_id is None
    assert store.discard_session("s2", namespace="u1") is not None
    assert store.get(drop) is None
    assert store.discard_session("s2", namespace="u1") is None  # nothing left to discard


def test_idempotency_key_replays(store: Any) -> None:
    first = store.commit(note("once"), namespace="u1", idempotency_key="req-1")
    again = store.commit(note("once"), namespace="u1", idempotency_key="req-1")
    assert first == again
    assert len(store.query(namespace="u1")) == 1 and len(store.commits(namespace="u1")) == 1


def test_commit_many_is_one_commit(store: Any) -> None:
    ids = store.commit_many([note("x"), note("y"), note("z")], namespace="u1")
    assert len({store.get(i).commit_seq for i in ids}) == 1
    store.rollback(namespace="u1")
    assert store.query(namespace="u1") == []


def test_commit_joins_the_callers_connection(
    store: Any, dsn: str, request: pytest.FixtureRequest
) -> None:
    if isinstance(store, MemoryStore):
        with psycopg.connect(dsn, autocommit=True) as conn:
            with pytest.raises(RuntimeError), conn.transaction():
                store.commit(note("in tx"), namespace="u1", conn=conn)
                raise RuntimeError
            store.commit(note("kept"), namespace="u1", conn=conn)
    else:
        loop = request.getfixturevalue("loop")
        conn = SyncView(
            asyncio.run_coroutine_threadsafe(
                psycopg.AsyncConnection.connect(dsn, autocommit=True), loop
            ).result(),
            loop,
        )
        with pytest.raises(RuntimeError), conn.transaction():
            store.commit(note("in tx"), namespace="u1", conn=conn._target)
            raise RuntimeError
        store.commit(note("kept"), namespace="u1", conn=conn._target)
        conn.close()
    assert [f.payload["text"] for f in store.query(namespace="u1")] == ["kept"]


def test_namespace_bound_store_refuses_other_namespaces(
    dsn: str, loop: asyncio.AbstractEventLoop
) -> None:
    async def run() -> None:
        async with AsyncConnectionPool(dsn, kwargs={"autocommit": True}, open=False) as pool:
            bound = AsyncMemoryStore(pool, namespace="tenant-a")
            await bound.register_schema("note", None, text_field="text")
            await bound.commit(note("mine"))
            with pytest.raises(PermissionDenied):
                await bound.commit(note("theirs"), namespace="tenant-b")

    asyncio.run_coroutine_threadsafe(run(), loop).result(60)
    with MemoryStore(dsn, namespace="tenant-a", max_size=1) as bound:
        assert [f.payload["text"] for f in bound.query()] == ["mine"]
        with pytest.raises(PermissionDenied):
            bound.query(namespace="tenant-b")


def test_concurrent_singleton_writers_converge_on_one_fact(store: Any) -> None:
    """Eight writers at once (threads; for the async store, eight coroutines on its pool)."""
    from concurrent.futures import ThreadPoolExecutor

    def write(i: int) -> Any:
        return store.commit(
            Fact(type="profile", payload={"field": "city", "value": f"city-{i}"}), namespace="u1"
        )

    with ThreadPoolExecutor(8) as pool:
        ids = set(pool.map(write, range(8)))
    assert len(ids) == 1
    (fid,) = ids
    assert store.get(fid).version == 8
    assert len(store.query("profile", namespace="u1")) == 1
    assert [v.version for v in store.history(fid)] == list(range(1, 9))
