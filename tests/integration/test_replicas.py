"""Read replicas with read-your-writes, against a real streaming hot standby
(tests/support/standby.py: a primary and a standby made with the wheel's pg_basebackup).

Which server answered a read is read from `status().replicas` (the reads each replica
served, the reads it passed to the primary by reason); where that alone could not tell a
stale replica answer from a fresh one, replay is paused on the standby, so a read that
really went there sees the standby's older state."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import psycopg
import pytest

from memstate_pg import AsyncMemoryStore, Fact, MemoryStore, ValidationFailed
from memstate_pg._core.replicas import lsn_int, parse_token, replica_lag
from tests.support.helpers import register_test_types
from tests.support.loop import on
from tests.support.standby import ReplicaDsns


def _replayed(standby_dsn: str) -> int:
    with psycopg.connect(standby_dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_last_wal_replay_lsn()::text").fetchone()
    assert row is not None
    return lsn_int(row[0])


@contextmanager
def replay_paused(standby_dsn: str, resume_after: float | None = None) -> Iterator[None]:
    """Replay paused on the standby (WAL still streams in); resumed at the end, or by a
    timer `resume_after` seconds in."""
    with psycopg.connect(standby_dsn, autocommit=True) as conn:
        conn.execute("SELECT pg_wal_replay_pause()")
        while conn.execute("SELECT pg_get_wal_replay_pause_state()").fetchone()[0] != "paused":  # type: ignore[index]
            time.sleep(0.01)

    def resume() -> None:
        with psycopg.connect(standby_dsn, autocommit=True) as c:
            c.execute("SELECT pg_wal_replay_resume()")

    timer = threading.Timer(resume_after, resume) if resume_after is not None else None
    if timer is not None:
        timer.start()
    try:
        yield
    finally:
        if timer is not None:
            timer.join()
        resume()


@pytest.fixture
def pair(replica_dsns: ReplicaDsns) -> ReplicaDsns:
    with MemoryStore(replica_dsns.primary) as setup:
        register_test_types(setup)
    replica_dsns.pair.replay_caught_up()
    return replica_dsns


def _store(pair: ReplicaDsns, **kwargs: object) -> MemoryStore:
    return MemoryStore(pair.primary, replicas=[pair.standby], max_size=3, **kwargs)  # type: ignore[arg-type]


def test_a_commit_is_visible_to_the_same_stores_next_search_through_the_replica(pair):
    with _store(pair) as mem:
        assert mem.write_token is None
        for i in range(10):
            text = f"the user's tenth {i} favourite fruit is a quince"
            fid = mem.commit(Fact(type="note", payload={"text": text}), namespace="u")
            hits = mem.search(text, k=1, namespace="u")
            assert [h.fact.id for h in hits] == [fid]
            assert mem.get(fid) is not None
        st = mem.status()
        assert st == {}  # still the mirrors' dict
        (replica,) = st.replicas
        assert replica.reads == 21 and st.primary_reads == 0
        assert sum(replica.fallbacks.values()) == 0
        token = mem.write_token
        assert token is not None and parse_token(token) <= _replayed(pair.standby)


def test_a_read_waits_for_the_replica_to_replay_the_stores_write(pair):
    """The deterministic form of read-your-writes: replay stops, the store writes, replay
    resumes 0.3 s later; the next read waits for it and is served by the replica."""
    with _store(pair, replica_wait=10) as mem:
        mem.get("00000000-0000-0000-0000-000000000000")  # the replica's pool is warm
        with replay_paused(pair.standby, resume_after=0.3):
            fid = mem.commit(Fact(type="note", payload={"text": "written while paused"}))
            started = time.monotonic()
            fact = mem.get(fid)
            waited = time.monotonic() - started
        assert fact is not None and fact.payload["text"] == "written while paused"
        st = mem.status()
        assert st.replicas[0].reads == 3 and st.primary_reads == 0
        assert waited >= 0.2  # it did wait for the replay (never an upper bound here)


def test_a_replica_that_does_not_catch_up_in_time_hands_the_read_to_the_primary(pair):
    with _store(pair, replica_wait=0.2) as mem:
        with replay_paused(pair.standby):
            fid = mem.commit(Fact(type="note", payload={"text": "not replayed yet"}))
            assert mem.get(fid) is not None  # from the primary
            st = mem.status()
        assert st.replicas[0].fallbacks["behind"] >= 1 and st.primary_reads >= 1


def test_a_token_from_another_store_object_is_waited_for(pair):
    # a long max lag: the paused standby must not be passed over as lagging here
    with _store(pair) as writer, _store(pair, replica_wait=10, replica_max_lag=600) as reader:
        reader.get("00000000-0000-0000-0000-000000000000")
        with replay_paused(pair.standby, resume_after=0.3):
            fid = writer.commit(Fact(type="note", payload={"text": "from the writer"}))
            token = writer.write_token
            assert token is not None
            # without the token the reader has no reason to wait: the replica's older state
            assert reader.get(fid) is None
            cookie = f"session={token}".split("=", 1)[1]  # a token survives a cookie
            fact = reader.get(fid, after=cookie)
        assert fact is not None
        st = reader.status()
        assert st.replicas[0].reads == 4 and st.primary_reads == 0


def test_a_token_is_checked(pair):
    with _store(pair) as mem, MemoryStore(pair.primary) as plain:
        for bad in ("", "xyz", "0/0/0", "1" * 17, "g" * 16):
            with pytest.raises(ValidationFailed):
                mem.get("00000000-0000-0000-0000-000000000000", after=bad)
            with pytest.raises(ValidationFailed):
                plain.get("00000000-0000-0000-0000-000000000000", after=bad)
        fid = plain.commit(Fact(type="note", payload={"text": "no replicas"}))
        assert plain.write_token is None  # a store without replicas records nothing
        assert plain.get(fid, after="0000000000000001") is not None
        assert mem.get(fid, after="0/1") is not None  # a pg_lsn text is a token too


def test_fence_covers_writes_committed_on_your_own_connection(pair):
    with (
        _store(pair, replica_wait=10, replica_max_lag=600) as mem,
        psycopg.connect(pair.primary, autocommit=True) as own,
    ):
        mem.get("00000000-0000-0000-0000-000000000000")
        with replay_paused(pair.standby, resume_after=0.4):
            with own.transaction():
                fid = mem.commit(Fact(type="note", payload={"text": "mine"}), conn=own)
            assert mem.write_token is None  # committed by the caller: not noted
            assert mem.get(fid) is None  # so the standby's older state
            token = mem.fence()
            assert mem.get(fid) is not None  # waited for the replay
        assert mem.write_token == token and mem.status().primary_reads == 0


def test_reconcile_is_fenced_so_status_sees_its_report(pair):
    from memstate_pg.mirrors import InMemoryMirror

    with _store(pair, replica_wait=10, replica_max_lag=600) as mem:
        mem.add_mirror(InMemoryMirror(), "m")
        mem.commit(Fact(type="note", payload={"text": "reconciled"}))
        with replay_paused(pair.standby, resume_after=0.4):
            report = mem.reconcile("m", repair=False)
            saved = mem.status()["m"].last_reconcile
        assert saved is not None and saved["missing"] == report.missing == 1
        assert mem.status().primary_reads == 0


def test_killing_the_standby_does_not_fail_reads(pair):
    with _store(pair) as mem:
        fid = mem.commit(Fact(type="note", payload={"text": "survives the standby"}))
        assert mem.get(fid) is not None
        assert mem.status().replicas[0].reads == 2  # get + status
        pair.pair.standby.stop("immediate")
        for _ in range(3):
            assert mem.get(fid) is not None
            assert [h.fact.id for h in mem.search("survives the standby", k=1)] == [fid]
        fid2 = mem.commit(Fact(type="note", payload={"text": "written with the standby down"}))
        assert mem.get(fid2) is not None
        st = mem.status()
        (replica,) = st.replicas
        assert replica.fallbacks["down"] >= 8 and replica.down and replica.last_error
        assert st.primary_reads >= 8 and replica.reads == 2


def test_reads_take_turns_and_pass_a_dead_replica_to_the_next_one(pair, tmp_path):
    dead = f"host={tmp_path} port=5432 user=postgres dbname={pair.database}"  # no server there
    with MemoryStore(
        pair.primary, replicas=[dead, pair.standby, pair.standby], connect_timeout=2
    ) as mem:
        fid = mem.commit(Fact(type="note", payload={"text": "round robin"}))
        for _ in range(12):
            assert mem.get(fid) is not None
        st = mem.status()
        gone, one, two = st.replicas
        assert st.primary_reads == 0  # the dead one's reads went to a live replica
        assert gone.reads == 0 and gone.fallbacks["down"] >= 1 and gone.down
        assert one.reads >= 4 and two.reads >= 4 and one.reads + two.reads == 13
        assert one.name == two.name and "5432" in one.name


def test_a_lagging_replica_is_passed_over(pair):
    with _store(pair, replica_max_lag=0.2) as mem, MemoryStore(pair.primary) as other:
        mem.get("00000000-0000-0000-0000-000000000000")
        with replay_paused(pair.standby):
            # another process writes: this store needs nothing new, but the standby lags
            fid = other.commit(Fact(type="note", payload={"text": "the replica lags"}))
            time.sleep(0.6)
            assert mem.get(fid) is not None  # the primary answered
            st = mem.status()
        assert st.replicas[0].fallbacks["lagging"] >= 1
        assert st.replicas[0].lag is not None and st.replicas[0].lag > 0.2
        assert st.primary_reads >= 1


def test_a_transaction_block_records_its_commit(pair):
    with _store(pair, replica_wait=10) as mem:
        mem.get("00000000-0000-0000-0000-000000000000")
        with replay_paused(pair.standby, resume_after=0.3):
            with mem.transaction("u") as tx:
                fid = tx.commit(Fact(type="note", payload={"text": "in a block"}))
            assert mem.get(fid) is not None
        assert mem.status().primary_reads == 0


def test_replica_lag_measures_a_standby(pair):
    with (
        psycopg.connect(pair.primary, autocommit=True) as p,
        psycopg.connect(pair.standby, autocommit=True) as s,
    ):
        p.execute("CREATE TABLE lagged AS SELECT g FROM generate_series(1, 20000) g")
        lag = replica_lag(p, s)
        assert lag.bytes >= 0 and lag.seconds >= 0
        assert s.execute("SELECT count(*) FROM lagged").fetchone()[0] == 20000  # type: ignore[index]


def test_async_a_commit_is_visible_to_the_same_stores_next_search_through_the_replica(pair, loop):
    async def scenario() -> tuple[list[bool], object]:
        async with AsyncMemoryStore(
            pair.primary, replicas=[pair.standby], max_size=3, replica_wait=10
        ) as mem:
            seen = []
            for i in range(5):
                text = f"async fruit {i} is a medlar"
                fid = await mem.commit(Fact(type="note", payload={"text": text}), namespace="u")
                hits = await mem.search(text, k=1, namespace="u")
                seen.append([h.fact.id for h in hits] == [fid])
            other = await mem.commit(Fact(type="note", payload={"text": "async token"}))
            token = mem.write_token
            async with AsyncMemoryStore(pair.primary, replicas=[pair.standby]) as reader:
                seen.append(await reader.get(other, after=token) is not None)
                st2 = await reader.status()
            return seen, (await mem.status(), st2)

    seen, (st, st2) = on(loop, scenario())
    assert all(seen)
    assert st.replicas[0].reads == 6 and st.primary_reads == 0
    assert st2.replicas[0].reads == 2 and st2.primary_reads == 0


def test_async_a_read_waits_for_the_replica_to_replay_the_stores_write(pair, loop):
    async def scenario() -> tuple[object, object]:
        async with AsyncMemoryStore(
            pair.primary, replicas=[pair.standby], max_size=3, replica_wait=10
        ) as mem:
            await mem.get("00000000-0000-0000-0000-000000000000")
            with replay_paused(pair.standby, resume_after=0.3):
                fid = await mem.commit(Fact(type="note", payload={"text": "async, paused"}))
                fact = await mem.get(fid)
            return fact, await mem.status()

    fact, st = on(loop, scenario())
    assert fact is not None
    assert st.replicas[0].reads == 3 and st.primary_reads == 0
