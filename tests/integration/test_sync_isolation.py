"""The sync worker and the mirrors against hostile tenants and hostile mirrors (issue 11).

Tenants are real LOGIN roles IN memstate_app / memstate_reader, granted their namespaces
(sql/rls.sql on); the worker logs in IN memstate_sync with '*', as a deployment runs it.
Each test is the regression test of one item: it failed on the code before the fix.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from memstate_pg import Fact, MemoryStore, NotFound, ValidationFailed
from memstate_pg.mirrors import InMemoryMirror
from memstate_pg.sync import SyncWorker
from memstate_pg.sync.outbox import q
from tests.integration.test_rls import login, secured, sqlstate_of, stores  # noqa: F401
from tests.support.sync_procs import hold_fact, outbox_rows, wait_for


def note(text: str) -> Fact:
    return Fact(type="note", payload={"text": text})


def advisory_keys(mirror: str, fact_ids) -> list[str]:
    """The advisory lock keys the worker used before: per fact, and for reconciliation."""
    keys = [f"hashtextextended({mirror!r} || ':' || '{fid}', 0)" for fid in fact_ids]
    return [*keys, f"hashtextextended('memstate-reconcile:{mirror}', 0)"]


# --- item 1: coordination a tenant cannot take -----------------------------------------------


def test_a_tenant_holding_lock_keys_cannot_stall_a_shared_mirror(mem, login, stores):  # noqa: F811
    mirror = InMemoryMirror()
    mem.add_mirror(mirror, "shared")
    tenant_a = login("memstate_app", "a")
    a = stores(tenant_a)
    mine = [a.commit(note(f"a{i}"), namespace="a") for i in range(12)]
    b = stores(login("memstate_app", "b"))
    theirs = [b.commit(note(f"b{i}"), namespace="b") for i in range(3)]
    sync_dsn = login("memstate_sync", "*")
    with psycopg.connect(tenant_a, autocommit=True) as idle:  # an idle session, no transaction
        for key in advisory_keys("shared", mine):
            idle.execute(f"SELECT pg_advisory_lock({key})")
        with SyncWorker(
            mem, {"shared": mirror}, dsn=sync_dsn, batch_size=5, reconcile_every=3600
        ) as worker:
            assert worker.drain(20) is True
            assert mirror.count() == 15
            assert set(mirror.get([str(f) for f in [*mine, *theirs]])) == {
                str(f) for f in [*mine, *theirs]
            }
            report = worker.reconcile_if_due("shared")  # the scheduled reconcile is not skipped
            assert report is not None and report.drift == 0
            assert worker.reconcile_if_due("shared") is None  # done within reconcile_every
        # what the worker locks instead cannot be locked by a tenant at all
        idle.autocommit = False
        for query in (
            "SELECT slot FROM memstate.sync_slots LIMIT 1 FOR UPDATE",
            "SELECT slot FROM memstate.sync_slots LIMIT 1 FOR KEY SHARE",
            "LOCK TABLE memstate.sync_slots IN ACCESS SHARE MODE",
            "SELECT name FROM memstate.mirrors FOR SHARE",
            "SELECT name FROM memstate.mirrors FOR KEY SHARE",
            "SELECT id FROM memstate.outbox FOR KEY SHARE",
        ):
            assert sqlstate_of(idle, query) == "42501", query
            idle.rollback()


def test_a_busy_fact_does_not_block_the_queue_behind_it(store):
    """Rows of facts another writer holds are left alone, and the claim moves on past them
    (before: the same batch of busy rows was claimed again, forever)."""
    mirror = InMemoryMirror()
    store.add_mirror(mirror, "m")
    held = [store.commit(note(f"held {i}")) for i in range(8)]
    free = [store.commit(note(f"free {i}")) for i in range(12)]
    with psycopg.connect(store.dsn) as other, SyncWorker(store, batch_size=5) as worker:
        for fid in held:
            hold_fact(other, "m", fid)
        acked = sum(worker.run_once() for _ in range(6))
        assert acked == len(free)
        assert set(mirror.get([str(f) for f in free])) == {str(f) for f in free}
        assert {r["fact_id"] for r in outbox_rows(store.dsn, "m")} == set(held)
        other.rollback()
        assert worker.drain(10)
    assert mirror.count() == 20


def test_one_scheduled_reconciliation_at_a_time(store):
    """Two workers due at once: the first takes the lease (a registry row update), the
    second sees it and skips."""
    store.add_mirror(InMemoryMirror(), "m")
    with (
        SyncWorker(store, reconcile_every=3600) as one,
        SyncWorker(store, reconcile_every=3600) as two,
    ):
        assert one.reconcile_if_due("m") is not None
        assert two.reconcile_if_due("m") is None


# --- item 2 (the worker's share): no name of the sync path resolves through a tenant schema ---


def test_planted_overloads_never_run_in_the_worker(mem, secured, login, stores):  # noqa: F811
    tenant = login("memstate_app", "a")
    user = psycopg.conninfo.conninfo_to_dict(tenant)["user"]
    planted = ("hashtextextended(text, integer)", "power(integer, integer)")
    with psycopg.connect(secured, autocommit=True) as admin:  # a database where public is open
        admin.execute(f'GRANT CREATE ON SCHEMA public TO "{user}"')
    try:
        with psycopg.connect(tenant, autocommit=True) as conn:
            for signature in planted:
                conn.execute(
                    f"CREATE FUNCTION public.{signature} RETURNS bigint LANGUAGE plpgsql AS "
                    "$$ BEGIN RAISE EXCEPTION 'planted overload ran as %', current_user; END $$"
                )

        class Refuses(InMemoryMirror):
            def upsert(self, records):
                raise ValueError("no")

        mem.add_mirror(Refuses(), "m")
        stores(tenant).commit(note("x"), namespace="a")
        with SyncWorker(mem, dsn=login("memstate_sync", "*")) as worker:
            stats = worker.process_batch("m")  # claim (hash) and fail (power) both run
            assert (stats.claimed, stats.failed) == (1, 1)
            with worker._connection() as conn:
                assert conn.execute("SHOW search_path").fetchone()[0] == "pg_catalog, pg_temp"
        (row,) = outbox_rows(secured, "m")
        assert row["attempts"] == 1 and "ValueError" in row["last_error"]
    finally:
        with psycopg.connect(secured, autocommit=True) as admin:
            for signature in planted:
                admin.execute(f"DROP FUNCTION IF EXISTS public.{signature}")
            admin.execute(f'REVOKE CREATE ON SCHEMA public FROM "{user}"')


# --- item 5: bytes per batch -----------------------------------------------------------------


def test_batches_stop_at_their_byte_budget_and_oversize_facts_are_parked(store):
    mirror = InMemoryMirror()
    store.add_mirror(mirror, "m")
    # text is both payload and content: ~41 kB a small fact, ~81 kB the big one
    small = [store.commit(note(f"{i}" + "x" * 20_000)) for i in range(5)]
    big = store.commit(note("y" * 40_000))
    with SyncWorker(store, max_batch_bytes=100_000, max_record_bytes=60_000) as worker:
        assert worker.drain(10)
    assert set(mirror.get([str(f) for f in small])) == {str(f) for f in small}
    assert mirror.get([str(big)]) == {}
    assert max(mirror.batch_sizes) <= 2  # ~41 kB each, 100 kB a batch
    (dead,) = store.dead_letters("m")
    assert dead["fact_id"] == big and "max_record_bytes=60000" in dead["last_error"]
    assert store.status()["m"].dead == 1


# --- item 6: a reconciliation always ends, and never holds up the batches -----------------------


class EndlessMirror(InMemoryMirror):
    """A mirror whose scan never ends (the same page, again and again)."""

    def __init__(self, *, countable: bool = True, pause: float = 0.0) -> None:
        super().__init__()
        self.countable = countable
        self.pause = pause
        self.scanning = threading.Event()
        self.pages = 0

    def count(self) -> int:
        if not self.countable:
            raise ConnectionError("count is not supported")
        return super().count()

    def scan_tagged(self, page_size: int = 1000) -> Iterator[list[tuple[str, int, str | None]]]:
        page = [(str(uuid.uuid4()), 1, None)]
        while True:
            self.scanning.set()
            self.pages += 1
            time.sleep(self.pause)
            yield page

    def scan(self, page_size: int = 1000) -> Iterator[list[tuple[str, int]]]:
        for page in self.scan_tagged(page_size):
            yield [(fid, version) for fid, version, _ in page]


def test_a_scan_that_never_ends_stops_at_the_page_budget(store):
    mirror = EndlessMirror()
    store.add_mirror(mirror, "endless")
    store.commit(note("x"))
    done: list = []
    thread = threading.Thread(target=lambda: done.append(store.reconcile("endless", page_size=10)))
    thread.daemon = True
    thread.start()
    thread.join(20)
    assert done, "reconcile never returned"
    assert mirror.pages < 10


def test_a_scheduled_reconcile_neither_blocks_syncing_nor_ignores_stop(store):
    endless = EndlessMirror(countable=False, pause=0.02)  # no budget: only stop and time
    other = InMemoryMirror()
    store.add_mirror(endless, "endless")
    store.add_mirror(other, "other", backfill=False)
    worker = SyncWorker(store, poll_interval=0.1, reconcile_every=0.2)
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    try:
        assert endless.scanning.wait(10)
        fids = [store.commit(note(f"n{i}")) for i in range(3)]
        assert wait_for(
            lambda: set(other.get([str(f) for f in fids])) == {str(f) for f in fids}, 10
        )
    finally:
        worker.stop()
        thread.join(5)
        alive = thread.is_alive()
        worker.close()
    assert not alive, "stop() was ignored while reconciling"


def test_reconcile_timeout(store):
    mirror = EndlessMirror(countable=False, pause=0.01)
    store.add_mirror(mirror, "endless")
    from memstate_pg.sync.reconcile import reconcile

    started = time.monotonic()
    reconcile(store._pool.connection, "endless", mirror, timeout=0.5)
    assert time.monotonic() - started < 5


# --- item 8: mirrors sharing a store ----------------------------------------------------------


def test_one_store_one_mirror_and_the_collection_defaults_to_the_name(store, tmp_path):
    from memstate_pg.mirrors import ChromaMirror
    from memstate_pg.sync import parse_mirror_spec

    first = ChromaMirror.from_path(tmp_path / "c", "memory")
    store.add_mirror(first, "one")
    store.add_mirror(first, "one")  # re-registering the same name is an update
    with pytest.raises(ValidationFailed, match="already writes"):
        store.add_mirror(ChromaMirror.from_path(tmp_path / "c", "memory"), "two")
    store.add_mirror(ChromaMirror.from_path(tmp_path / "c", "two"), "two")
    name, spec_mirror = parse_mirror_spec(f"tenant-7=chroma:path:{tmp_path / 'c'}")
    assert (name, spec_mirror.collection_name) == ("tenant-7", "tenant-7")
    assert parse_mirror_spec("x=qdrant::memory:?collection=c")[1].collection_name == "c"


def test_mirrors_sharing_a_collection_leave_each_others_points_alone(store):
    """Per-tenant mirrors on one (process-private) collection: each reconcile only judges
    the points tagged with its own name (before: each deleted the other's as ghosts)."""
    shared = InMemoryMirror()
    store.add_mirror(shared, "ta", namespaces=["a"])
    store.add_mirror(shared, "tb", namespaces=["b"])
    for i in range(3):
        store.commit(note(f"a{i}"), namespace="a")
    fb = [store.commit(note(f"b{i}"), namespace="b") for i in range(4)]
    with SyncWorker(store) as worker:
        assert worker.drain(10)
    assert shared.count() == 7
    for name in ("ta", "tb", "ta"):
        report = store.reconcile(name)
        assert report.ghosts == 0 and report.drift == 0
    assert shared.count() == 7
    assert {p.metadata["mirror"] for p in shared.get([str(f) for f in fb]).values()} == {"tb"}


# --- item 12: NOTIFY storms and stop events ----------------------------------------------------


class CountingWorker(SyncWorker):
    cycles = 0

    def _cycle(self):
        self.cycles += 1
        return super()._cycle()


def test_a_notify_storm_does_not_multiply_cycles(store, login):  # noqa: F811
    store.add_mirror(InMemoryMirror(), "m")
    worker = CountingWorker(store, poll_interval=5.0)
    thread = threading.Thread(target=worker.run_forever, daemon=True)
    thread.start()
    time.sleep(0.3)
    before = worker.cycles
    with psycopg.connect(login("memstate_reader", "a"), autocommit=True) as reader:
        end = time.monotonic() + 1.0
        sent = 0
        while time.monotonic() < end:
            reader.execute("NOTIFY memstate_outbox")
            sent += 1
    time.sleep(0.2)
    storm = worker.cycles - before
    worker.stop()
    thread.join(5)
    worker.close()
    assert sent > 200
    assert storm <= 1.2 / 0.05 + 5, (storm, sent)  # wake_interval: 0.05 s


def test_run_forever_with_a_stop_event_sleeps_its_poll_interval(store):
    store.add_mirror(InMemoryMirror(), "m")
    worker = CountingWorker(store, poll_interval=5.0)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run_forever, args=(stop,), daemon=True)
    thread.start()
    time.sleep(1.0)
    cycles = worker.cycles
    stop.set()
    thread.join(2)
    alive = thread.is_alive()
    worker.close()
    assert not alive
    assert cycles <= 2  # before: one cycle every 0.1 s


# --- item 15: the claim reads the ready rows only ---------------------------------------------


def test_an_empty_claim_reads_no_row_in_backoff(store):
    store.add_mirror(InMemoryMirror(), "m")
    fid = store.commit(note("x"))
    with psycopg.connect(store.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO memstate.outbox (mirror, fact_id, namespace, seq, version, op, attempts, "
            "available_at) SELECT 'm', %s, 'default', 1, 1, 'put', 3, now() + interval '1 hour' "
            "FROM generate_series(1, 20000)",
            [fid],
        )
        conn.execute("DELETE FROM memstate.outbox WHERE attempts = 0")
        conn.execute("ANALYZE memstate.outbox")
        with conn.transaction():
            plan = conn.execute(
                "EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) " + q("claim"),
                {"mirror": "m", "limit": 500, "skip": []},
            ).fetchone()[0]
    removed = sum(_walk(plan[0]["Plan"], "Rows Removed by Filter"))
    buffers = plan[0]["Plan"]["Shared Hit Blocks"] + plan[0]["Plan"]["Shared Read Blocks"]
    assert removed == 0, json.dumps(plan, indent=1)
    assert buffers < 50, buffers


def _walk(node: dict, key: str) -> Iterator[int]:
    yield node.get(key, 0)
    for child in node.get("Plans", []):
        yield from _walk(child, key)


# --- item 16: a planted Qdrant point is a ghost ------------------------------------------------


def test_a_planted_qdrant_point_naming_a_live_fact_is_a_ghost(store):
    from qdrant_client import models

    from memstate_pg.mirrors import QdrantMirror

    mirror = QdrantMirror.from_location(":memory:", f"q-{uuid.uuid4().hex[:8]}")
    store.add_mirror(mirror, "q")
    fid = store.commit(note("real"))
    with SyncWorker(store) as worker:
        assert worker.drain(10)
    planted = str(uuid.uuid4())
    vector = mirror.get([str(fid)], with_vectors=True)[str(fid)].embedding
    mirror.client.upsert(
        mirror.collection_name,
        points=[
            models.PointStruct(
                id=planted, vector=vector, payload={"fact_id": str(fid), "version": 1}
            )
        ],
        wait=True,
    )
    report = store.reconcile("q")
    assert report.ghosts == 1 and report.repaired == 1
    assert set(mirror.get([str(fid), planted])) == {str(fid)}


# --- issue 12: SyncWorker takes registered Mirror objects --------------------------------------


def test_the_worker_takes_registered_mirror_objects(store):
    a, b = InMemoryMirror(), InMemoryMirror()
    store.add_mirror(a, "a")
    store.add_mirror(b, "b")
    with SyncWorker(store, mirrors=[a, "b"]) as worker:
        assert worker.mirrors == {"a": a, "b": b}
    with SyncWorker(store, mirrors=b) as worker:
        assert worker.mirrors == {"b": b}
    stranger = InMemoryMirror()
    with pytest.raises(NotFound, match="not registered with this store"):
        _ = SyncWorker(store, mirrors=[a, stranger]).mirrors
    with MemoryStore(store.dsn, max_size=1) as elsewhere, pytest.raises(NotFound):
        _ = SyncWorker(elsewhere, mirrors=[a]).mirrors  # registered with another store object
