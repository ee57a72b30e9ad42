"""Mixed workload: 80% search / 20% single-fact commits, from 4 concurrent clients.

On a bulk-loaded dataset (small size, hashing vectors) of its own, `clients` threads run
for `mixed_seconds` per run; each operation is a top-10 search (80%) or a single-fact
commit (20%), chosen by a seeded RNG per client, with precomputed vectors on both sides:
  * baseline: raw psycopg, one connection per client (the search SQL of peers/raw_pg.py,
    the three pipelined inserts of the commit floor);
  * `MemoryStore` shared by the clients (pool of `clients` connections).
Reported: operations/s per run, and the per-operation latencies of the last run.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable

import psycopg

from benchmarks import data
from benchmarks.context import BenchContext
from benchmarks.harness import BenchResult, stats
from benchmarks.peers import raw_pg
from benchmarks.peers.raw_pg import RawSearch
from memstate_pg import Fact, HashingEmbedder, MemoryStore

READ_SHARE = 0.8


class Client:
    """One client's two operations; `search(i)` and `write(i)` take an item index."""

    def __init__(
        self,
        search: Callable[[int], object],
        write: Callable[[int], object],
        close: Callable[[], None],
    ) -> None:
        self.search, self.write, self.close = search, write, close


def drive(
    clients: list[Client], seconds: float, seed: int, nq: int, nw: int
) -> tuple[float, list[float], list[float]]:
    """Run all clients for `seconds`; returns (ops/s, search latencies ms, write latencies ms)."""
    stop = time.perf_counter() + seconds
    lat_r: list[list[float]] = [[] for _ in clients]
    lat_w: list[list[float]] = [[] for _ in clients]
    errors: list[BaseException] = []

    def work(c: int) -> None:
        rng = random.Random(seed * 100 + c)
        w = 0
        try:
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                if rng.random() < READ_SHARE:
                    clients[c].search(rng.randrange(nq))
                    lat_r[c].append((time.perf_counter() - t0) * 1000)
                else:
                    clients[c].write((c * nw // len(clients) + w) % nw)
                    w += 1
                    lat_w[c].append((time.perf_counter() - t0) * 1000)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(c,)) for c in range(len(clients))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    r = [x for xs in lat_r for x in xs]
    w = [x for xs in lat_w for x in xs]
    return (len(r) + len(w)) / elapsed, r, w


def run(ctx: BenchContext) -> list[BenchResult]:
    sz = ctx.sizes
    n_clients = sz.mixed_clients
    res = BenchResult(
        "mixed",
        f"Mixed 80% search / 20% commit, {n_clients} concurrent clients",
        "ops/s",
        True,
        "per run",
        params={
            "facts": sz.small,
            "clients": n_clients,
            "seconds_per_run": sz.mixed_seconds,
            "runs": sz.runs,
            "dim": ctx.dim,
            "k": 10,
        },
    )
    with ctx.database("mixed") as dsn:
        ctx.log(f"mixed: loading {sz.small:,} facts")
        ds = data.bulk_load(dsn, kind="hashing", n=sz.small, dim=ctx.dim, namespace="bench")
        _, qvecs = data.query_vectors(ds, 200)
        qlits = [data.vector_literal(v) for v in qvecs]
        n_writes = max(200, int(sz.mixed_seconds * 400 * (sz.runs + 1)))
        wtexts = [data.fact_text("mixed", i) for i in range(n_writes)]
        wvecs = data.hashing_vectors(wtexts, ctx.dim)
        wlits = [data.vector_literal(v) for v in wvecs]

        def raw_client() -> Client:
            s = RawSearch(dsn, dim=ctx.dim, model=ds.model, namespace=ds.namespace)
            w = psycopg.connect(dsn, autocommit=True)

            def close() -> None:
                s.close()
                w.close()

            return Client(
                lambda i: s.search(qlits[i], 10),
                lambda i: raw_pg.floor_single(w, ds.namespace, [(wtexts[i], wlits[i])]),
                close,
            )

        mem = MemoryStore(
            dsn, embedder=HashingEmbedder(dim=ctx.dim), min_size=n_clients, max_size=n_clients
        )

        def ours_client() -> Client:
            return Client(
                lambda i: mem.search(qvecs[i].tolist(), k=10, namespace=ds.namespace),
                lambda i: mem.commit(
                    Fact(
                        type="note",
                        payload=data.payload_of(wtexts[i], i),
                        embedding=wvecs[i].tolist(),
                    ),
                    namespace=ds.namespace,
                ),
                lambda: None,
            )

        makers = {
            "raw psycopg (search SQL + 3 pipelined inserts)": raw_client,
            "MemoryStore.search / .commit (vector given)": ours_client,
        }
        rates: dict[str, list[float]] = {k: [] for k in makers}
        last: dict[str, tuple[list[float], list[float]]] = {}
        try:
            for r in range(-1, sz.runs):  # run -1 is the warm-up
                for label, make in makers.items():
                    clients = [make() for _ in range(n_clients)]
                    try:
                        rate, lr, lw = drive(
                            clients,
                            sz.mixed_seconds if r >= 0 else min(1.0, sz.mixed_seconds),
                            r,
                            len(qlits),
                            n_writes,
                        )
                    finally:
                        for c in clients:
                            c.close()
                    if r >= 0:
                        rates[label].append(rate)
                        last[label] = (lr, lw)
                if r >= 0:
                    ctx.log(
                        f"mixed run {r + 1}/{sz.runs}: "
                        + ", ".join(
                            f"{k.split(' (')[0]} {v[-1]:,.0f} ops/s" for k, v in rates.items()
                        )
                    )
        finally:
            mem.close()
    for i, (label, values) in enumerate(rates.items()):
        lr, lw = last.get(label, ([], []))
        res.add(
            label,
            values,
            baseline=i == 0,
            runs=len(values),
            search_p50_ms=stats(lr)["median"],
            search_p95_ms=stats(lr)["p95"],
            commit_p50_ms=stats(lw)["median"],
            commit_p95_ms=stats(lw)["p95"],
        )
    ours = res.series_by("MemoryStore.search / .commit (vector given)")
    if ours:
        r = res.ratio(ours)
        res.target("mixed ops/s vs raw", r, "(no target in the issue; >= 0.8x expected)", None)
    res.notes.append(
        "clients are Python threads in one process (the GIL is shared, as in a real app server)"
    )
    return [res]
