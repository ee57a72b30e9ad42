"""Filtered search: top-10 with a payload filter that matches 1% of the facts.

Every fact has ``payload.bucket = i % 100``; query j filters on bucket j % 100. On the
large dataset (both vector kinds) we measure the plans a user could get:
  * baseline: raw SQL as written (``payload @> filter`` + ORDER BY distance), the planner's
    choice; with a prepared statement (psycopg prepares after 5 runs) the generic plan
    puts the filter on top of an HNSW scan: fast, but it returns < 10 rows;
  * raw SQL with HNSW scans disabled: a sequential scan + sort, what you get without
    a usable index;
  * raw SQL, HNSW + ``hnsw.iterative_scan = relaxed_order`` (pgvector 0.8): full recall,
    but it walks many tuples when the filter is selective;
  * raw SQL, pre-filter: candidates from the GIN index in a MATERIALIZED CTE, exact sort;
  * `MemoryStore.search(filters=…)` (memstate.search: GIN-collected candidates under the
    `search_exact_max` cap sorted exactly, the iterative HNSW scan above it).
Recall is tie-aware against exact search over the facts that match the filter.
"""

from __future__ import annotations

import json
from contextlib import ExitStack

from benchmarks import data
from benchmarks.context import BenchContext
from benchmarks.harness import BenchResult
from benchmarks.peers.raw_pg import RawSearch
from benchmarks.workloads.search import Entry, K, ids_of, measure_many, store_for

PREFILTER_SQL = (
    "WITH c AS MATERIALIZED (SELECT fact_id, payload, content, {expr} AS distance FROM memstate.facts "
    "WHERE embedding_model = %(model)s AND namespace = %(ns)s AND payload @> %(filter)s::jsonb) "
    "SELECT fact_id, 1 - distance AS score, payload, content FROM c ORDER BY distance LIMIT %(k)s"
)


def run(ctx: BenchContext) -> list[BenchResult]:
    size = ctx.sizes.large or ctx.sizes.small
    return [run_one(ctx, kind, size) for kind in ctx.sizes.kinds]


def run_one(ctx: BenchContext, kind: str, size: int) -> BenchResult:
    dsn, ds = ctx.dataset(kind, size)
    _, qvecs = data.query_vectors(ds, ctx.sizes.filtered_queries)
    qlits = [data.vector_literal(v) for v in qvecs]
    buckets = [j % data.FILTER_BUCKETS for j in range(len(qvecs))]
    filters = [json.dumps({"bucket": b}) for b in buckets]
    masks = [ds.buckets == b for b in buckets]
    res = BenchResult(
        f"filtered_{kind}_{size}",
        f"Filtered search top-{K} (1% payload filter), {size:,} facts, {kind} vectors",
        "ms",
        False,
        "per query",
        params={
            "facts": size,
            "dim": ds.dim,
            "k": K,
            "selectivity": 1 / data.FILTER_BUCKETS,
            "queries": len(qvecs),
            "runs": ctx.sizes.runs,
        },
    )
    ctx.log(f"filtered search: {size:,} {kind}")

    variants = [
        ("raw SQL, planner's choice (prepared)", {}, True, "generic plan: filter on top of HNSW"),
        (
            "raw SQL, no HNSW (seq scan + sort)",
            {"enable_indexscan": "off", "enable_bitmapscan": "off"},
            False,
            "",
        ),
        (
            "raw SQL, HNSW + iterative_scan=relaxed_order",
            {
                "enable_bitmapscan": "off",
                "enable_seqscan": "off",
                "hnsw.iterative_scan": "relaxed_order",
            },
            False,
            "",
        ),
    ]
    with ExitStack() as stack:
        entries = []
        for label, settings, baseline, note in variants:
            raw = RawSearch(
                dsn,
                dim=ds.dim,
                model=ds.model,
                namespace=ds.namespace,
                settings=settings,
                with_filter=True,
            )
            stack.callback(raw.close)
            entries.append(
                Entry(label, lambda i, r=raw: r.search(qlits[i], K, filters[i]), baseline, note)
            )
        pre = RawSearch(dsn, dim=ds.dim, model=ds.model, namespace=ds.namespace)
        stack.callback(pre.close)
        pre.sql = PREFILTER_SQL.format(
            expr=f"embedding::vector({ds.dim}) <=> %(q)s::vector({ds.dim})"
        )
        entries.append(
            Entry(
                "raw SQL, GIN pre-filter in a MATERIALIZED CTE + exact sort",
                lambda i: pre.search(qlits[i], K, filters[i]),
            )
        )
        mem = stack.enter_context(store_for(dsn, ds))

        def shipped(i: int) -> list[str]:
            return ids_of(
                mem.search(
                    qvecs[i].tolist(), k=K, namespace=ds.namespace, filters={"bucket": buckets[i]}
                )
            )

        entries += [Entry("MemoryStore.search(filters=…) as shipped", shipped)]
        measure_many(ctx, res, ds, qvecs, entries, masks)
    for label in ("MemoryStore.search(filters=…) as shipped",):
        s = res.series_by(label)
        if s:
            p50, rec = s.summary()["median"], s.extra["recall_tie"]
            res.target(f"{label}: p50 ms at {size:,}", p50, "< 10 ms", p50 < 10)
            res.target(f"{label}: recall@10", rec, ">= 0.95", rec >= 0.95)
    return res
