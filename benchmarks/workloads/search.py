"""Top-10 search latency and recall@10 at the small (10k) and large (100k) sizes.

For each size and each vector kind (hashing vectors of templated texts, random unit
vectors), on the same bulk-loaded facts:
  * baseline: raw pgvector SQL (one statement, same index, same columns returned);
  * `MemoryStore.search` with a precomputed vector (like-for-like with the baseline), and
    with the question text (embeds inside, like the peers);
  * both again with ``hnsw.ef_search`` raised (set per connection), to show the recall it buys;
  * at the peer size only: LangGraph `PostgresStore.search`, MemState 0.5.1 (SQLite and
    Postgres storage, Chroma hook) and the raw Chroma client, loaded with the same facts
    and vectors (hashing kind only: the peers embed the question themselves).
Latencies are per query, pooled over all runs after one warm-up pass; within a run the
series take turns query by query (see measure_many), so machine noise hits all alike. Recall is measured
against exact search (numpy over the same float32 vectors): strict, and tie-aware (a hit
counts when its distance is no worse than the exact 10th distance), see data.recall_at_k.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass

import numpy as np

from benchmarks import data
from benchmarks.context import BenchContext, latencies_ms
from benchmarks.harness import BenchResult
from benchmarks.peers import PeerUnavailable
from benchmarks.peers.raw_pg import RawSearch
from memstate_pg import HashingEmbedder, MemoryStore

K = 10


class FixedModel:
    """An 'embedder' that only names a model: for searching with caller vectors of a model
    the store does not embed itself (the random unit vectors)."""

    def __init__(self, model: str, dim: int) -> None:
        self.model, self.dim = model, dim

    def embed(self, texts):  # pragma: no cover - never called with vectors given
        raise RuntimeError("FixedModel does not embed")


@contextmanager
def store_for(
    dsn: str, ds: data.Dataset, ef_search: int | None = None, max_size: int = 10
) -> Iterator[MemoryStore]:
    """A MemoryStore on a dataset's database, made as a user makes one (its own pool, so
    vectors travel in pgvector's binary format); `ef_search` is set on its connections."""
    emb = HashingEmbedder(dim=ds.dim) if ds.kind == "hashing" else FixedModel(ds.model, ds.dim)
    with MemoryStore(dsn, embedder=emb, min_size=1, max_size=max_size, ef_search=ef_search) as mem:
        yield mem


@dataclass
class Entry:
    """One series to measure: a label and a call(query index) -> returned fact ids."""

    label: str
    call: Callable[[int], list[str]]
    baseline: bool = False
    note: str = ""


def measure_many(
    ctx: BenchContext,
    result: BenchResult,
    ds: data.Dataset,
    qvecs: np.ndarray,
    entries: list[Entry],
    masks: list[np.ndarray] | None = None,
) -> None:
    """One warm-up pass per entry (its results give the recall), then `runs` passes in
    which the entries take turns query by query, the order rotating with the query, so
    load from elsewhere on the machine and cache warmth hit every entry alike. Adds one
    series per entry: latencies pooled over the passes, recall against exact search (over
    the rows of `masks[i]` for query i, when given)."""
    idx = list(range(len(qvecs)))
    warm = [latencies_ms(e.call, idx)[1] for e in entries]
    lat: list[list[float]] = [[] for _ in entries]
    order = list(range(len(entries)))
    for _ in range(ctx.sizes.runs):
        for i in idx:
            shift = i % len(order)
            for j in order[shift:] + order[:shift]:
                t0 = time.perf_counter()
                entries[j].call(i)
                lat[j].append((time.perf_counter() - t0) * 1000.0)
    for e, times, got in zip(entries, lat, warm, strict=True):
        strict, tie = zip(
            *(data.recall_at_k(ds, qvecs[i], got[i], K, masks[i] if masks else None) for i in idx),
            strict=True,
        )
        result.add(
            e.label,
            times,
            baseline=e.baseline,
            runs=ctx.sizes.runs,
            note=e.note,
            recall_tie=float(np.mean(tie)),
            recall_strict=float(np.mean(strict)),
        )


def measure(
    ctx: BenchContext,
    result: BenchResult,
    label: str,
    ds: data.Dataset,
    qvecs: np.ndarray,
    call: Callable[[int], list[str]],
    *,
    baseline: bool = False,
    masks: list[np.ndarray] | None = None,
    note: str = "",
) -> None:
    """`measure_many` of one entry."""
    measure_many(ctx, result, ds, qvecs, [Entry(label, call, baseline, note)], masks)


def run(ctx: BenchContext) -> list[BenchResult]:
    out = []
    sizes = [s for s in (ctx.sizes.small, ctx.sizes.large) if s]
    for size in dict.fromkeys(sizes):
        for kind in ctx.sizes.kinds:
            out.append(run_one(ctx, kind, size))
    return out


def run_one(ctx: BenchContext, kind: str, size: int) -> BenchResult:
    dsn, ds = ctx.dataset(kind, size)
    qtexts, qvecs = data.query_vectors(ds, ctx.sizes.queries)
    qlits = [data.vector_literal(v) for v in qvecs]
    res = BenchResult(
        f"search_{kind}_{size}",
        f"Search top-{K}, {size:,} facts, {kind} vectors",
        "ms",
        False,
        "per query",
        params={
            "facts": size,
            "dim": ds.dim,
            "k": K,
            "queries": len(qvecs),
            "runs": ctx.sizes.runs,
            "hnsw": "m=16 ef_construction=64",
        },
    )
    ctx.log(f"search: {size:,} {kind}")
    with ExitStack() as stack:
        raw = RawSearch(dsn, dim=ds.dim, model=ds.model, namespace=ds.namespace)
        stack.callback(raw.close)
        mem = stack.enter_context(store_for(dsn, ds))
        entries = [
            Entry(
                "raw pgvector SQL (ef_search=40)", lambda i: raw.search(qlits[i], K), baseline=True
            ),
            Entry(
                "MemoryStore.search (vector given)",
                lambda i: ids_of(mem.search(qvecs[i].tolist(), k=K, namespace=ds.namespace)),
            ),
        ]
        if kind == "hashing":
            entries.append(
                Entry(
                    "MemoryStore.search (embeds the question)",
                    lambda i: ids_of(mem.search(qtexts[i], k=K, namespace=ds.namespace)),
                )
            )
        for ef in ctx.sizes.ef_search:
            if ef == 40:
                continue
            raw_ef = RawSearch(
                dsn,
                dim=ds.dim,
                model=ds.model,
                namespace=ds.namespace,
                settings={"hnsw.ef_search": str(ef)},
            )
            stack.callback(raw_ef.close)
            mem_ef = stack.enter_context(store_for(dsn, ds, ef_search=ef))
            entries += [
                Entry(
                    f"raw pgvector SQL (ef_search={ef})", lambda i, r=raw_ef: r.search(qlits[i], K)
                ),
                Entry(
                    f"MemoryStore.search (vector given, ef_search={ef})",
                    lambda i, m=mem_ef: ids_of(
                        m.search(qvecs[i].tolist(), k=K, namespace=ds.namespace)
                    ),
                ),
            ]
        measure_many(ctx, res, ds, qvecs, entries)
    if kind == "hashing" and size == ctx.sizes.peer_search:
        search_peers(ctx, res, ds, qtexts, qvecs)
    if kind == "random":
        res.notes.append(
            "random 384-d unit vectors are HNSW's worst case (distance concentration: the exact "
            "10th neighbour is at ≈0.83 when the median is 1.0), so recall@10 at m=16, "
            "ef_construction=64 is low and rises with ef_search (measured at 10k: 0.34 at 40, "
            "0.77 at 200, 1.0 at 1000); the hashing rows show recall on structured vectors"
        )
    _targets(res, size, ctx)
    return res


def ids_of(hits) -> list[str]:
    return [str(h.fact.id) for h in hits]


def search_peers(
    ctx: BenchContext, res: BenchResult, ds: data.Dataset, qtexts: list[str], qvecs: np.ndarray
) -> None:
    """LangGraph, MemState 0.5.1 and raw Chroma, each loaded with the dataset's facts."""
    from benchmarks.peers.langgraph_peer import LangGraphPeer
    from benchmarks.peers.memstate_peer import MemStatePeer
    from benchmarks.peers.vectorstores import RawChroma, chroma_client

    payloads = [data.payload_of(t, i) for i, t in enumerate(ds.texts)]
    keys = [str(fid) for fid in ds.ids]
    with ctx.database("search_peers", migrate=False) as pdsn:
        try:
            lg = LangGraphPeer(pdsn, dim=ds.dim)
        except PeerUnavailable as exc:
            res.notes.append(f"LangGraph skipped: {exc}")
        else:
            try:
                ctx.log(f"  loading LangGraph PostgresStore with {ds.size:,} items…")
                for s in range(0, ds.size, 1000):
                    lg.put_many(
                        "bench", list(zip(keys[s : s + 1000], payloads[s : s + 1000], strict=True))
                    )
                measure(
                    ctx,
                    res,
                    f"{lg.label} (embeds the question)",
                    ds,
                    qvecs,
                    lambda i: lg.search("bench", qtexts[i], K),
                )
            finally:
                lg.close()
        for backend in ("sqlite", "postgres"):
            try:
                ms = MemStatePeer(backend, dsn=pdsn, dim=ds.dim, collection=f"search_{backend}")
            except PeerUnavailable as exc:
                res.notes.append(f"MemState 0.5.1 ({backend}) skipped: {exc}")
                continue
            try:
                ctx.log(f"  loading {ms.label} with {ds.size:,} facts…")
                ms.load(payloads, ids=keys)
                measure(
                    ctx,
                    res,
                    f"{ms.label} (embeds the question)",
                    ds,
                    qvecs,
                    lambda i, ms=ms: ms.search(qtexts[i], K),
                )
            finally:
                ms.close()
    try:
        ch = RawChroma(chroma_client(), "search_raw", ds.dim)
    except PeerUnavailable as exc:
        res.notes.append(f"raw Chroma skipped: {exc}")
        return
    for s in range(0, ds.size, 2000):
        ch.upsert(
            keys[s : s + 2000],
            ds.matrix[s : s + 2000],
            ds.texts[s : s + 2000],
            [{"bucket": int(b)} for b in ds.buckets[s : s + 2000]],
        )
    measure(
        ctx,
        res,
        "raw Chroma client query (vector given, local persistent)",
        ds,
        qvecs,
        lambda i: ch.query(qvecs[i], K),
    )


def _targets(res: BenchResult, size: int, ctx: BenchContext) -> None:
    ours = res.series_by("MemoryStore.search (vector given)")
    if ours is None:
        return
    r = res.ratio(ours)
    res.target(f"search p50 vs raw SQL at {size:,}", r, "<= 1.2x", None if r is None else r <= 1.2)
    rec = ours.extra.get("recall_tie")
    res.target(
        f"tie-aware recall@10 at {size:,}", rec, ">= 0.95", None if rec is None else rec >= 0.95
    )
    emb = res.series_by("MemoryStore.search (embeds the question)")
    lg = next((s for s in res.series if s.label.startswith("LangGraph")), None)
    if emb and lg:
        x = lg.summary()["median"] / emb.summary()["median"]
        res.target(
            "search speed vs LangGraph PostgresStore (their p50 / ours)", x, ">= 1.0x", x >= 1.0
        )
