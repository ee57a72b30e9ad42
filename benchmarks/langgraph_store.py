"""MemStateStore vs LangGraph's PostgresStore: put throughput, search throughput and latency.

Both stores run on the same PostgreSQL server with the same embedding function (a
deterministic HashingEmbedder), the same dimension, the same pgvector settings (HNSW,
m=16, ef_construction=64, cosine, ``vector``), the same items and queries, and each
store's own defaults otherwise. Every run starts from a fresh database per store, so the
indexes are equally small; a run is N sequential ``put``s (one item each, as an agent
writes memories) then Q sequential ``search(query=..., limit=10)`` over them, then
N/10 ``batch`` calls of 10 puts. The two stores take turns chunk by chunk, so load from
elsewhere on the machine (fsync latency above all) hits both alike. The table shows the
median of the runs and the ratio (> 1.0 means MemStateStore is faster).

    python benchmarks/langgraph_store.py                  # embedded PostgreSQL, temp dir
    python benchmarks/langgraph_store.py --dsn postgresql://localhost/postgres --runs 7

The DSN's role must be allowed to CREATE DATABASE.
"""

from __future__ import annotations

import argparse
import contextlib
import random
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
from langgraph.store.base import BaseStore, PutOp
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from memstate_pg import HashingEmbedder, MemoryStore, embedded
from memstate_pg.langgraph import MemStateStore

WORDS = [
    "coffee",
    "tea",
    "water",
    "juice",
    "Berlin",
    "Lisbon",
    "Oslo",
    "Tokyo",
    "river",
    "mountain",
    "cat",
    "dog",
    "music",
    "jazz",
    "piano",
    "violin",
    "morning",
    "evening",
    "weekend",
    "holiday",
    "vegan",
    "pasta",
    "sushi",
    "curry",
    "running",
    "cycling",
    "chess",
    "books",
    "novels",
    "poetry",
    "garden",
    "tomatoes",
    "roses",
    "winter",
    "summer",
    "rain",
    "snow",
    "meeting",
    "project",
    "deadline",
    "budget",
]


def _database(dsn: str, name: str) -> str:
    params = conninfo_to_dict(dsn)
    params["dbname"] = name
    return make_conninfo(**params)


@contextlib.contextmanager
def fresh_database(
    admin_dsn: str, prefix: str, *, synchronous_commit: bool = True
) -> Iterator[str]:
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        if not synchronous_commit:
            conn.execute(
                sql.SQL("ALTER DATABASE {} SET synchronous_commit = off").format(
                    sql.Identifier(name)
                )
            )
    try:
        yield _database(admin_dsn, name)
    finally:
        with psycopg.connect(admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@contextlib.contextmanager
def memstate_store(
    dsn: str, embed: Callable[[list[str]], list[list[float]]], dims: int
) -> Iterator[BaseStore]:
    with MemoryStore(dsn, embedder=HashingEmbedder(dim=dims), max_size=4) as mem:
        store = MemStateStore(
            mem, index={"dims": dims, "embed": embed, "fields": ["text"], "model": f"bench-{dims}"}
        )
        store.setup()
        yield store


@contextlib.contextmanager
def postgres_store(
    dsn: str, embed: Callable[[list[str]], list[list[float]]], dims: int
) -> Iterator[BaseStore]:
    from langgraph.store.postgres import PostgresStore

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    index = {
        "dims": dims,
        "embed": embed,
        "fields": ["text"],
        "distance_type": "cosine",
        "ann_index_config": {
            "kind": "hnsw",
            "m": 16,
            "ef_construction": 64,
            "vector_type": "vector",
        },
    }
    with PostgresStore.from_conn_string(dsn, index=index) as store:
        store.setup()
        yield store


def workload(
    n: int, queries: int, seed: int
) -> tuple[list[tuple[tuple[str, ...], str, dict[str, Any]]], list[str]]:
    rng = random.Random(seed)
    items = []
    for i in range(n):
        user = f"user-{i % 20}"
        text = " ".join(rng.choice(WORDS) for _ in range(12))
        items.append(
            (
                ("users", user, "memories"),
                f"m{i}",
                {"text": text, "i": i, "kind": rng.choice("abc")},
            )
        )
    qs = [" ".join(rng.choice(WORDS) for _ in range(4)) for _ in range(queries)]
    return items, qs


def run_paired(
    stores: dict[str, BaseStore], items: list[Any], queries: list[str], chunk: int = 25
) -> dict[str, dict[str, float]]:
    """One run: the stores take turns on the same work, a chunk at a time (who goes first
    alternates), so background load on the machine hits both alike."""
    names = list(stores)
    put_time = dict.fromkeys(names, 0.0)
    batch_time = dict.fromkeys(names, 0.0)
    search_time = dict.fromkeys(names, 0.0)
    latencies: dict[str, list[float]] = {name: [] for name in names}

    def turns(i: int) -> list[str]:
        return names if i % 2 == 0 else names[::-1]

    for i in range(0, len(items), chunk):
        for name in turns(i // chunk):
            start = time.perf_counter()
            for ns, key, value in items[i : i + chunk]:
                stores[name].put(ns, key, value)
            put_time[name] += time.perf_counter() - start
    for i, q in enumerate(queries):
        for name in turns(i):
            start = time.perf_counter()
            hits = stores[name].search(("users",), query=q, limit=10)
            elapsed = time.perf_counter() - start
            search_time[name] += elapsed
            latencies[name].append(elapsed)
            assert len(hits) == 10
    batches = [items[i : i + 10] for i in range(0, len(items) // 10 * 10, 10)]
    for i, batch in enumerate(batches):
        for name in turns(i):
            start = time.perf_counter()
            stores[name].batch([PutOp(ns, key + "-b", value) for ns, key, value in batch])
            batch_time[name] += time.perf_counter() - start
    return {
        name: {
            "put/s": len(items) / put_time[name],
            "batch put/s": sum(map(len, batches)) / batch_time[name],
            "search/s": len(queries) / search_time[name],
            "search p50 ms": 1000 * statistics.median(latencies[name]),
        }
        for name in names
    }


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dsn", help="admin DSN (default: embedded PostgreSQL in a temp dir)")
    parser.add_argument("--items", type=int, default=1000)
    parser.add_argument("--queries", type=int, default=300)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--dims", type=int, default=256)
    parser.add_argument(
        "--no-sync-commit",
        action="store_true",
        help="synchronous_commit=off in both databases: compares the work, not fsync",
    )
    args = parser.parse_args(argv)

    with contextlib.ExitStack() as stack:
        admin = args.dsn
        if not admin:
            path = stack.enter_context(tempfile.TemporaryDirectory(prefix="memstate-bench-"))
            stack.callback(embedded.stop, path)
            admin = embedded.start(path)
        hasher = HashingEmbedder(dim=args.dims)

        def embed(texts: list[str]) -> list[list[float]]:
            return hasher.embed(texts)

        items, queries = workload(args.items, args.queries, seed=7)
        factories = {"MemStateStore": memstate_store, "PostgresStore": postgres_store}
        results: dict[str, list[dict[str, float]]] = {name: [] for name in factories}
        for run in range(args.runs):
            with contextlib.ExitStack() as run_stack:
                stores = {
                    name: run_stack.enter_context(
                        make(
                            run_stack.enter_context(
                                fresh_database(
                                    admin, "lgbench", synchronous_commit=not args.no_sync_commit
                                )
                            ),
                            embed,
                            args.dims,
                        )
                    )
                    for name, make in factories.items()
                }
                for name, figures in run_paired(stores, items, queries).items():
                    results[name].append(figures)
            print(
                f"run {run + 1}/{args.runs}: "
                + "  ".join(
                    f"{name} {r[-1]['put/s']:.0f} put/s {r[-1]['search/s']:.0f} search/s"
                    for name, r in results.items()
                )
            )

    medians = {
        name: {metric: statistics.median(r[metric] for r in runs) for metric in runs[0]}
        for name, runs in results.items()
    }
    ours, theirs = medians["MemStateStore"], medians["PostgresStore"]
    commit = "synchronous_commit=off" if args.no_sync_commit else "synchronous_commit=on"
    print(
        f"\n{args.items} items, {args.queries} queries, {args.dims} dims, {commit}, median of {args.runs} runs"
    )
    print(f"{'metric':<16}{'MemStateStore':>16}{'PostgresStore':>16}{'ratio':>10}")
    for metric in ours:
        ratio = (
            theirs[metric] / ours[metric]
            if metric.endswith("ms")
            else ours[metric] / theirs[metric]
        )
        print(f"{metric:<16}{ours[metric]:>16.1f}{theirs[metric]:>16.1f}{ratio:>9.2f}x")
    return medians


if __name__ == "__main__":
    main()
