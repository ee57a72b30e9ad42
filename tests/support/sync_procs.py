"""Helpers of the sync tests, and the entry points of their worker / writer processes.

The processes are started through a multiprocessing *forkserver* that has imported this
module (and so chromadb, psycopg, numpy) once: a new worker is a fork of it, ready in tens
of milliseconds instead of the ~2 s a fresh interpreter needs to import chromadb. That is
what makes 20+ SIGKILLs fit in a few seconds. Children only connect to Postgres by DSN
(they never own the embedded server) and to Chroma over HTTP (a ``chroma run`` server).
"""

from __future__ import annotations

import json
import math
import multiprocessing
import os
import random
import time
from collections.abc import Iterator, Sequence
from typing import Any

import chromadb  # noqa: F401  - preloaded into the forkserver on purpose
import psycopg
from psycopg.rows import dict_row

from memstate_pg import ConflictError, Fact, MemoryStore, NotFound
from memstate_pg.mirrors import ChromaMirror, Mirror, MirrorPoint, MirrorRecord
from memstate_pg.sync import SyncWorker
from memstate_pg.sync.apply import read_states

SyncStore = MemoryStore  # the store the sync tests use (the name predates the integration)


def hold_fact(conn: psycopg.Connection, mirror: str, fact_id: Any) -> None:
    """Take the per-fact lock of the sync path in `conn`'s open transaction, as a worker
    batch does (held until it ends)."""
    from memstate_pg.sync import outbox

    assert outbox.lock_facts(conn, mirror, [fact_id]) == {fact_id}


# --- comparing a mirror with Postgres ---------------------------------------------------


def pg_live(
    dsn: str, namespaces: Sequence[str] | None = None
) -> dict[str, tuple[int, list[float]]]:
    """{fact_id: (version, embedding)} of the live facts (in `namespaces`, if given)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        ids = [
            r[0]
            for r in conn.execute(
                "SELECT fact_id FROM memstate.facts WHERE %(ns)s::text[] IS NULL OR namespace = ANY(%(ns)s)",
                {"ns": list(namespaces) if namespaces is not None else None},
            )
        ]
        states = read_states(conn, ids)
    return {str(fid): (s.version, s.embedding) for fid, s in states.items()}


def scan_all(mirror: Mirror, page_size: int = 500) -> list[tuple[str, int]]:
    return [item for page in mirror.scan(page_size) for item in page]


def _unit(v: Sequence[float]) -> list[float]:
    n = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / n for x in v]


def drift(
    dsn: str, mirror: Mirror, namespaces: Sequence[str] | None = None, vectors: bool = True
) -> dict[str, Any]:
    """What differs between Postgres's live set and the mirror, by id, version and vector
    (compared after normalising: Qdrant stores cosine vectors as unit vectors)."""
    live = pg_live(dsn, namespaces)
    points = scan_all(mirror)
    held = dict(points)
    out: dict[str, Any] = {
        "duplicates": len(points) - len(held),
        "missing": sorted(set(live) - set(held)),
        "ghosts": sorted(set(held) - set(live)),
        "stale": sorted(f for f in set(live) & set(held) if held[f] != live[f][0]),
        "vector": [],
    }
    if vectors and live:
        got = mirror.get(sorted(set(live) & set(held)), with_vectors=True)
        for fid, point in got.items():
            a, b = _unit(live[fid][1]), _unit(point.embedding or [])
            if len(a) != len(b) or any(abs(x - y) > 1e-5 for x, y in zip(a, b, strict=True)):
                out["vector"].append(fid)
    return out


def no_drift(d: dict[str, Any]) -> bool:
    return not (d["duplicates"] or d["missing"] or d["ghosts"] or d["stale"] or d["vector"])


def outbox_rows(dsn: str, mirror: str | None = None) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        return conn.execute(
            "SELECT * FROM memstate.outbox WHERE %(m)s::text IS NULL OR mirror = %(m)s ORDER BY id",
            {"m": mirror},
        ).fetchall()


def wait_for(predicate, timeout: float = 30.0, interval: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


# --- a mirror that logs every write, to check ordering across processes ----------------


class RecordingMirror(Mirror):
    """Delegates to `inner` and appends one JSON line per write call to `path`:
    ``begin`` (pid, time, (fact_id, version|None) pairs) before the call and ``end`` after
    it returned. Times are CLOCK_MONOTONIC, which is system-wide on Linux, so the logs of
    several processes can be merged. `delay` widens the window in which a kill can land
    mid-write."""

    def __init__(self, inner: Mirror, path: str, *, delay: float = 0.0) -> None:
        self.inner = inner
        self.path = path
        self.delay = delay
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.inner.kind

    @property
    def max_batch_size(self) -> int:  # type: ignore[override]
        return self.inner.max_batch_size

    def _log(self, entry: dict[str, Any]) -> None:
        os.write(self._fd, (json.dumps(entry) + "\n").encode())

    def _call(self, items: list[list[Any]], fn) -> None:
        call = f"{os.getpid()}-{time.monotonic_ns()}"
        self._log(
            {
                "ev": "begin",
                "call": call,
                "pid": os.getpid(),
                "t": time.monotonic_ns(),
                "items": items,
            }
        )
        if self.delay:
            time.sleep(self.delay)
        fn()
        self._log({"ev": "end", "call": call, "pid": os.getpid(), "t": time.monotonic_ns()})

    def upsert(self, records: Sequence[MirrorRecord]) -> None:
        self._call([[r.fact_id, r.version] for r in records], lambda: self.inner.upsert(records))

    def delete(self, fact_ids: Sequence[str]) -> None:
        self._call([[f, None] for f in fact_ids], lambda: self.inner.delete(fact_ids))

    def _upsert_batch(self, records: Sequence[MirrorRecord]) -> None:
        self.upsert(records)

    def _delete_batch(self, fact_ids: Sequence[str]) -> None:
        self.delete(fact_ids)

    def get(self, fact_ids: Sequence[str], *, with_vectors: bool = False) -> dict[str, MirrorPoint]:
        return self.inner.get(fact_ids, with_vectors=with_vectors)

    def scan(self, page_size: int = 1000) -> Iterator[list[tuple[str, int]]]:
        return self.inner.scan(page_size)

    def scan_tagged(self, page_size: int = 1000) -> Iterator[list[tuple[str, int, str | None]]]:
        return self.inner.scan_tagged(page_size)

    def store_key(self) -> str | None:
        return self.inner.store_key()

    def count(self) -> int:
        return self.inner.count()

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def reset(self) -> None:
        self.inner.reset()


def read_write_log(paths: Sequence[str]) -> tuple[list[dict[str, Any]], int]:
    """Completed write calls from the logs of `paths` (each with begin `t0` and end `t1`),
    and the number of calls that began but never ended (killed mid-write)."""
    begins: dict[str, dict[str, Any]] = {}
    done: list[dict[str, Any]] = []
    for path in paths:
        if not os.path.exists(path):
            continue
        with open(path) as f:
            for line in f:
                if not line.endswith("\n"):
                    continue  # torn last line of a killed process
                e = json.loads(line)
                if e["ev"] == "begin":
                    begins[e["call"]] = e
                else:
                    b = begins.pop(e["call"])
                    done.append({**b, "t0": b["t"], "t1": e["t"]})
    return done, len(begins)


def ordering_violations(calls: list[dict[str, Any]]) -> list[str]:
    """Per fact: upserted versions must never decrease, and no two calls writing the same
    fact may overlap in time (the per-fact lock makes writers take turns)."""
    per_fact: dict[str, list[tuple[int, int, int | None, int]]] = {}
    for c in calls:
        for fid, version in c["items"]:
            per_fact.setdefault(fid, []).append((c["t0"], c["t1"], version, c["pid"]))
    problems = []
    for fid, writes in per_fact.items():
        writes.sort()
        top = -1
        for i, (t0, _t1, version, pid) in enumerate(writes):
            if i and t0 < writes[i - 1][1]:
                problems.append(
                    f"{fid}: write by {pid} overlaps the previous one (by {writes[i - 1][3]})"
                )
            if version is not None:
                if version < top:
                    problems.append(f"{fid}: version {version} written after {top}")
                top = max(top, version)
    return problems


# --- process entry points --------------------------------------------------------------


def forkserver() -> Any:
    """A multiprocessing context whose children fork from a server that preloaded this module."""
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(["tests.support.sync_procs"])
    return ctx


def run_worker(
    dsn: str,
    name: str,
    chroma_url: str,
    collection: str,
    *,
    log_path: str | None = None,
    delay: float = 0.0,
    batch_size: int = 20,
    poll_interval: float = 0.2,
    ready: Any = None,
) -> None:
    """A sync worker process: feeds mirror `name` (a Chroma server) until SIGTERM. Sets
    the multiprocessing Event `ready` once connected, right before it starts syncing."""
    store = SyncStore(dsn, min_size=1, max_size=1)
    try:
        mirror: Mirror = ChromaMirror.from_url(chroma_url, collection)
        if log_path is not None:
            mirror = RecordingMirror(mirror, log_path, delay=delay)
        worker = SyncWorker(
            store,
            {name: mirror},
            batch_size=batch_size,
            poll_interval=poll_interval,
            backoff_base=0.05,
            backoff_max=0.5,
            max_attempts=1000,
        )
        with worker:
            worker.mirrors  # noqa: B018 - resolve and check the registration now
            if ready is not None:
                ready.set()
            worker.run_forever()
    finally:
        store.close()


def writer_ops(
    store: MemoryStore,
    rng: random.Random,
    namespace: str,
    n_ops: int,
    shared: Sequence[str] = (),
    stop: Any = None,
) -> int:
    """Random commits, updates, deletes and rollbacks in `namespace` (plus updates of the
    `shared` fact ids, contended with other writers). Returns the number of writes done."""
    own: list[str] = []
    done = 0
    for i in range(n_ops):
        if stop is not None and stop.is_set():
            break
        roll = rng.random()
        try:
            if roll < 0.45 or not own:
                own.append(
                    str(
                        store.commit(
                            Fact(
                                type="note",
                                payload={
                                    "text": f"{namespace} {i} {rng.random()}",
                                    "tags": [namespace],
                                },
                            ),
                            namespace=namespace,
                        )
                    )
                )
            elif roll < 0.65:
                store.update(
                    rng.choice(own), {"payload": {"text": f"upd {i} {rng.random()}", "tags": ["u"]}}
                )
            elif roll < 0.8 and shared:
                store.update(
                    rng.choice(shared), {"payload": {"text": f"shared {namespace} {i}", "tags": []}}
                )
            elif roll < 0.93:
                store.delete(own.pop(rng.randrange(len(own))))
            else:
                store.rollback(1, namespace=namespace)
            done += 1
        except (ConflictError, NotFound):
            pass  # a rollback blocked by a later change, a fact deleted by a rollback: fine
    return done


def run_writer(dsn: str, namespace: str, n_ops: int, seed: int, shared: Sequence[str]) -> None:
    """A writer process (see writer_ops)."""
    store = MemoryStore(dsn, min_size=1, max_size=1)
    try:
        writer_ops(store, random.Random(seed), namespace, n_ops, shared)
    finally:
        store.close()
