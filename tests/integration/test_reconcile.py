"""Reconciliation finds drift planted behind the worker's back (points deleted, rewritten at
an old version, added directly) in Chroma, Qdrant and the in-memory mirror, repairs it,
keeps memory bounded by the page size, and does not fight a running worker."""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Iterator, Sequence
from uuid import UUID

import psycopg
import pytest

from memstate_pg import Fact, NotFound
from memstate_pg.mirrors import (
    ChromaMirror,
    InMemoryMirror,
    Mirror,
    MirrorPoint,
    MirrorRecord,
    QdrantMirror,
)
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
    wait_for,
    writer_ops,
)


def make(kind: str, tmp_path) -> Mirror:
    collection = f"r_{uuid.uuid4().hex[:12]}"
    if kind == "chroma":
        return ChromaMirror.from_path(tmp_path / "chroma", collection)
    if kind == "qdrant":
        return QdrantMirror.from_location(":memory:", collection)
    return InMemoryMirror()


def record(
    fid: str, version: int, *, namespace: str = "default", text: str = "planted"
) -> MirrorRecord:
    rng = random.Random(fid)
    return MirrorRecord(
        fact_id=fid,
        version=version,
        namespace=namespace,
        type="note",
        embedding=[rng.random() for _ in range(384)],
        embedding_model="hashing-v1-384",
        content=text,
        metadata={},
    )


@pytest.mark.parametrize("kind", ["chroma", "qdrant", "memory"])
def test_planted_drift_is_found_and_repaired(store: SyncStore, tmp_path, kind: str) -> None:
    m = make(kind, tmp_path)
    store.add_mirror(m, "m", namespaces=["default"])
    ids = [str(store.commit(Fact(type="note", payload={"text": f"n{i}"}))) for i in range(30)]
    for fid in ids[:5]:
        store.update(fid, {"payload": {"text": "v2"}})
    other_ns = str(
        store.commit(Fact(type="note", payload={"text": "elsewhere"}), namespace="other")
    )
    deleted = ids[29]
    store.delete(deleted)
    with SyncWorker(store) as w:
        assert w.drain(10)
    assert store.reconcile("m", repair=False).drift == 0

    m.delete([ids[10], ids[11]])  # missing
    m.upsert([record(ids[0], 1), record(ids[1], 1)])  # stale: an old version
    m.upsert([record(ids[12], 1, text="altered")])  # same version, other vector
    ghost = str(uuid.uuid4())
    m.upsert(
        [record(ghost, 3), record(deleted, 1), record(other_ns, 1, namespace="other")]
    )  # ghosts
    report = store.reconcile("m", repair=False)
    assert (report.missing, report.stale, report.ghosts, report.repaired) == (2, 2, 3, 0)
    assert report.checked == 29 + 3
    saved = store.status()["m"].last_reconcile
    assert saved["missing"] == 2 and saved["ghosts"] == 3

    report = store.reconcile("m")
    assert (report.missing, report.stale, report.ghosts, report.repaired) == (2, 2, 3, 7)
    again = store.reconcile("m")
    assert again.drift == 0 and again.repaired == 0
    d = drift(store.dsn, m, namespaces=["default"])
    # A point rewritten at its own version with another vector is not drift by (id, version);
    # the design compares versions, and every write carries the version it came from.
    assert d["vector"] == [ids[12]]
    d["vector"] = []
    assert no_drift(d), d
    assert outbox_rows(store.dsn, "m") == []


def test_foreign_ids_in_chroma_are_ghosts(store: SyncStore, tmp_path) -> None:
    m = make("chroma", tmp_path)
    assert isinstance(m, ChromaMirror)
    store.add_mirror(m, "m")
    store.commit(Fact(type="note", payload={"text": "real"}))
    with SyncWorker(store) as w:
        assert w.drain(10)
    upper = str(uuid.uuid4()).upper()
    m.collection.add(
        ids=["not-a-uuid", upper],
        embeddings=[[0.1] * 384, [0.2] * 384],
        metadatas=[{"version": 1}, {"version": 1}],
    )
    report = store.reconcile("m")
    assert report.ghosts == 2 and report.repaired == 2 and m.count() == 1


class PageSpy(Mirror):
    """Delegates to an InMemoryMirror and records the size of every read."""

    kind = "memory"

    def __init__(self, inner: InMemoryMirror) -> None:
        self.inner = inner
        self.max_batch_size = inner.max_batch_size
        self.get_sizes: list[int] = []
        self.scan_pages: list[int] = []

    def _upsert_batch(self, records: Sequence[MirrorRecord]) -> None:
        self.inner.upsert(records)

    def _delete_batch(self, fact_ids: Sequence[str]) -> None:
        self.inner.delete(fact_ids)

    def get(self, fact_ids: Sequence[str], *, with_vectors: bool = False) -> dict[str, MirrorPoint]:
        self.get_sizes.append(len(fact_ids))
        return self.inner.get(fact_ids, with_vectors=with_vectors)

    def scan(self, page_size: int = 1000) -> Iterator[list[tuple[str, int]]]:
        for page in self.inner.scan(page_size):
            self.scan_pages.append(len(page))
            yield page

    def count(self) -> int:
        return self.inner.count()

    def describe(self) -> dict:
        return {"kind": "memory"}

    def reset(self) -> None:
        self.inner.reset()


def test_reconcile_works_in_pages_of_bounded_size(store: SyncStore) -> None:
    spy = PageSpy(InMemoryMirror())
    store.add_mirror(spy, "spy")
    store.commit_many([Fact(type="note", payload={"text": f"n{i}"}) for i in range(230)])
    with SyncWorker(store) as w:
        assert w.drain(10)
    spy.inner.delete([fid for fid, _ in next(spy.inner.scan(40))])  # 40 missing
    progress: list[tuple[int, int | None]] = []
    report = store.reconcile("spy", page_size=32, progress=lambda d, t: progress.append((d, t)))
    assert report.missing == 40 and report.repaired == 40 and report.checked == 230
    assert max(spy.get_sizes) <= 32 and max(spy.scan_pages) <= 32
    assert len(spy.get_sizes) >= 230 // 32
    dones = [d for d, _ in progress]
    assert dones == sorted(dones)
    assert progress[0][1] == 230 + 190  # live facts + points before the repairs
    assert progress[-1][0] == progress[-1][1] == 230 + 230  # pass 2 saw the 40 repaired points
    with pytest.raises(ValueError):
        store.reconcile("spy", page_size=0)
    with pytest.raises(NotFound):
        store.reconcile("nope")


def test_facts_a_worker_holds_are_left_to_it(store: SyncStore) -> None:
    m = InMemoryMirror()
    store.add_mirror(m, "m")
    a, b = (str(store.commit(Fact(type="note", payload={"text": t}))) for t in "ab")
    with SyncWorker(store) as w:
        assert w.drain(10)
    m.delete([a, b])
    with psycopg.connect(store.dsn) as worker_like:
        hold_fact(worker_like, "m", UUID(a))
        report = store.reconcile("m")
    assert report.missing == 2 and report.repaired == 1
    assert set(m.get([a, b])) == {b}
    assert store.reconcile("m").repaired == 1


def test_reconcile_during_sync_never_writes_an_old_version(store: SyncStore, tmp_path) -> None:
    inner = InMemoryMirror(max_batch_size=16)
    log = str(tmp_path / "log.jsonl")
    recorded = RecordingMirror(inner, log)
    store.add_mirror(recorded, "m")
    worker = SyncWorker(store, batch_size=8, poll_interval=0.05)
    t = threading.Thread(target=worker.run_forever, daemon=True)
    t.start()
    stop = threading.Event()
    writer = threading.Thread(
        target=writer_ops, args=(store, random.Random(5), "default", 250, (), stop)
    )
    writer.start()
    reports = []
    while writer.is_alive():
        if random.random() < 0.5:  # drift for reconcile to find while the worker is busy
            victims = [fid for fid, _ in next(inner.scan(5), [])]
            inner.delete(victims)
        reports.append(store.reconcile("m", page_size=16))
    writer.join()
    assert wait_for(lambda: not outbox_rows(store.dsn), timeout=20)
    final = store.reconcile("m")
    worker.stop()
    t.join(5)
    worker.close()
    calls, unfinished = read_write_log([log])
    assert len(reports) >= 3 and sum(r.repaired for r in reports) > 0
    assert ordering_violations(calls) == [] and unfinished == 0
    assert final.drift == 0 or store.reconcile("m").drift == 0
    assert no_drift(drift(store.dsn, inner))
