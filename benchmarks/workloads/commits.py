"""Write throughput: single-fact commits and batched commits (1000 facts per transaction).

Single commits/s, baseline the raw psycopg floor (three pipelined inserts per commit, from
benchmarks/commit.py), against:
  * `MemoryStore.commit` given the vector (the like-for-like comparison with the floor);
  * `MemoryStore.commit` embedding inside (like-for-like with the peers, which all embed);
  * MemState 0.5.1 with SQLite + Chroma hook, and with Postgres + Chroma hook;
  * LangGraph `PostgresStore.put`.
Single commits/s with 8 concurrent writers (threads, all started together), baseline the
same floor on 8 connections, against `MemoryStore.commit` on one store whose pool holds 8.
Batched facts/s, baseline a binary psycopg COPY of the same rows (vectors in pgvector's
binary format; the text COPY is shown too), against `commit_many` (vectors given, and
embedding inside) and LangGraph's `batch` of 1000 PutOps. MemState has no batch API.
Every peer gets one warm-up and then `runs` rounds, interleaved (A, B, C, C, B, A…),
each round on fresh texts and in the reverse order of the round before, so index growth
and background noise hit every peer alike.
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


def _float_items(prefix: str, n: int, dim: int) -> list[tuple[str, list[float]]]:
    """(text, vector) pairs for the binary COPY floor."""
    texts = [data.fact_text(prefix, i) for i in range(n)]
    return list(zip(texts, data.hashing_vectors(texts, dim).tolist(), strict=True))


WRITERS = 8
# the labels benchmarks/targets.py names (literal, so a test can find them)
FLOOR_WRITERS = "raw psycopg floor, 8 writers"
OURS_WRITERS = "MemoryStore.commit (vector given), 8 writers"


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
    concurrent = BenchResult(
        "commit_concurrent",
        f"Single-fact commits, {WRITERS} concurrent writers",
        "commits/s",
        True,
        "per run",
        params={"writers": WRITERS, "commits_per_writer": max(5, sz.single // 4), "runs": sz.runs},
    )
    with ctx.database("commits") as dsn:
        mem = MemoryStore(dsn, embedder=HashingEmbedder(dim=ctx.dim), max_size=2)
        many = MemoryStore(
            dsn, embedder=HashingEmbedder(dim=ctx.dim), min_size=WRITERS, max_size=WRITERS
        )
        raw = psycopg.connect(dsn, autocommit=True)
        raws = [psycopg.connect(dsn, autocommit=True) for _ in range(WRITERS)]
        peers: list = []
        closers: list[Callable[[], None]] = [mem.close, many.close, raw.close]
        closers += [c.close for c in raws]
        try:
            singles: dict[str, Prepare] = {
                "raw psycopg floor (3 inserts, pipelined)": lambda r, n: _bind(
                    raw_pg.floor_single, raw, f"fs{r}", _vec_items(f"fs{r}", n, ctx.dim)
                ),
                "MemoryStore.commit (vector given)": _ours_single(mem, ctx.dim, True),
                "MemoryStore.commit (embeds inside)": _ours_single(mem, ctx.dim, False),
            }
            together: dict[str, Prepare] = {
                FLOOR_WRITERS: lambda r, n: _bind(
                    raw_pg.concurrent,
                    WRITERS,
                    _floor_writers(raws, f"fc{r}", n, ctx.dim),
                ),
                OURS_WRITERS: _ours_concurrent(many, ctx.dim),
            }
            batches: dict[str, Prepare] = {
                "raw psycopg binary COPY": lambda r, n: _bind(
                    raw_pg.floor_copy_binary, raw, f"cb{r}", _float_items(f"cb{r}", n, ctx.dim)
                ),
                "raw psycopg COPY (text)": lambda r, n: _bind(
                    raw_pg.floor_copy, raw, f"cp{r}", _vec_items(f"cp{r}", n, ctx.dim)
                ),
                "MemoryStore.commit_many (vectors given)": _ours_batch(mem, ctx.dim, True),
                "MemoryStore.commit_many (embeds inside)": _ours_batch(mem, ctx.dim, False),
            }
            _add_peers(ctx, dsn, singles, batches, single, batched, peers, closers)
            _interleave(
                ctx, singles, sz.single, single, baseline="raw psycopg floor (3 inserts, pipelined)"
            )
            _interleave(
                ctx,
                together,
                max(5, sz.single // 4),
                concurrent,
                baseline=FLOOR_WRITERS,
            )
            _interleave(ctx, batches, sz.batch, batched, baseline="raw psycopg binary COPY")
        finally:
            for close in reversed(closers):
                try:
                    close()
                except Exception:  # noqa: BLE001 - closing is best effort
                    pass
    _targets(single, batched, concurrent)
    concurrent.notes.append(
        f"{WRITERS} threads in one process, each committing its own facts one by one; the "
        "rate is all commits over the wall time of the slowest writer"
    )
    single.notes.append(
        "the floor and 'vector given' get precomputed vectors; MemState, LangGraph and "
        "'embeds inside' embed each text with HashingEmbedder during the commit"
    )
    return [single, concurrent, batched]


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


def _floor_writers(
    conns: list[psycopg.Connection], prefix: str, n: int, dim: int
) -> Callable[[int], int]:
    """Each writer's inputs, built before the clock starts."""
    items = [_vec_items(f"{prefix}w{i}", n, dim) for i in range(len(conns))]
    return lambda i: raw_pg.floor_single(conns[i], f"{prefix}w{i}", items[i])


def _ours_concurrent(mem: MemoryStore, dim: int) -> Prepare:
    def prepare(r: int, n: int) -> Callable[[], int]:
        ns = f"mc_{r}"
        facts = [_facts(f"{ns}w{i}", n, dim, with_vectors=True) for i in range(WRITERS)]
        return lambda: raw_pg.concurrent(
            WRITERS, lambda i: len([mem.commit(f, namespace=f"{ns}w{i}") for f in facts[i]])
        )

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
        # the order flips every round: the HNSW graph grows as a round goes, so whoever went
        # first would always insert into the smaller index
        order = list(fns.items()) if r % 2 == 0 else list(fns.items())[::-1]
        for label, prepare in order:
            rates[label].append(timed_rate(prepare(r, n)))
        ctx.log(
            f"{result.name} run {r + 1}/{ctx.sizes.runs}: "
            + ", ".join(f"{k.split(' (')[0]} {v[-1]:,.0f}" for k, v in rates.items())
        )
    for label, values in rates.items():
        result.add(label, values, baseline=label == baseline, runs=len(values))


def _targets(single: BenchResult, batched: BenchResult, concurrent: BenchResult) -> None:
    ours = single.series_by("MemoryStore.commit (vector given)")
    r = single.ratio(ours) if ours else None
    single.target("commit vs raw floor", r, ">= 0.9x", None if r is None else r >= 0.9)
    ours = concurrent.series_by(OURS_WRITERS)
    r = concurrent.ratio(ours) if ours else None
    concurrent.target(
        f"commit vs raw floor, {WRITERS} writers", r, ">= 0.9x", None if r is None else r >= 0.9
    )
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
    batched.target("commit_many vs binary COPY", r, ">= 0.9x", None if r is None else r >= 0.9)
    lgb = next((s for s in batched.series if s.label.startswith("LangGraph")), None)
    cme = batched.series_by("MemoryStore.commit_many (embeds inside)")
    if lgb and cme:
        x = cme.summary()["median"] / lgb.summary()["median"]
        batched.target("commit_many (embeds inside) vs LangGraph batch put", x, ">= 1.0x", x >= 1.0)
