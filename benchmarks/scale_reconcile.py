"""Reconcile a mirror of the scale benchmark's `one` database, in a process of its own, so
its memory is measured apart from the benchmark's ground-truth matrices.

    python -m benchmarks.scale_reconcile DSN N   # prints one JSON line

The mirror is an in-memory store (`VectorMirror`): the shipped `InMemoryMirror` keeps each
vector as a list of Python floats (≈ 12 KB per 384-d point, 12 GB for a million), so this
one keeps them as float32 arrays (1.5 KB, like a vector database) and answers
`versions()` from its dict, as a real store answers from its index. It is filled with the
database's `n` facts (vectors regenerated from the seed, see benchmarks/scale_data.py),
then drifted (1% missing, 1% stale, 0.5% ghosts) and reconciled with repair.

Memory: the process's resident set right before a reconciliation, and its peak during it
(Linux: VmHWM reset through /proc/self/clear_refs), whose difference is what reconcile
itself added; and, in a separate run of the same drift, the peak of Python allocations
(tracemalloc; slower, so not timed).
"""

from __future__ import annotations

import contextlib
import gc
import json
import sys
import threading
import time
import tracemalloc
import uuid

import numpy as np
import psycopg

from benchmarks import scale_data
from memstate_pg.mirrors import InMemoryMirror, MirrorRecord
from memstate_pg.mirrors.base import MirrorPoint, build_payload

MIRROR = "scale_recon"


class VectorMirror(InMemoryMirror):
    """InMemoryMirror with float32 vectors and a direct versions()."""

    def _upsert_batch(self, records) -> None:
        self._check_batch(len(records))
        points = {
            r.fact_id: MirrorPoint(
                fact_id=r.fact_id,
                version=r.version,
                embedding=np.asarray(r.embedding, dtype=np.float32),  # type: ignore[arg-type]
                metadata=build_payload(r),
            )
            for r in records
        }
        with self._lock:
            self._points.update(points)

    def _delete_batch(self, fact_ids) -> None:
        self._check_batch(len(fact_ids))
        with self._lock:
            for fid in fact_ids:
                self._points.pop(fid, None)

    def versions(self, fact_ids):
        with self._lock:
            return {fid: self._points[fid].version for fid in fact_ids if fid in self._points}


def _status(field: str) -> int:
    """A VmRSS / VmHWM figure of this process, in bytes."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> bool:
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def main(argv: list[str]) -> dict:
    dsn, n = argv[0], int(argv[1])
    from memstate_pg.sync.reconcile import reconcile

    ds = scale_data.generate("one", n, 1, scale_data.VectorSpace())
    texts = [scale_data.text_of(i) for i in range(n)]
    versions = [
        scale_data.UPDATE_ROUNDS + 1 if i % scale_data.UPDATE_EVERY == 0 else 1 for i in range(n)
    ]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO memstate.mirrors (name, kind, namespaces) VALUES (%s, 'memory', %s) "
            "ON CONFLICT (name) DO NOTHING",
            (MIRROR, [scale_data.NAMESPACE]),
        )
    mirror = VectorMirror(max_batch_size=1000)

    vec0 = ds.matrix[0].copy()

    def record(i: int, version: int | None = None) -> MirrorRecord:
        if ds.matrix is not None:
            vec = ds.matrix[i]
        else:  # after the fill: a drifted point keeps the vector the mirror holds
            point = mirror._points.get(str(ds.ids[i]))
            vec = point.embedding if point is not None else vec0
        return MirrorRecord(
            fact_id=str(ds.ids[i]),
            version=versions[i] if version is None else version,
            namespace=scale_data.NAMESPACE,
            type="note",
            embedding=vec,  # type: ignore[arg-type]
            embedding_model=scale_data.MODEL,
            content=texts[i],
            metadata={},
            mirror=MIRROR,
        )

    t0 = time.perf_counter()
    for s in range(0, n, 1000):
        mirror.upsert([record(i) for i in range(s, min(n, s + 1000))])
    fill = time.perf_counter() - t0

    def drift(seed: int) -> None:
        step = 100
        mirror.delete([str(ds.ids[i]) for i in range(seed % step, n, step)])
        mirror.upsert([record(i, version=0) for i in range((seed + 50) % step, n, step)])
        ghost = record(0)
        mirror.upsert([_ghost(ghost) for _ in range(max(1, n // 200))])

    @contextlib.contextmanager
    def connect():
        with psycopg.connect(dsn, autocommit=True) as c:
            yield c

    out: dict = {
        "mirror": "VectorMirror (in-memory, float32 vectors)",
        "fill_seconds": round(fill, 1),
    }
    ds.matrix = None  # the mirror holds its own copies; repairs read vectors from Postgres
    gc.collect()
    runs = []
    for label, seed in (("drifted", 0), ("clean", None)):
        if seed is not None:
            drift(seed)
        gc.collect()
        rss0 = _status("VmRSS")
        reset = _reset_peak()
        t = time.perf_counter()
        rep = reconcile(connect, MIRROR, mirror, repair=True)
        secs = time.perf_counter() - t
        peak = _status("VmHWM") if reset else None
        runs.append(
            {
                "run": label,
                "seconds": round(secs, 2),
                "checked": rep.checked,
                "rate": rep.checked / secs,
                "rss_before_mb": round(rss0 / 2**20, 1),
                "rss_peak_mb": None if peak is None else round(peak / 2**20, 1),
                "rss_added_mb": None if peak is None else round((peak - rss0) / 2**20, 1),
                "report": rep.model_dump(mode="json"),
            }
        )
    drift(1)
    gc.collect()
    tracemalloc.start()
    reconcile(connect, MIRROR, mirror, repair=True)
    _, traced_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    out["runs"] = runs
    out["tracemalloc_peak_mb"] = round(traced_peak / 2**20, 1)
    out["points"] = mirror.count()
    out["threads"] = threading.active_count()
    return out


def _ghost(template: MirrorRecord) -> MirrorRecord:
    from dataclasses import replace

    return replace(template, fact_id=str(uuid.uuid4()), content="ghost")


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1:]), default=str))
