"""MemStateCheckpointer / AsyncMemStateCheckpointer: LangGraph's conformance suite (all 8
capabilities, sync and async savers, over a connection and a pool), plus what it does
not cover: the serializer is used for everything, one transaction with memory facts,
blob sharing, delete_for_runs keeping the parent chain, prune refusing DeltaChannel
threads, setup() through alembic."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import psycopg
import pytest
from langgraph.checkpoint.base import empty_checkpoint
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.checkpoint.conformance.capabilities import ALL_CAPABILITIES
from langgraph.checkpoint.serde.jsonplus import JsonPlusSerializer
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from memstate_pg import AsyncMemoryStore, Fact, MemoryStore, migrations
from memstate_pg.langgraph import AsyncMemStateCheckpointer, MemStateCheckpointer

# --- the conformance suite -------------------------------------------------------------


def _assert_full(report: Any) -> None:
    failures = {name: r.failures for name, r in report.results.items() if r.failures}
    assert not failures, failures
    assert {name for name, r in report.results.items() if r.detected and r.passed} == {
        c.value for c in ALL_CAPABILITIES
    }
    assert report.conformance_level() == "FULL"


def test_conformance_sync_saver_over_a_connection(dsn: str) -> None:
    @checkpointer_test(name="MemStateCheckpointer")
    async def factory() -> AsyncIterator[MemStateCheckpointer]:
        with MemStateCheckpointer.from_conn_string(dsn) as saver:
            yield saver

    report = asyncio.run(validate(factory))
    report.print_report()
    _assert_full(report)


def test_conformance_async_saver_over_a_pool(dsn: str) -> None:
    async def run() -> Any:
        async with AsyncConnectionPool(
            dsn, min_size=1, max_size=4, kwargs={"autocommit": True}, open=False
        ) as pool:

            @checkpointer_test(name="AsyncMemStateCheckpointer")
            async def factory() -> AsyncIterator[AsyncMemStateCheckpointer]:
                yield AsyncMemStateCheckpointer(pool)

            return await validate(factory)

    report = asyncio.run(run())
    report.print_report()
    _assert_full(report)


# --- helpers ---------------------------------------------------------------------------


def _config(thread: str, checkpoint_id: str | None = None) -> dict[str, Any]:
    conf: dict[str, Any] = {"thread_id": thread, "checkpoint_ns": ""}
    if checkpoint_id:
        conf["checkpoint_id"] = checkpoint_id
    return {"configurable": conf}


def _put(
    saver: MemStateCheckpointer,
    thread: str,
    values: dict[str, Any],
    versions: dict[str, Any],
    new: dict[str, Any],
    parent: dict[str, Any] | None = None,
    **metadata: Any,
) -> dict[str, Any]:
    cp = empty_checkpoint()
    cp["channel_values"] = values
    cp["channel_versions"] = versions
    config = parent or _config(thread)
    return saver.put(config, cp, {"source": "loop", "step": 0, **metadata}, new)


class XorSerializer(JsonPlusSerializer):
    """A serializer that scrambles its bytes: if anything bypassed serde, the raw rows (or
    a failed round trip) would show it."""

    def dumps_typed(self, obj: Any) -> tuple[str, bytes]:
        type_, data = super().dumps_typed(obj)
        return "xor-" + type_, bytes(b ^ 0x5A for b in data)

    def loads_typed(self, data: tuple[str, bytes]) -> Any:
        type_, raw = data
        assert type_.startswith("xor-"), type_
        return super().loads_typed((type_[4:], bytes(b ^ 0x5A for b in raw)))


# --- beyond the suite ------------------------------------------------------------------


def test_everything_goes_through_the_serializer(dsn: str) -> None:
    secret = "attack at dawn"
    with MemStateCheckpointer.from_conn_string(dsn, serde=XorSerializer()) as saver:
        stored = _put(
            saver, "t", {"msg": secret, "n": 7}, {"msg": "1", "n": "1"}, {"msg": "1", "n": "1"}
        )
        saver.put_writes(stored, [("msg", secret + "!")], "task-1")
        tup = saver.get_tuple(stored)
        assert tup is not None
        assert tup.checkpoint["channel_values"] == {"msg": secret, "n": 7}
        assert tup.pending_writes == [("task-1", "msg", secret + "!")]
    with psycopg.connect(dsn) as conn:
        raw = conn.execute(
            "SELECT string_agg(encode(blob, 'escape'), '') FROM (SELECT blob FROM memstate.lg_blobs "
            "UNION ALL SELECT blob FROM memstate.lg_writes UNION ALL SELECT checkpoint FROM memstate.lg_checkpoints) b"
        ).fetchone()[0]
        types = {
            r[0]
            for r in conn.execute(
                "SELECT type FROM memstate.lg_blobs UNION SELECT type FROM memstate.lg_writes "
                "UNION SELECT checkpoint_type FROM memstate.lg_checkpoints"
            )
        }
    assert "attack" not in raw
    assert types and all(t.startswith("xor-") for t in types)


def test_unchanged_channels_share_blobs_and_old_checkpoints_keep_their_values(dsn: str) -> None:
    with MemStateCheckpointer.from_conn_string(dsn) as saver:
        v1 = saver.get_next_version(None, None)
        first = _put(
            saver,
            "t",
            {"big": ["x"] * 100, "small": "a"},
            {"big": v1, "small": v1},
            {"big": v1, "small": v1},
        )
        v2 = saver.get_next_version(v1, None)
        assert v2 > v1
        second = _put(
            saver,
            "t",
            {"big": ["x"] * 100, "small": "b"},
            {"big": v1, "small": v2},
            {"small": v2},
            parent=first,
        )
        with psycopg.connect(dsn) as conn:
            blobs = conn.execute(
                "SELECT channel, count(*) FROM memstate.lg_blobs GROUP BY channel"
            ).fetchall()
        assert dict(blobs) == {"big": 1, "small": 2}
        assert saver.get_tuple(first).checkpoint["channel_values"]["small"] == "a"
        latest = saver.get_tuple(_config("t"))
        assert latest.config == second
        assert latest.checkpoint["channel_values"] == {"big": ["x"] * 100, "small": "b"}
        assert (
            latest.parent_config["configurable"]["checkpoint_id"]
            == first["configurable"]["checkpoint_id"]
        )


def test_checkpoint_and_memory_fact_commit_or_roll_back_together(dsn: str) -> None:
    mem = MemoryStore(dsn, max_size=2)
    mem.register_schema("note", None, text_field="text")
    with psycopg.connect(dsn, autocommit=True) as conn:
        saver = MemStateCheckpointer(conn)
        with pytest.raises(RuntimeError), conn.transaction():
            mem.commit(Fact(type="note", payload={"text": "lost"}), namespace="agent", conn=conn)
            _put(saver, "lost-thread", {}, {}, {})
            raise RuntimeError("the step failed")
        assert saver.get_tuple(_config("lost-thread")) is None
        assert mem.query(namespace="agent") == []

        with conn.transaction():
            mem.commit(Fact(type="note", payload={"text": "kept"}), namespace="agent", conn=conn)
            _put(saver, "kept-thread", {}, {}, {})
        assert saver.get_tuple(_config("kept-thread")) is not None
        assert [f.payload["text"] for f in mem.query(namespace="agent")] == ["kept"]

    # the same inside a memstate transaction, with the saver over its connection
    with pytest.raises(RuntimeError), mem.transaction(namespace="agent") as tx:
        tx.commit(Fact(type="note", payload={"text": "also lost"}))
        _put(MemStateCheckpointer(tx.connection), "tx-thread", {}, {}, {})
        raise RuntimeError("the step failed")
    with MemStateCheckpointer.from_conn_string(dsn) as saver:
        assert saver.get_tuple(_config("tx-thread")) is None
    assert [f.payload["text"] for f in mem.query(namespace="agent")] == ["kept"]
    mem.close()


def test_async_checkpoint_and_memory_fact_share_a_transaction(dsn: str) -> None:
    async def run() -> None:
        mem = await AsyncMemoryStore.open(dsn, max_size=2)
        await mem.register_schema("note", None, text_field="text")
        async with await psycopg.AsyncConnection.connect(dsn, autocommit=True) as conn:
            saver = AsyncMemStateCheckpointer(conn)
            cp = empty_checkpoint()
            with pytest.raises(RuntimeError):
                async with conn.transaction():
                    await mem.commit(
                        Fact(type="note", payload={"text": "lost"}), namespace="agent", conn=conn
                    )
                    await saver.aput(_config("t"), cp, {"source": "loop", "step": 0}, {})
                    raise RuntimeError("the step failed")
            assert await saver.aget_tuple(_config("t")) is None
            assert await mem.query(namespace="agent") == []
        await mem.close()

    asyncio.run(run())


def test_delete_for_runs_keeps_the_parent_chain(dsn: str) -> None:
    with MemStateCheckpointer.from_conn_string(dsn) as saver:
        a = _put(saver, "t", {}, {}, {}, run_id="run-a")
        b = _put(saver, "t", {}, {}, {}, parent=a, run_id="run-b")
        c = _put(saver, "t", {}, {}, {}, parent=b, run_id="run-b")
        d = _put(saver, "t", {}, {}, {}, parent=c, run_id="run-c")
        saver.put_writes(c, [("ch", 1)], "task")
        saver.delete_for_runs(["run-b"])
        assert saver.get_tuple(b) is None and saver.get_tuple(c) is None
        assert (
            saver.get_tuple(d).parent_config["configurable"]["checkpoint_id"]
            == a["configurable"]["checkpoint_id"]
        )
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM memstate.lg_writes").fetchone()[0] == 0
        with pytest.raises(TypeError):
            saver.delete_for_runs("run-a")


def test_prune_keeps_latest_per_namespace_and_refuses_delta_threads(dsn: str) -> None:
    with MemStateCheckpointer.from_conn_string(dsn) as saver:
        v1 = saver.get_next_version(None, None)
        v2 = saver.get_next_version(v1, None)
        first = _put(saver, "t", {"c": "old"}, {"c": v1}, {"c": v1})
        last = _put(saver, "t", {"c": "new"}, {"c": v2}, {"c": v2}, parent=first)
        saver.prune(["t"])
        listed = list(saver.list(_config("t")))
        assert [t.config for t in listed] == [last]
        assert listed[0].parent_config is None
        assert listed[0].checkpoint["channel_values"] == {"c": "new"}
        with psycopg.connect(dsn) as conn:  # the old version's blob went with its checkpoint
            assert conn.execute("SELECT count(*) FROM memstate.lg_blobs").fetchone()[0] == 1

        _put(saver, "delta", {}, {}, {}, counters_since_delta_snapshot={"messages": [1, 1]})
        with pytest.raises(NotImplementedError, match="DeltaChannel"):
            saver.prune(["delta"])
        with pytest.raises(ValueError):
            saver.prune(["t"], strategy="everything")
        saver.prune(["delta"], strategy="delete")
        assert saver.get_tuple(_config("delta")) is None


def test_list_across_threads_and_metadata_filters(dsn: str) -> None:
    with MemStateCheckpointer.from_conn_string(dsn) as saver:
        _put(saver, "t1", {}, {}, {}, user="ann", score=1)
        _put(saver, "t2", {}, {}, {}, user="bob", score=2, nested={"deep": [1, 2]})
        assert {t.config["configurable"]["thread_id"] for t in saver.list(None)} == {"t1", "t2"}
        assert [t.metadata["user"] for t in saver.list(None, filter={"user": "bob"})] == ["bob"]
        assert [t.metadata["user"] for t in saver.list(None, filter={"nested": {"deep": [2]}})] == [
            "bob"
        ]
        assert list(saver.list(None, filter={"score": 3})) == []


def test_sync_saver_over_a_pool_and_setup_is_idempotent(dsn: str) -> None:
    with ConnectionPool(dsn, min_size=1, max_size=2, kwargs={"autocommit": True}) as pool:
        saver = MemStateCheckpointer(pool)
        saver.setup()  # alembic: already at head, so nothing changes
        assert migrations.current(dsn) == migrations.head()
        stored = _put(saver, "t", {"k": "v"}, {"k": "1"}, {"k": "1"})
        assert saver.get_tuple(stored).checkpoint["channel_values"] == {"k": "v"}


def test_setup_migrates_an_empty_database(empty_dsn: str) -> None:
    with MemStateCheckpointer.from_conn_string(empty_dsn) as saver:
        saver.setup()
        assert migrations.current(empty_dsn) == migrations.head()
        assert saver.get_tuple(_config("nothing")) is None


def test_async_saver_refuses_sync_calls_on_its_own_loop(dsn: str) -> None:
    async def run() -> None:
        async with AsyncMemStateCheckpointer.from_conn_string(dsn) as saver:
            with pytest.raises(asyncio.InvalidStateError):
                saver.get_tuple(_config("t"))
            # from another thread the sync API works, on the saver's loop
            assert await asyncio.to_thread(saver.get_tuple, _config("t")) is None

    asyncio.run(run())


def test_special_writes_replace_and_ordinary_writes_are_kept(dsn: str) -> None:
    """WRITES_IDX_MAP: a task's ERROR/INTERRUPT/... write is replaced when reported again;
    ordinary writes are written once (a retried put_writes keeps the first)."""
    from langgraph.checkpoint.serde.types import ERROR

    with MemStateCheckpointer.from_conn_string(dsn) as saver:
        stored = _put(saver, "t", {}, {}, {})
        saver.put_writes(stored, [(ERROR, "first failure")], "task")
        saver.put_writes(stored, [(ERROR, "second failure")], "task")
        saver.put_writes(stored, [("out", "v1"), ("log", "a")], "task")
        saver.put_writes(stored, [("out", "v2"), ("log", "b")], "task")
        saver.put_writes(stored, [("out", "other task")], "task-2", task_path="~__pregel_pull, b")
        writes = saver.get_tuple(stored).pending_writes
        assert sorted(writes) == sorted(
            [
                ("task", ERROR, "second failure"),
                ("task", "out", "v1"),
                ("task", "log", "a"),
                ("task-2", "out", "other task"),
            ]
        )
        # writes come back in writes_sort_key order: (task_path, task_id, idx)
        assert writes[-1] == ("task-2", "out", "other task")
