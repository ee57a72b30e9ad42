"""Mirror throughput: the raw vector-store clients (the baseline for sync), our mirror
adapters, and the sync worker's own benchmark when it exists.

* Raw clients: `mirror_points` points per run upserted straight into a Chroma collection
  (local persistent client) and a Qdrant collection (local in-process mode), in batches of
  256, vectors given. This is the ceiling a sync worker can approach.
* Our adapters (`ChromaMirror`, `QdrantMirror`) upserting the same points as
  `MirrorRecord`s: the adapter's cost on top of the client (encoding, and for Chroma the
  ``None`` values that remove stale metadata keys, from the collection's key registry).
  Raw and ours write batch by batch, alternating which goes first (runs alternate too):
  the ratio is not skewed by whichever side happens to run while the store compacts.
* benchmarks/sync.py (the sync worker's benchmark: throughput through the outbox and lag
  at a commit rate), imported lazily; skipped with a note while it does not exist.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import numpy as np

from benchmarks import data
from benchmarks.context import BenchContext
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

    # (raw label, raw upsert of one batch, our label, our upsert of one batch) per store
    pairs: list[tuple[str, Callable, str, Callable]] = []
    try:
        ch = chroma_client()
        raw_ch = RawChroma(ch, "raw_mirror", ctx.dim)
        ours_ch = ChromaMirror(ch, "ours_mirror", batch_size=BATCH)
        pairs.append(
            (
                "raw Chroma client upsert (local persistent)",
                raw_ch.upsert,
                "ChromaMirror.upsert (our adapter)",
                ours_ch.upsert,
            )
        )
    except PeerUnavailable as exc:
        res.notes.append(f"Chroma skipped: {exc}")
    try:
        qc = qdrant_client()
        raw_q = RawQdrant(qc, "raw_mirror", ctx.dim)
        ours_q = QdrantMirror(qc, "ours_mirror", batch_size=BATCH, dim=ctx.dim)
        pairs.append(
            (
                "raw Qdrant client upsert (local mode)",
                raw_q.upsert,
                "QdrantMirror.upsert (our adapter)",
                ours_q.upsert,
            )
        )
    except PeerUnavailable as exc:
        res.notes.append(f"Qdrant skipped: {exc}")
    rates: dict[str, list[float]] = {label: [] for p in pairs for label in (p[0], p[2])}
    for r in range(-1, ctx.sizes.runs):
        pts = _points(n if r >= 0 else max(10, n // 10), ctx.dim, r)
        recs = records(*pts)
        for raw_label, raw_up, our_label, our_up in pairs:
            t_raw, t_ours = _interleaved(raw_up, our_up, pts, recs, first_raw=r % 2 == 0)
            if r >= 0:
                rates[raw_label].append(len(recs) / t_raw)
                rates[our_label].append(len(recs) / t_ours)
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


def _interleaved(raw_up, our_up, pts, recs, *, first_raw: bool) -> tuple[float, float]:
    """(raw seconds, our seconds) writing the same points batch by batch, the two sides
    alternating which goes first, so that both see the same store state and the same
    machine (a store's background work, another process's burst) at the same moment."""
    ids, vecs, texts, metas = pts
    t_raw = t_ours = 0.0
    for i, s in enumerate(range(0, len(ids), BATCH)):
        e = s + BATCH
        raw_args = (ids[s:e], vecs[s:e], texts[s:e], metas[s:e])
        our_args = recs[s:e]
        for side in ("raw", "ours") if (i % 2 == 0) == first_raw else ("ours", "raw"):
            t0 = time.perf_counter()
            if side == "raw":
                raw_up(*raw_args)
                t_raw += time.perf_counter() - t0
            else:
                our_up(our_args)
                t_ours += time.perf_counter() - t0
    return t_raw, t_ours


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
    res.notes.append(
        "benchmarks/sync.py printed its own tables (kept in params.output of the JSON)"
    )
    return [res]
