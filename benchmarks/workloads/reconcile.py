"""Reconciliation of a mirror holding `reconcile` facts (default 100k), with drift.

The facts are the bulk-loaded dataset; the mirror is the in-memory mirror with a direct
`versions()` (so the figures are the cost of *our* side: the keyset pages over Postgres,
the version comparisons, the re-reads and repairs), registered in memstate.mirrors and
filled with every fact; one more series runs the InMemoryMirror as shipped. Before
each run we inject drift: 1% of points deleted (missing), 1% at an older version (stale),
0.5% points that match no fact (ghosts). Series (facts checked per second):
  * baseline: the floor of any reconciliation — one SELECT of every (fact_id, version),
    one full scan of the mirror, a set difference in Python (no repair, unbounded memory);
  * `memstate_pg.sync.reconcile(..., repair=True)` on the drifted mirror;
  * the same on a clean mirror (nothing to repair).
Skipped with a note while memstate_pg.sync.reconcile does not exist.
"""

from __future__ import annotations

import contextlib
import time
import uuid

import psycopg

from benchmarks.context import BenchContext
from benchmarks.harness import BenchResult

MIRROR = "bench_recon"


def versions_mirror_class():
    """InMemoryMirror with a direct `versions()`: the shipped one inherits Mirror.versions,
    which goes through get() and deep-copies every point's metadata (≈ 45% of a 100k
    reconcile in a profile). A real store answers versions from its index; this stand-in
    does the same, so the figures measure the reconciliation, not the test double.
    (Proposed for memstate_pg/mirrors/memory.py.)"""
    from memstate_pg.mirrors import InMemoryMirror

    class VersionsMirror(InMemoryMirror):
        def versions(self, fact_ids):
            with self._lock:
                return {fid: self._points[fid].version for fid in fact_ids if fid in self._points}

    return VersionsMirror


def run(ctx: BenchContext) -> list[BenchResult]:
    n = ctx.sizes.reconcile
    res = BenchResult(
        "reconcile",
        f"Reconcile a mirror of {n:,} facts (in-memory mirror)",
        "facts/s",
        True,
        "per run",
        params={
            "facts": n,
            "runs": min(ctx.sizes.runs, 3),
            "dim": ctx.dim,
            "drift": "1% missing, 1% stale, 0.5% ghosts",
        },
    )
    if not n:
        res.skipped = "size 0"
        return [res]
    try:
        from memstate_pg.mirrors import InMemoryMirror, MirrorRecord
        from memstate_pg.sync.reconcile import reconcile
    except ImportError as exc:
        res.skipped = f"memstate_pg.sync.reconcile not available ({exc})"
        return [res]
    dsn, ds = ctx.dataset("hashing", n, with_index=False)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO memstate.mirrors (name, kind) VALUES (%s, 'memory') ON CONFLICT DO NOTHING",
            (MIRROR,),
        )
    mirror = versions_mirror_class()(max_batch_size=1000)

    def record(i: int, version: int = 1) -> MirrorRecord:
        return MirrorRecord(
            fact_id=str(ds.ids[i]),
            version=version,
            namespace=ds.namespace,
            type="note",
            embedding=ds.matrix[i].tolist(),
            embedding_model=ds.model,
            content=ds.texts[i],
            metadata={},
        )

    t0 = time.perf_counter()
    mirror.upsert([record(i) for i in range(n)])
    res.params["mirror_fill_points_per_s"] = round(n / (time.perf_counter() - t0))

    @contextlib.contextmanager
    def connect():
        with psycopg.connect(dsn, autocommit=True) as c:
            yield c

    def drift(seed: int) -> None:
        step = 100
        mirror.delete([str(ds.ids[i]) for i in range(seed % step, n, step)])
        mirror.upsert([record(i, version=0) for i in range((seed + 50) % step, n, step)])
        mirror.upsert(
            [
                MirrorRecord(
                    fact_id=str(uuid.uuid4()),
                    version=1,
                    namespace=ds.namespace,
                    type="note",
                    embedding=ds.matrix[0].tolist(),
                    embedding_model=ds.model,
                    content="ghost",
                    metadata={},
                )
                for _ in range(max(1, n // 200))
            ]
        )

    def floor() -> int:
        with psycopg.connect(dsn) as c:
            pg = dict(c.execute("SELECT fact_id::text, version FROM memstate.facts").fetchall())
        seen = {}
        for page in mirror.scan(1000):
            seen.update(page)
        diff = {k for k, v in pg.items() if seen.get(k) != v} | (seen.keys() - pg.keys())
        return len(pg) + 0 * len(diff)

    runs = min(ctx.sizes.runs, 3)
    rates = {"floor": [], "drifted": [], "clean": [], "shipped": []}
    shipped = InMemoryMirror(max_batch_size=1000)
    shipped.upsert([record(i) for i in range(n)])
    reports = []
    for r in range(runs):
        drift(r)
        rates["floor"].append(n / _secs(floor))
        t = time.perf_counter()
        rep = reconcile(connect, MIRROR, mirror, repair=True)
        rates["drifted"].append(rep.checked / (time.perf_counter() - t))
        reports.append(rep.model_dump())
        t = time.perf_counter()
        rep2 = reconcile(connect, MIRROR, mirror, repair=True)
        rates["clean"].append(rep2.checked / (time.perf_counter() - t))
        t = time.perf_counter()
        rep3 = reconcile(connect, MIRROR, shipped, repair=True)
        rates["shipped"].append(rep3.checked / (time.perf_counter() - t))
        ctx.log(f"reconcile run {r + 1}/{runs}: {rep.model_dump()}; clean pass drift={rep2.drift}")
    res.add(
        "floor: one SELECT + full mirror scan + set difference",
        rates["floor"],
        baseline=True,
        runs=runs,
    )
    res.add(
        "reconcile(repair=True), drifted mirror",
        rates["drifted"],
        runs=runs,
        missing=reports[-1]["missing"],
        stale=reports[-1]["stale"],
        ghosts=reports[-1]["ghosts"],
        repaired=reports[-1]["repaired"],
    )
    res.add("reconcile(repair=True), clean mirror", rates["clean"], runs=runs)
    res.add(
        "reconcile(repair=True), clean, InMemoryMirror as shipped",
        rates["shipped"],
        runs=runs,
        note="versions() via get(): deep copies",
    )
    res.notes.append(
        "mirror: InMemoryMirror with a direct versions() (see versions_mirror_class), so the "
        "figures are the cost of the reconciliation itself"
    )
    res.params["reports"] = reports
    return [res]


def _secs(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t
