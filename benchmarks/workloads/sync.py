"""Mirror throughput: the raw vector-store clients (the baseline for sync), our mirror
adapters, and the sync worker's own benchmark when it exists.

* Raw clients: `mirror_points` points per run upserted straight into a Chroma collection
  (local persistent client) and a Qdrant collection (local in-process mode), in batches of
  256, vectors given. This is the ceiling a sync worker can approach.
* Our adapters (`ChromaMirror`, `QdrantMirror`) upserting the same points as
  `MirrorRecord`s: the adapter's cost on top of the client (Chroma's adapter reads the
  existing metadata keys of each batch first, to make an upsert replace the point).
* benchmarks/sync.py (the sync worker's benchmark: throughput through the outbox and lag
  at a commit rate), imported lazily; skipped with a note while it does not exist.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import numpy as np

from benchmarks import data
from benchmarks.context import BenchContext, timed_rate
from benchmarks.harness import BenchResult
from benchmarks.peers import PeerUnavailable
from benchmarks.peers.vectorstores import RawChroma, RawQdrant, chroma_client, qdrant_client

BATCH = 256


def run(ctx: BenchContext) -> list[BenchResult]:
    from benchmarks.workloads.delegated import guarded

    if not ctx.sizes.delegate:
        return [
            mirror_clients(ctx),
            BenchResult(
                "sync",
                "Sync worker throughput and lag",
                "",
                True,
                "",
                skipped="not run in quick mode (--delegate to run)",
            ),
        ]
    return [
        mirror_clients(ctx),
        *guarded("sync", "Sync worker throughput and lag", lambda: delegate(ctx)),
    ]


def _points(n: int, dim: int, run: int) -> tuple[list[str], np.ndarray, list[str], list[dict]]:
    texts = [data.fact_text(f"mirror{run}", i) for i in range(n)]
    ids = [str(uuid.uuid5(uuid.NAMESPACE_OID, f"{run}-{i}")) for i in range(n)]
    metas = [
        {"bucket": i % data.FILTER_BUCKETS, "version": 1, "namespace": "bench", "type": "note"}
        for i in range(n)
    ]
    return ids, data.hashing_vectors(texts, dim), texts, metas


def mirror_clients(ctx: BenchContext) -> BenchResult:
    n = ctx.sizes.mirror_points
    res = BenchResult(
        "mirror_write",
        f"Mirror writes ({n:,} points per run, batches of {BATCH})",
        "points/s",
        True,
        "per run",
        params={"points": n, "batch": BATCH, "dim": ctx.dim, "runs": ctx.sizes.runs},
    )
    from memstate_pg.mirrors import ChromaMirror, MirrorRecord, QdrantMirror

    def records(ids, vecs, texts, metas):
        return [
            MirrorRecord(
                fact_id=i,
                version=1,
                namespace="bench",
                type="note",
                embedding=v.tolist(),
                embedding_model="hashing-v1-384",
                content=t,
                metadata={"bucket": m["bucket"]},
            )
            for i, v, t, m in zip(ids, vecs, texts, metas, strict=True)
        ]

    makers: dict[str, Callable[[], Callable[[int], Callable[[], int]]]] = {}
    try:
        ch = chroma_client()
        raw_ch = RawChroma(ch, "raw_mirror", ctx.dim)
        ours_ch = ChromaMirror(ch, "ours_mirror", batch_size=BATCH)
        makers["raw Chroma client upsert (local persistent)"] = lambda: _batched(raw_ch.upsert)
        makers["ChromaMirror.upsert (our adapter)"] = lambda: _records(ours_ch.upsert, records)
    except PeerUnavailable as exc:
        res.notes.append(f"Chroma skipped: {exc}")
    try:
        qc = qdrant_client()
        raw_q = RawQdrant(qc, "raw_mirror", ctx.dim)
        ours_q = QdrantMirror(qc, "ours_mirror", batch_size=BATCH, dim=ctx.dim)
        makers["raw Qdrant client upsert (local mode)"] = lambda: _batched(raw_q.upsert)
        makers["QdrantMirror.upsert (our adapter)"] = lambda: _records(ours_q.upsert, records)
    except PeerUnavailable as exc:
        res.notes.append(f"Qdrant skipped: {exc}")
    rates: dict[str, list[float]] = {k: [] for k in makers}
    preps = {k: make() for k, make in makers.items()}
    for r in range(-1, ctx.sizes.runs):
        pts = _points(n if r >= 0 else max(10, n // 10), ctx.dim, r)
        for label, prep in preps.items():
            rate = timed_rate(prep(pts))
            if r >= 0:
                rates[label].append(rate)
    for label, values in rates.items():
        res.add(label, values, baseline=label.startswith("raw Chroma"), runs=len(values))
    for ours, raw in (
        ("ChromaMirror.upsert (our adapter)", "raw Chroma client upsert (local persistent)"),
        ("QdrantMirror.upsert (our adapter)", "raw Qdrant client upsert (local mode)"),
    ):
        a, b = res.series_by(ours), res.series_by(raw)
        if a and b:
            x = a.summary()["median"] / b.summary()["median"]
            res.target(
                f"{ours} vs {raw}", x, ">= 0.8x (adapter share of the sync target)", x >= 0.8
            )
    res.notes.append(
        "Qdrant runs in local in-process mode here (no server): numpy-backed, not "
        "representative of a Qdrant server's speed"
    )
    return res


def _batched(upsert) -> Callable:
    def prep(pts) -> Callable[[], int]:
        ids, vecs, texts, metas = pts

        def go() -> int:
            for s in range(0, len(ids), BATCH):
                upsert(
                    ids[s : s + BATCH],
                    vecs[s : s + BATCH],
                    texts[s : s + BATCH],
                    metas[s : s + BATCH],
                )
            return len(ids)

        return go

    return prep


def _records(upsert, records) -> Callable:
    def prep(pts) -> Callable[[], int]:
        recs = records(*pts)

        def go() -> int:
            upsert(recs)
            return len(recs)

        return go

    return prep


SYNC_QUICK = ["--facts", "100", "--runs", "1", "--lag-seconds", "1", "--rate", "50"]


def delegate(ctx: BenchContext) -> list[BenchResult]:
    """Run benchmarks/sync.py (the sync engineer's) if it exists, on this run's server:
    `run(ctx)` returning BenchResults if it has one, else `main(argv)`, whose printed
    report is kept in the JSON (params.output) and whose return value in params.report."""
    import contextlib
    import io
    import os
    import sys

    from benchmarks.workloads.delegated import load

    title = "Sync worker throughput and lag (benchmarks/sync.py)"
    mod, skipped = load("benchmarks.sync", "sync", title)
    if mod is None:
        return skipped
    if hasattr(mod, "run"):
        return list(mod.run(ctx))
    argv = SYNC_QUICK if ctx.quick else list(ctx.sizes.sync_args)
    res = BenchResult("sync", title, "", True, "", params={"argv": argv})
    buf = io.StringIO()

    class Tee(io.TextIOBase):
        def write(self, text: str) -> int:
            buf.write(text)
            return sys.__stdout__.write(text)

    previous = os.environ.get("MEMSTATE_DSN")
    os.environ["MEMSTATE_DSN"] = ctx.admin_dsn
    try:
        with contextlib.redirect_stdout(Tee()):
            out = mod.main(argv)
    finally:
        if previous is None:
            os.environ.pop("MEMSTATE_DSN", None)
        else:
            os.environ["MEMSTATE_DSN"] = previous
    res.params["report"] = out if isinstance(out, dict | list) else repr(out)
    res.params["output"] = buf.getvalue()
    res.notes.append(
        "benchmarks/sync.py printed its own tables (kept in params.output of the JSON)"
    )
    return [res]
