"""Per-namespace search: many small tenants in one table (2,000 namespaces x 100 facts).

The multi-tenant shape of an agent memory: every user is a namespace, each holds a hundred
facts, all share memstate.facts and one HNSW index per model. A search names one
namespace. The right answer is the exact top-10 of that namespace (100 candidates are
cheaper to sort than any index walk, and a graph walk filtered down to 0.05% of the rows
would miss), so:

  * baseline: raw SQL, exact top-10 of the namespace (``ORDER BY embedding <=> q``: the
    plain operator, not the index expression, so PostgreSQL takes the (namespace, type)
    btree and sorts the namespace's rows);
  * `MemoryStore.search(vector, namespace=…)` (vector given).

Random unit vectors (no ties: strict recall is the recall); query i searches namespace
(i x 7919) mod 2000, so consecutive queries hit unrelated tenants. Recall is against exact
search over that namespace's rows. Loaded with COPY (benchmarks/data.py,
`bulk_load_namespaces`), HNSW built once afterwards.
"""

from __future__ import annotations

from contextlib import ExitStack

import numpy as np
import psycopg
from psycopg.rows import dict_row

from benchmarks import data
from benchmarks.context import BenchContext
from benchmarks.harness import BenchResult
from benchmarks.workloads.search import Entry, K, ids_of, measure_many, store_for

NAMESPACES, PER_NAMESPACE = 2000, 100
QUICK = (20, 30)

EXACT_SQL = (
    "SELECT fact_id, 1 - (embedding <=> %(q)s::vector) AS score, payload, content "
    "FROM memstate.facts WHERE embedding_model = %(model)s AND namespace = %(ns)s "
    "ORDER BY embedding <=> %(q)s::vector LIMIT %(k)s"
)


def run(ctx: BenchContext) -> list[BenchResult]:
    namespaces, per = QUICK if ctx.quick else (NAMESPACES, PER_NAMESPACE)
    kind = "random"
    res = BenchResult(
        f"pernamespace_{namespaces}x{per}",
        f"Per-namespace search top-{K}, {namespaces:,} namespaces x {per} facts, {kind} vectors",
        "ms",
        False,
        "per query",
        params={
            "namespaces": namespaces,
            "facts_per_namespace": per,
            "facts": namespaces * per,
            "dim": ctx.dim,
            "k": K,
            "queries": ctx.sizes.queries,
            "runs": ctx.sizes.runs,
        },
    )
    with ctx.database("pernamespace") as dsn:
        ctx.log(f"per-namespace search: loading {namespaces:,} x {per} {kind} facts…")
        ds = data.bulk_load_namespaces(
            dsn, kind=kind, namespaces=namespaces, per_namespace=per, dim=ctx.dim
        )
        ctx.log(f"  loaded in {ds.load_seconds:.1f} s, HNSW built in {ds.index_seconds:.1f} s")
        assert ds.namespace_of is not None
        _, qvecs = data.query_vectors(ds, ctx.sizes.queries, seed=17)
        qlits = [data.vector_literal(v) for v in qvecs]
        tenant = [(i * 7919) % namespaces for i in range(len(qvecs))]
        names = [data.namespace_name(ds.namespace, j) for j in tenant]
        masks = [ds.namespace_of == j for j in tenant]
        with ExitStack() as stack:
            raw = stack.enter_context(psycopg.connect(dsn, autocommit=True, row_factory=dict_row))

            def exact(i: int) -> list[str]:
                rows = raw.execute(
                    EXACT_SQL, {"q": qlits[i], "model": ds.model, "ns": names[i], "k": K}
                ).fetchall()
                return [str(r["fact_id"]) for r in rows]

            mem = stack.enter_context(store_for(dsn, ds))
            vectors = [v.tolist() for v in qvecs]
            entries = [
                Entry("raw SQL, exact top-10 of the namespace", exact, baseline=True),
                Entry(
                    "MemoryStore.search (vector given)",
                    lambda i: ids_of(mem.search(vectors[i], k=K, namespace=names[i])),
                ),
            ]
            measure_many(ctx, res, ds, np.asarray(qvecs), entries, masks)
    ours = res.series_by("MemoryStore.search (vector given)")
    if ours is not None:
        r = res.ratio(ours)
        res.target(
            "per-namespace search p50 vs exact raw SQL", r, "<= 1.2x", r is not None and r <= 1.2
        )
        rec = ours.extra.get("recall_strict")
        res.target("per-namespace recall@10", rec, "1.0", rec is not None and rec >= 1.0)
    return [res]
