"""SyncWorker against a real Postgres: claim, coalesce, ack, backoff, dead rows, requeue,
locks, LISTEN/NOTIFY, status, backfill and scope. Mirrors: InMemoryMirror (and wrappers),
so each test isolates the worker's behaviour; real Chroma/Qdrant are in test_sync_mirrors.py."""

from __future__ import annotations

import threading
import time
from collections.abc import Sequence

import psycopg
import pytest

from memstate_pg import Fact, MirrorError, NotFound, ValidationFailed
from memstate_pg.mirrors import FlakyMirror, InMemoryMirror, MirrorRecord
from memstate_pg.sync import SyncWorker
from tests.support.sync_procs import (
    RecordingMirror,
    SyncStore,
    drift,
    hold_fact,
    no_drift,
    ordering_violations,
    outbox_rows,
    read_write_log,
    scan_all,
    wait_for,
    writer_ops,
)


def note(text: str, **extra) -> Fact:
    return Fact(type="note", payload={"text": text, **extra})


class PoisonMirror(InMemoryMirror):
    """Rejects (the whole call containing) any record whose content holds POISON."""

    def __init__(self, **kw) -> None:
        super().__init__(**kw)
        self.calls = 0

    def upsert(self, records: Sequence[MirrorRecord]) -> None:
        self.calls += 1
        bad = [r.fact_id for r in records if "POISON" in r.content]
        if bad:
            raise MirrorError(f"store rejects POISON record {bad[0]}")
        super().upsert(records)


def test_commit_reaches_mirror_and_is_acked(store: SyncStore) -> None:
    m = InMemoryMirror()
    store.add_mirror(m, "mem", metadata_fields=["tags"])
    ids = [store.commit(note(f"n{i}", tags=["x", str(i)]), namespace="ns1") for i in range(5)]
    assert len(outbox_rows(store.dsn, "mem")) == 5
    with SyncWorker(store) as w:  # mirrors from store.mirrors()
        assert w.run_once() == 5
        assert w.run_once() == 0
    assert outbox_rows(store.dsn, "mem") == []
    points = m.get([str(i) for i in ids])
    assert {p.version for p in points.values()} == {1}
    p = points[str(ids[3])]
    assert p.metadata["tags"] == ["x", "3"]
    assert p.metadata["namespace"] == "ns1" and p.metadata["type"] == "note"
    assert p.metadata["content"] == "n3"
    st = store.status()["mem"]
    assert st.pending == 0 and st.dead == 0 and st.oldest_pending_age is None
    assert st.last_synced_seq == max(c["seq"] for c in store.commits(namespace="ns1"))
    assert st.last_synced_at is not None


def test_ten_updates_coalesce_into_one_write_of_the_last_version(store: SyncStore) -> None:
    m = InMemoryMirror()
    store.add_mirror(m, "mem")
    fid = store.commit(note("v1"))
    for i in range(10):
        store.update(fid, {"payload": {"text": f"v{i + 2}"}})
    assert len(outbox_rows(store.dsn, "mem")) == 11
    with SyncWorker(store, ["mem"]) as w:
        assert w.run_once() == 11
    assert m.batch_sizes == [1]  # one native call, one record
    point = m.get([str(fid)])[str(fid)]
    assert point.version == 11 and point.metadata["content"] == "v11"


def test_deletes_rollbacks_and_sessions_reach_the_mirror(store: SyncStore) -> None:
    m = InMemoryMirror()
    store.add_mirror(m, "mem")
    a = store.commit(note("a1"), namespace="n")
    b = store.commit(note("b1"), namespace="n")
    s1 = store.commit(note("working"), namespace="n", session_id="s1")
    s2 = store.commit(note("scratch"), namespace="n", session_id="s2")
    w = SyncWorker(store, {"mem": m})
    w.drain(5)
    assert m.count() == 4
    store.update(a, {"payload": {"text": "a2"}})
    store.delete(b)
    w.drain(5)
    assert str(b) not in m.get([str(b)]) and m.get([str(a)])[str(a)].metadata["content"] == "a2"
    store.rollback(1, namespace="n")  # undoes the delete of b: b is back, at a new version
    store.rollback(1, namespace="n")  # undoes the update of a: a is back to "a1"
    store.promote_session("s1", namespace="n")
    store.discard_session("s2", namespace="n")
    assert w.drain(5)
    assert no_drift(drift(store.dsn, m))
    got = m.get([str(a), str(b), str(s1), str(s2)])
    assert got[str(a)].metadata["content"] == "a1" and got[str(a)].version == 3
    assert got[str(b)].version == 3 and str(s2) not in got
    assert got[str(s1)].version == store.get(s1).version
    w.close()


def test_batches_respect_batch_size_and_native_limit(store: SyncStore) -> None:
    m = InMemoryMirror(max_batch_size=4)
    store.add_mirror(m, "mem")
    store.commit_many([note(f"n{i}") for i in range(25)])
    with SyncWorker(store, batch_size=10) as w:
        assert w.run_once() == 10
        assert w.drain(5)
    assert m.count() == 25 and max(m.batch_sizes) <= 4


def test_failures_back_off_exponentially_then_park_as_dead(store: SyncStore) -> None:
    m = FlakyMirror(InMemoryMirror(), fail_before=1.0, seed=1)
    store.add_mirror(m, "flaky")
    store.commit(note("x"))
    w = SyncWorker(store, batch_size=10, max_attempts=4, backoff_base=10.0, backoff_max=11.0)

    def row() -> dict:
        (r,) = outbox_rows(store.dsn, "flaky")
        with psycopg.connect(store.dsn) as c:
            r["delay"] = c.execute(
                "SELECT extract(epoch FROM %s - now())::float8", (r["available_at"],)
            ).fetchone()[0]
        return r

    def make_ready() -> None:
        with psycopg.connect(store.dsn, autocommit=True) as c:
            c.execute("UPDATE memstate.outbox SET available_at = now()")
        w._paused.clear()

    assert w.run_once() == 0
    r = row()
    assert (
        r["attempts"] == 1
        and r["dead_at"] is None
        and "injected: failed before write" in r["last_error"]
    )
    assert 4.5 <= r["delay"] <= 15.5  # min(11, 10 * 2**0) * jitter(0.5..1.5)
    assert w.run_once() == 0 and row()["attempts"] == 1  # in backoff: not claimed again
    make_ready()
    w.run_once()
    assert row()["attempts"] == 2
    make_ready()
    w.run_once()
    r = row()
    assert r["attempts"] == 3 and r["dead_at"] is None
    assert 5.0 <= r["delay"] <= 17.0  # capped: min(11, 10 * 2**2) * jitter, not 40 * jitter
    make_ready()
    w.run_once()
    r = row()
    assert r["attempts"] == 4 and r["dead_at"] is not None
    st = store.status()["flaky"]
    assert st.dead == 1 and st.pending == 0
    assert w.drain(1)  # nothing left but dead rows
    assert store.dead_letters("flaky")[0]["last_error"].startswith("MirrorError: injected")

    m.fail_before = 0.0
    assert store.requeue("flaky") == 1
    r = row()
    assert r["attempts"] == 0 and r["dead_at"] is None
    assert w.drain(5) and m.count() == 1 and store.status()["flaky"].dead == 0
    w.close()


def test_requeue_all_also_wakes_rows_in_backoff(store: SyncStore) -> None:
    m = FlakyMirror(InMemoryMirror(), fail_before=1.0)
    store.add_mirror(m, "flaky")
    store.commit(note("x"))
    with SyncWorker(store, backoff_base=100.0, backoff_max=100.0) as w:
        w.run_once()
        assert store.requeue("flaky") == 0  # not dead: dead_only leaves it
        assert store.requeue("flaky", dead_only=False) == 1
        m.fail_before = 0.0
        w._paused.clear()
        assert w.run_once() == 1
    with pytest.raises(NotFound):
        store.requeue("nope")


def test_one_rejected_record_does_not_block_the_rest(store: SyncStore) -> None:
    m = PoisonMirror()
    store.add_mirror(m, "picky")
    ids = [store.commit(note(f"fine {i}")) for i in range(40)]
    bad = store.commit(note("POISON pill"))
    ids += [store.commit(note(f"fine later {i}")) for i in range(23)]
    with SyncWorker(store, batch_size=100, max_attempts=2, backoff_base=0.0, backoff_max=0.0) as w:
        assert w.run_once() == 63
        assert m.calls <= 2 * 7 + 1  # bisection: about 2*log2(64) calls, not 64
        assert w.drain(5)
    assert m.count() == 63 and str(bad) not in m.get([str(bad)])
    (dead,) = outbox_rows(store.dsn, "picky")
    assert dead["fact_id"] == bad and dead["dead_at"] is not None and dead["attempts"] == 2
    assert dead["last_error"] == f"MirrorError: store rejects POISON record {bad}"
    assert store.status()["picky"].dead == 1


def test_a_down_mirror_costs_few_calls_and_pauses(store: SyncStore) -> None:
    inner = InMemoryMirror(max_batch_size=10)
    m = FlakyMirror(inner)
    store.add_mirror(m, "down")
    store.commit_many([note(f"n{i}") for i in range(100)])
    m.set_down(True)
    with SyncWorker(store, batch_size=100, backoff_base=30.0) as w:
        assert w.run_once() == 0
        assert m.faults["down"] <= 10  # gave up after ~log2(100)+3 failing calls
        rows = outbox_rows(store.dsn, "down")
        assert len(rows) == 100 and {r["attempts"] for r in rows} == {1}
        assert all("injected: mirror down" in r["last_error"] for r in rows)
        before = m.faults["down"]
        store.commit(note("new"))
        assert w.run_once() == 0 and m.faults["down"] == before  # paused: no new call


def test_a_crash_mid_batch_rolls_back_the_claim(store: SyncStore) -> None:
    class Crash(BaseException):
        pass

    class Crashing(InMemoryMirror):
        def upsert(self, records):
            raise Crash()

    store.add_mirror(Crashing(), "m")
    store.commit(note("x"))
    with SyncWorker(store) as w, pytest.raises(Crash):
        w.run_once()
    (r,) = outbox_rows(store.dsn, "m")
    assert r["attempts"] == 0  # untouched: the transaction rolled back, nothing is lost
    good = InMemoryMirror()
    with SyncWorker(store, {"m": good}) as w:
        assert w.run_once() == 1
    assert good.count() == 1


def test_a_fact_locked_by_another_worker_is_left_alone(store: SyncStore) -> None:
    m = InMemoryMirror()
    store.add_mirror(m, "mem")
    held, free = store.commit(note("held")), store.commit(note("free"))
    with psycopg.connect(store.dsn) as other:  # plays a worker busy with `held`
        hold_fact(other, "mem", held)
        with SyncWorker(store) as w:
            assert w.run_once() == 1
            (r,) = outbox_rows(store.dsn, "mem")
            assert r["fact_id"] == held and r["attempts"] == 0
            assert w.drain(0.3) is False  # cannot finish while the other holds it
            other.rollback()
            assert w.drain(5)
    assert m.count() == 2 and free and held


def test_listen_notify_wakes_the_worker_and_stop_is_prompt(store: SyncStore) -> None:
    m = InMemoryMirror()
    store.add_mirror(m, "mem")
    w = SyncWorker(store, poll_interval=30.0)  # polling alone would take 30 s
    t = threading.Thread(target=w.run_forever, daemon=True)
    t.start()
    time.sleep(0.3)
    t0 = time.monotonic()
    fid = store.commit(note("hello"))
    assert wait_for(lambda: m.count() == 1, timeout=3)
    assert time.monotonic() - t0 < 1.5
    t0 = time.monotonic()
    w.stop()
    t.join(5)
    assert not t.is_alive() and time.monotonic() - t0 < 1.5
    w.close()
    assert str(fid) in m.get([str(fid)])


def test_the_worker_survives_losing_its_connections(store: SyncStore, pg_admin_dsn: str) -> None:
    m = InMemoryMirror()
    store.add_mirror(m, "mem")
    w = SyncWorker(store, poll_interval=0.2, worker_id="victim")
    t = threading.Thread(target=w.run_forever, daemon=True)
    t.start()
    store.commit(note("before"))
    assert wait_for(lambda: m.count() == 1, timeout=5)
    with psycopg.connect(pg_admin_dsn, autocommit=True) as admin:
        killed = admin.execute(
            "SELECT application_name, pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND application_name LIKE 'memstate-sync victim%%'",
            (psycopg.conninfo.conninfo_to_dict(store.dsn)["dbname"],),
        ).fetchall()
    assert {r[0].rsplit(" ", 1)[1] for r in killed} == {"batch", "listen"}
    store.commit(note("after"))
    assert wait_for(lambda: m.count() == 2, timeout=10)
    w.stop()
    t.join(5)
    w.close()


def test_scope_and_metadata_fields(store: SyncStore) -> None:
    m = InMemoryMirror()
    store.add_mirror(
        m,
        "scoped",
        namespaces=["a"],
        types=["note", "preference"],
        metadata_fields=["tags", "topic", "nested.city"],
    )
    in_a = store.commit(note("in a", tags=["t"]), namespace="a")
    pref = store.commit(
        Fact(type="preference", payload={"topic": "tea", "value": "green"}), namespace="a"
    )
    store.commit(note("in b"), namespace="b")
    store.commit(Fact(type="event", payload={"text": "e"}), namespace="a")
    with SyncWorker(store) as w:
        assert w.drain(5)
    assert {fid for fid, _ in scan_all(m)} == {str(in_a), str(pref)}
    meta = m.get([str(pref)])[str(pref)].metadata
    assert meta["topic"] == "tea" and "value" not in meta and "tags" not in meta
    from memstate_pg.sync.apply import pick_metadata

    assert pick_metadata({"nested": {"city": "Oslo"}, "x": 1}, ["nested.city", "x", "nope.a"]) == {
        "nested.city": "Oslo",
        "x": 1,
    }
    assert pick_metadata({"a.b": 1, "a": {"b": 2}}, ["a.b"]) == {"a.b": 1}  # exact key wins


def test_backfill_is_batched_and_resumable(store: SyncStore) -> None:
    store.commit_many([note(f"a{i}") for i in range(30)], namespace="a")
    store.commit_many([note(f"b{i}") for i in range(12)], namespace="b")
    seen: list[tuple[int, int | None]] = []
    m = InMemoryMirror()
    store.add_mirror(m, "late", namespaces=["a"], progress=lambda d, t: seen.append((d, t)))
    rows = outbox_rows(store.dsn, "late")
    assert len(rows) == 30 and {r["op"] for r in rows} == {"backfill"}
    assert seen[0] == (0, 30) and seen[-1] == (30, 30)
    assert store.backfill_mirror("late") == 0  # everything pending already: nothing twice
    with psycopg.connect(store.dsn, autocommit=True) as c:  # as if a run died half way
        c.execute(
            "DELETE FROM memstate.outbox WHERE id IN (SELECT id FROM memstate.outbox ORDER BY fact_id LIMIT 17)"
        )
    assert store.backfill_mirror("late", page_size=4) == 17
    with SyncWorker(store) as w:
        assert w.drain(5)
    assert m.count() == 30 and no_drift(drift(store.dsn, m, namespaces=["a"]))


def test_registry_api(store: SyncStore) -> None:
    m = InMemoryMirror()
    store.add_mirror(m)  # name defaults to the kind
    assert store.mirror("memory") is m and store.mirrors() == {"memory": m}
    for bad in ("bad name!", "", "a" * 64, "x\n", "\ud800", 5):  # found by tests/test_fuzz.py too
        with pytest.raises(ValidationFailed):
            store.add_mirror(m, bad, backfill=False)  # type: ignore[arg-type]
        for call in (
            store.requeue,
            store.remove_mirror,
            store.mirror,
            store.reconcile,
            store.dead_letters,
        ):
            with pytest.raises(ValidationFailed):
                call(bad)  # type: ignore[arg-type]
    with pytest.raises(ValidationFailed):
        store.add_mirror(m, "ok", metadata_fields=["\ud800"], backfill=False)
    with pytest.raises(ValidationFailed):
        store.add_mirror(m, "ok", namespaces=["a\x00b"], backfill=False)
    with pytest.raises(ValidationFailed):
        store.add_mirror(m, "x", namespaces=[])
    with pytest.raises(ValidationFailed):
        store.add_mirror(object(), "x")  # type: ignore[arg-type]
    store.add_mirror(m, "memory", metadata_fields=["tags"], backfill=False)  # re-register: update
    store.commit(note("x"))
    assert len(outbox_rows(store.dsn, "memory")) == 1
    store.remove_mirror("memory")
    assert outbox_rows(store.dsn) == [] and store.mirrors() == {}
    with pytest.raises(NotFound):
        store.mirror("memory")  # an in-memory mirror cannot be rebuilt from its options
    with pytest.raises(NotFound):
        store.remove_mirror("memory")
    with SyncWorker(store, {"memory": m}) as w, pytest.raises(NotFound):
        w.run_once()  # not registered
    with SyncWorker(store) as w, pytest.raises(ValueError):
        w.run_once()  # nothing to sync


def test_status_reports_pending_dead_lag_and_reconcile(store: SyncStore) -> None:
    m = FlakyMirror(InMemoryMirror(), fail_before=1.0)
    store.add_mirror(m, "f")
    store.add_mirror(InMemoryMirror(), "ok")
    a = store.commit(note("a"))
    store.commit(note("b"))
    time.sleep(0.2)
    st = store.status()
    assert st["f"].pending == 2 and st["f"].dead == 0 and st["f"].oldest_pending_age >= 0.2
    assert st["f"].last_synced_seq is None and st["f"].kind == "memory" and st["f"].enabled
    with SyncWorker(store, max_attempts=1) as w:
        w.run_once()
    st = store.status()
    assert st["f"].pending == 0 and st["f"].dead == 2 and st["f"].oldest_pending_age is None
    assert st["ok"].pending == 0 and st["ok"].last_synced_seq == store.get(a).commit_seq + 1
    report = store.reconcile("ok")
    st = store.status()["ok"]
    assert st.last_reconciled_at is not None
    assert st.last_reconcile == report.model_dump(mode="json")


def test_worker_threads_never_write_one_fact_at_once(store: SyncStore, tmp_path) -> None:
    inner = InMemoryMirror(max_batch_size=8)
    log = str(tmp_path / "writes.jsonl")
    store.add_mirror(inner, "mem")
    shared = [str(store.commit(note(f"shared {i}"), namespace="shared")) for i in range(5)]
    workers = [
        SyncWorker(
            store,
            {"mem": RecordingMirror(inner, log, delay=0.003)},
            batch_size=7,
            poll_interval=0.05,
        )
        for _ in range(4)
    ]
    threads = [threading.Thread(target=w.run_forever, daemon=True) for w in workers]
    for t in threads:
        t.start()
    import random

    writers = [
        threading.Thread(target=writer_ops, args=(store, random.Random(i), f"w{i}", 60, shared))
        for i in range(3)
    ]
    for t in writers:
        t.start()
    for t in writers:
        t.join(60)
    assert wait_for(lambda: not outbox_rows(store.dsn), timeout=30)
    for w in workers:
        w.stop()
    for t in threads:
        t.join(5)
    for w in workers:
        w.close()
    calls, unfinished = read_write_log([log])
    assert calls and unfinished == 0
    assert ordering_violations(calls) == []
    assert no_drift(drift(store.dsn, inner))


def test_scheduled_reconcile_repairs_drift_behind_the_workers_back(store: SyncStore) -> None:
    m = InMemoryMirror()
    store.add_mirror(m, "mem")
    ids = [store.commit(note(f"n{i}")) for i in range(5)]
    w = SyncWorker(store, poll_interval=0.1, reconcile_every=0.3)
    t = threading.Thread(target=w.run_forever, daemon=True)
    t.start()
    assert wait_for(lambda: m.count() == 5, timeout=5)
    m.delete([str(ids[0])])  # drift no outbox row will ever fix
    assert wait_for(lambda: m.count() == 5, timeout=5)
    w.stop()
    t.join(5)
    w.close()
    assert store.status()["mem"].last_reconcile["repaired"] >= 1


def test_the_async_store_has_the_mirror_api(dsn: str) -> None:
    import asyncio

    from memstate_pg import AsyncMemoryStore

    cls = AsyncMemoryStore

    async def scenario() -> None:
        async with cls(dsn) as astore:
            await astore.register_schema("note", None, text_field="text")
            await astore.commit(Fact(type="note", payload={"text": "before"}))
            m = FlakyMirror(InMemoryMirror())
            await astore.add_mirror(m, "amem")  # backfills the fact above
            assert (await astore.mirror("amem")) is m and (await astore.status())[
                "amem"
            ].pending == 1
            fid = await astore.commit(Fact(type="note", payload={"text": "after"}))
            worker = SyncWorker(astore, max_attempts=1)  # mirrors from astore.mirrors()
            m.fail_before = 1.0
            await asyncio.to_thread(worker.run_once)
            assert await astore.requeue("amem") == 2
            m.fail_before = 0.0
            assert await asyncio.to_thread(worker.drain, 5)
            worker.close()
            m.inner.delete([str(fid)])
            report = await astore.reconcile("amem")
            assert report.missing == 1 and report.repaired == 1 and m.inner.count() == 2
            assert len(await astore.dead_letters("amem")) == 0
            await astore.remove_mirror("amem")
            assert astore.mirrors() == {}

    asyncio.run(scenario())


def test_removing_a_mirror_during_a_batch_waits_instead_of_deadlocking(store: SyncStore) -> None:
    gate, entered = threading.Event(), threading.Event()

    class Slow(InMemoryMirror):
        def upsert(self, records):
            entered.set()
            gate.wait(10)
            super().upsert(records)

    store.add_mirror(Slow(), "m")
    store.commit(note("x"))
    results: dict[str, object] = {}

    def work() -> None:
        with SyncWorker(store) as w:
            results["acked"] = w.run_once()

    def remove() -> None:
        try:
            store.remove_mirror("m")
            results["removed"] = True
        except Exception as exc:  # a deadlock would surface here as ConflictError
            results["removed"] = exc

    worker = threading.Thread(target=work)
    worker.start()
    assert entered.wait(5)
    remover = threading.Thread(target=remove)
    remover.start()
    time.sleep(0.3)
    assert "removed" not in results  # waiting for the batch to commit
    gate.set()
    worker.join(10)
    remover.join(10)
    assert results == {"acked": 1, "removed": True}
    assert outbox_rows(store.dsn) == []


def test_status_raises_a_backlog_alert_past_max_pending(store: SyncStore, dsn: str) -> None:
    store.add_mirror(InMemoryMirror(), "slow")
    for i in range(3):
        store.commit(note(f"n{i}"))
    st = store.status()["slow"]
    assert st.pending == 3 and st.max_pending == 100000 and not st.backlog_alert
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE memstate.mirrors SET max_pending = 2 WHERE name = 'slow'")
    st = store.status()["slow"]
    assert st.max_pending == 2 and st.backlog_alert
