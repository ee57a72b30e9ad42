"""Write throughput: single-fact commits and batched commits (1000 facts per transaction).

Single commits/s, baseline the raw psycopg floor (three pipelined inserts per commit, from
benchmarks/commit.py), against:
  * `MemoryStore.commit` given the vector (the like-for-like comparison with the floor);
  * `MemoryStore.commit` embedding inside (like-for-like with the peers, which all embed);
  * MemState 0.5.1 with SQLite + Chroma hook, and with Postgres + Chroma hook;
  * LangGraph `PostgresStore.put`.
Batched facts/s, baseline a psycopg COPY of the same rows, against `commit_many` (vectors
given, and embedding inside) and LangGraph's `batch` of 1000 PutOps. MemState has no batch
API. Every peer gets one warm-up and then `runs` rounds, interleaved (A, B, C, A, B, C…),
each round on fresh texts, so index growth and background noise hit every peer alike.
"""

from __future__ import annotations

from collections.abc import Callable

import psycopg

from benchmarks import data
from benchmarks.context import BenchContext, timed_rate
from benchmarks.harness import BenchResult
from benchmarks.peers import PeerUnavailable, raw_pg
from memstate_pg import Fact, HashingEmbedder, MemoryStore


def _vec_items(prefix: str, n: int, dim: int) -> list[tuple[str, str]]:
    """(text, vector literal) pairs, as benchmarks/commit.py's floor takes them."""
    texts = [data.fact_text(prefix, i) for i in range(n)]
    return list(
        zip(texts, [data.vector_literal(v) for v in data.hashing_vectors(texts, dim)], strict=True)
    )


def _facts(prefix: str, n: int, dim: int, *, with_vectors: bool) -> list[Fact]:
    texts = [data.fact_text(prefix, i) for i in range(n)]
    vecs = data.hashing_vectors(texts, dim) if with_vectors else [None] * n
    return [
        Fact(
            type="note", payload=data.payload_of(t, i), embedding=None if v is None else v.tolist()
        )
        for i, (t, v) in enumerate(zip(texts, vecs, strict=True))
    ]


def run(ctx: BenchContext) -> list[BenchResult]:
    sz = ctx.sizes
    single = BenchResult(
        "commit_single",
        "Single-fact commits",
        "commits/s",
        True,
        "per run",
        params={"commits_per_run": sz.single, "runs": sz.runs, "dim": ctx.dim},
    )
    batched = BenchResult(
        "commit_batch",
        f"Batched commits ({sz.batch} facts per transaction)",
        "facts/s",
        True,
        "per run",
        params={"batch": sz.batch, "runs": sz.runs, "dim": ctx.dim},
    )
    with ctx.database("commits") as dsn:
        mem = MemoryStore(dsn, embedder=HashingEmbedder(dim=ctx.dim), max_size=2)
        raw = psycopg.connect(dsn, autocommit=True)
        peers: list = []
        closers: list[Callable[[], None]] = [mem.close, raw.close]
        try:
            singles: dict[str, Prepare] = {
                "raw psycopg floor (3 inserts, pipelined)": lambda r, n: _bind(
                    raw_pg.floor_single, raw, f"fs{r}", _vec_items(f"fs{r}", n, ctx.dim)
                ),
                "MemoryStore.commit (vector given)": _ours_single(mem, ctx.dim, True),
                "MemoryStore.commit (embeds inside)": _ours_single(mem, ctx.dim, False),
            }
            batches: dict[str, Prepare] = {
                "raw psycopg COPY": lambda r, n: _bind(
                    raw_pg.floor_copy, raw, f"cp{r}", _vec_items(f"cp{r}", n, ctx.dim)
                ),
                "MemoryStore.commit_many (vectors given)": _ours_batch(mem, ctx.dim, True),
                "MemoryStore.commit_many (embeds inside)": _ours_batch(mem, ctx.dim, False),
            }
            _add_peers(ctx, dsn, singles, batches, single, batched, peers, closers)
            _interleave(
                ctx, singles, sz.single, single, baseline="raw psycopg floor (3 inserts, pipelined)"
            )
            _interleave(ctx, batches, sz.batch, batched, baseline="raw psycopg COPY")
        finally:
            for close in reversed(closers):
                try:
                    close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass
    _targets(single, batched)
    single.notes.append(
        "the floor and 'vector given' get precomputed vectors; MemState, LangGraph and "
        "'embeds inside' embed each text with HashingEmbedder during the commit"
    )
    return [single, batched]


Prepare = Callable[[int, int], Callable[[], int]]
"""prepare(round, n) builds a round's inputs (untimed) and returns the timed action,
which returns how many operations it did."""


def _bind(fn: Callable[..., int], *args) -> Callable[[], int]:
    return lambda: fn(*args)


def _ours_single(mem: MemoryStore, dim: int, with_vectors: bool) -> Prepare:
    def prepare(r: int, n: int) -> Callable[[], int]:
        ns = f"ms{int(with_vectors)}_{r}"
        facts = _facts(ns, n, dim, with_vectors=with_vectors)
        return lambda: len([mem.commit(f, namespace=ns) for f in facts])

    return prepare


def _ours_batch(mem: MemoryStore, dim: int, with_vectors: bool) -> Prepare:
    def prepare(r: int, n: int) -> Callable[[], int]:
        ns = f"mb{int(with_vectors)}_{r}"
        facts = _facts(ns, n, dim, with_vectors=with_vectors)
        return lambda: len(mem.commit_many(facts, namespace=ns))

    return prepare


def _add_peers(ctx, dsn, singles, batches, single, batched, peers, closers) -> None:
    from benchmarks.peers.langgraph_peer import LangGraphPeer
    from benchmarks.peers.memstate_peer import MemStatePeer

    for backend in ("sqlite", "postgres"):
        try:
            p = MemStatePeer(backend, dsn=dsn, dim=ctx.dim, collection=f"commits_{backend}")
        except PeerUnavailable as exc:
            single.notes.append(f"MemState 0.5.1 ({backend}) skipped: {exc}")
            continue
        peers.append(p)
        closers.append(p.close)
        singles[p.label] = lambda r, n, p=p, b=backend: _bind(
            lambda ps: len([p.commit(x) for x in ps]), _payloads(f"{b}{r}", n)
        )
    try:
        lg = LangGraphPeer(dsn, dim=ctx.dim)
    except PeerUnavailable as exc:
        single.notes.append(f"LangGraph skipped: {exc}")
        batched.notes.append(f"LangGraph skipped: {exc}")
        return
    closers.append(lg.close)
    singles[f"{lg.label} put"] = lambda r, n: _bind(
        lambda ps: len([lg.put(f"lg{r}", f"k{i}", x) for i, x in enumerate(ps)]),
        _payloads(f"lg{r}", n),
    )
    batches[f"{lg.label} batch of PutOps"] = lambda r, n: _bind(
        lg.put_many, f"lgb{r}", [(f"k{i}", x) for i, x in enumerate(_payloads(f"lgb{r}", n))]
    )
    batched.notes.append("MemState 0.5.1 has no batch API: not in this table")


def _payloads(prefix: str, n: int) -> list[dict]:
    return [data.payload_of(data.fact_text(prefix, i), i) for i in range(n)]


def _interleave(
    ctx: BenchContext, fns: dict[str, Prepare], n: int, result: BenchResult, *, baseline: str
) -> None:
    """One warm-up round (a tenth of the size), then `runs` interleaved rounds."""
    rates: dict[str, list[float]] = {label: [] for label in fns}
    warm = max(5, n // 10)
    for prepare in fns.values():
        prepare(-1, warm)()
    for r in range(ctx.sizes.runs):
        for label, prepare in fns.items():
            rates[label].append(timed_rate(prepare(r, n)))
        ctx.log(
            f"{result.name} run {r + 1}/{ctx.sizes.runs}: "
            + ", ".join(f"{k.split(' (')[0]} {v[-1]:,.0f}" for k, v in rates.items())
        )
    for label, values in rates.items():
        result.add(label, values, baseline=label == baseline, runs=len(values))


def _targets(single: BenchResult, batched: BenchResult) -> None:
    ours = single.series_by("MemoryStore.commit (vector given)")
    r = single.ratio(ours) if ours else None
    single.target("commit vs raw floor", r, ">= 0.8x", None if r is None else r >= 0.8)
    ms = single.series_by("MemState 0.5.1 Postgres + Chroma hook")
    emb = single.series_by("MemoryStore.commit (embeds inside)")
    if ms and emb:
        x = emb.summary()["median"] / ms.summary()["median"]
        single.target(
            "commit (embeds inside) vs MemState 0.5.1 Postgres+Chroma", x, ">= 5x", x >= 5
        )
    lg = next((s for s in single.series if s.label.startswith("LangGraph")), None)
    if lg and emb:
        x = emb.summary()["median"] / lg.summary()["median"]
        single.target("commit (embeds inside) vs LangGraph put", x, ">= 1.0x", x >= 1.0)
    cm = batched.series_by("MemoryStore.commit_many (vectors given)")
    r = batched.ratio(cm) if cm else None
    batched.target("commit_many vs COPY", r, ">= 0.6x", None if r is None else r >= 0.6)
    lgb = next((s for s in batched.series if s.label.startswith("LangGraph")), None)
    cme = batched.series_by("MemoryStore.commit_many (embeds inside)")
    if lgb and cme:
        x = cme.summary()["median"] / lgb.summary()["median"]
        batched.target("commit_many (embeds inside) vs LangGraph batch put", x, ">= 1.0x", x >= 1.0)
