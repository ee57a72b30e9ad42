"""Fault drills against a real `chroma run` server and worker *processes*:

* a worker SIGKILLed at random moments 20+ times while a writer keeps committing loses
  nothing: a fresh worker drains and reconciliation finds no drift;
* 4 worker processes and 4 writer processes at once: no drift, no duplicate point, no
  fact written by two workers at once, no version ever going backwards in the mirror;
* the Chroma server down for a stretch while commits continue: the backlog drains once
  it is back, and reconciliation finds nothing to repair.

Worker and writer processes fork from a preloaded forkserver (tests/sync_procs.py); they
reach Postgres by DSN only and Chroma over HTTP.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from memstate_pg import Fact
from memstate_pg.mirrors import ChromaMirror
from memstate_pg.sync import SyncWorker
from tests.support.chroma_server import ChromaServer
from tests.support.sync_procs import (
    SyncStore,
    drift,
    forkserver,
    no_drift,
    ordering_violations,
    outbox_rows,
    read_write_log,
    run_worker,
    run_writer,
    wait_for,
    writer_ops,
)


@pytest.fixture
def chroma(store: SyncStore, chroma_server: ChromaServer) -> Iterator[tuple[ChromaMirror, str]]:
    """A mirror on a fresh collection of the Chroma server, registered as "chroma"."""
    collection = f"f_{uuid.uuid4().hex[:12]}"
    mirror = ChromaMirror.from_url(chroma_server.url, collection)
    mirror.count()  # create the collection now, not in the first (killable) worker
    store.add_mirror(mirror, "chroma", metadata_fields=["tags"])
    yield mirror, collection


def test_a_worker_killed_at_random_loses_nothing(
    store: SyncStore, chroma, chroma_server, tmp_path
) -> None:
    mirror, collection = chroma
    ctx = forkserver()
    log = str(tmp_path / "writes.jsonl")
    stop = threading.Event()
    writer = threading.Thread(
        target=writer_ops, args=(store, random.Random(11), "default", 10**6, (), stop)
    )
    writer.start()
    rng = random.Random(3)
    exit_codes = []
    try:
        for _ in range(22):
            ready = ctx.Event()
            p = ctx.Process(
                target=run_worker,
                args=(store.dsn, "chroma", chroma_server.url, collection),
                kwargs={"log_path": log, "delay": 0.01, "batch_size": 10, "ready": ready},
            )
            p.start()
            assert ready.wait(30)
            time.sleep(rng.uniform(0.0, 0.3))  # somewhere in claim, read, write, ack or commit
            p.kill()
            p.join(10)
            exit_codes.append(p.exitcode)
    finally:
        stop.set()
        writer.join(30)
    assert exit_codes == [-9] * 22
    calls, killed_mid_write = read_write_log([log])
    assert len(calls) > 22 and killed_mid_write >= 3  # the kills did land inside mirror writes
    assert ordering_violations(calls) == []
    assert outbox_rows(store.dsn, "chroma")  # the writer kept ahead of the dying workers
    with SyncWorker(store, {"chroma": mirror}) as fresh:
        assert fresh.drain(60)
    assert store.reconcile("chroma", repair=False).drift == 0
    d = drift(store.dsn, mirror)
    assert no_drift(d), d


def test_four_workers_and_four_writers(store: SyncStore, chroma, chroma_server, tmp_path) -> None:
    mirror, collection = chroma
    shared = [
        str(store.commit(Fact(type="note", payload={"text": f"shared {i}"}), namespace="shared"))
        for i in range(8)
    ]
    ctx = forkserver()
    logs = [str(tmp_path / f"worker{i}.jsonl") for i in range(4)]
    workers = [
        ctx.Process(
            target=run_worker,
            args=(store.dsn, "chroma", chroma_server.url, collection),
            kwargs={"log_path": logs[i], "batch_size": 8, "poll_interval": 0.1},
        )
        for i in range(4)
    ]
    for p in workers:
        p.start()
    writers = [
        ctx.Process(target=run_writer, args=(store.dsn, f"w{i}", 120, i, shared)) for i in range(4)
    ]
    try:
        for p in writers:
            p.start()
        for p in writers:
            p.join(120)
        assert [p.exitcode for p in writers] == [0] * 4
        assert wait_for(lambda: not outbox_rows(store.dsn), timeout=60)
    finally:
        for p in workers:
            p.terminate()  # SIGTERM: a graceful stop
        for p in workers:
            p.join(15)
    assert [p.exitcode for p in workers] == [0] * 4
    calls, unfinished = read_write_log(logs)
    assert unfinished == 0
    assert len({c["pid"] for c in calls}) >= 2  # the work really was shared
    assert ordering_violations(calls) == []
    points = [fid for page in mirror.scan(100) for fid, _ in page]
    assert len(points) == len(set(points)) == mirror.count()  # no duplicate point
    d = drift(store.dsn, mirror)
    assert no_drift(d), d
    assert store.reconcile("chroma", repair=False).drift == 0


def test_the_mirror_down_for_a_stretch(store: SyncStore, chroma, chroma_server) -> None:
    mirror, _ = chroma
    worker = SyncWorker(
        store,
        {"chroma": mirror},
        poll_interval=0.1,
        backoff_base=0.05,
        backoff_max=0.4,
        max_attempts=1000,
    )
    t = threading.Thread(target=worker.run_forever, daemon=True)
    t.start()
    try:
        writer_ops(store, random.Random(1), "default", 20)
        assert wait_for(lambda: not outbox_rows(store.dsn), timeout=20)
        with chroma_server.down():
            writer_ops(store, random.Random(2), "default", 40)
            assert wait_for(lambda: any(r["attempts"] for r in outbox_rows(store.dsn)), timeout=10)
            time.sleep(1.0)  # a stretch of failures and backoff
            st = store.status()["chroma"]
            assert st.pending > 0 and st.dead == 0 and st.oldest_pending_age > 0.5
            errors = {r["last_error"] for r in outbox_rows(store.dsn) if r["last_error"]}
            assert errors and all("chroma" in e for e in errors)
        assert wait_for(lambda: not outbox_rows(store.dsn), timeout=60)
    finally:
        worker.stop()
        t.join(10)
        worker.close()
    report = store.reconcile("chroma", repair=False)
    assert report.drift == 0 and report.checked > 0
    assert no_drift(drift(store.dsn, mirror))
