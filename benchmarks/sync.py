"""Sync benchmark: outbox-to-mirror throughput vs the raw client, and commit-to-visible lag.

    python -m benchmarks.sync                 # embedded Postgres, or MEMSTATE_DSN if set
    python -m benchmarks.sync --facts 5000 --runs 3 --lag-seconds 10 --rate 200

1. **Throughput.** N facts are committed while the worker is stopped; then the clock runs
   while ``SyncWorker.drain()`` claims, reads (vectors included), writes and acknowledges
   them all. The baseline is the raw client upserting the very same ids, vectors, documents
   and metadata in the same batch size into a fresh collection (the data prepared in memory
   beforehand; timed: building the client's request objects and the upserts). Ratio =
   sync / raw. Target: >= 0.8x. Chroma embedded (PersistentClient) and Qdrant local mode.
   One warm-up run; then runs alternate which side goes first.
2. **Lag.** A worker process runs ``run_forever`` (LISTEN/NOTIFY) into Chroma embedded
   while this process commits at a steady `rate` per second for `lag_seconds`, open loop:
   commit i is issued at start + i/rate by one of `committers` threads, whatever the
   others are doing (how late the commits started is reported: a committer that falls
   behind would hide lag). The lag of a fact is the time from its commit returning to the
   mirror's upsert of it returning (both CLOCK_MONOTONIC, system-wide on Linux).
   Target (issue 15): p99 < 100 ms at 200 commits/s. Also reported: the CPU the worker
   process used (cores, i.e. CPU seconds per second), the part of it spent inside Chroma's
   upsert calls, Postgres's and the committers', and the Chroma calls themselves (records
   per call, ms per call): where the time goes.
3. Optionally (``--reconcile-facts 100000``) reconciliation of a large mirror: time, and
   the peak of Python allocations while it runs (tracemalloc), which stays O(page_size).

Every figure is the median of `runs` runs.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from memstate_pg import Fact, MemoryStore, migrations
from memstate_pg.embedders import HashingEmbedder
from memstate_pg.mirrors import ChromaMirror, Mirror, MirrorRecord, QdrantMirror
from memstate_pg.mirrors.base import build_payload
from memstate_pg.mirrors.chroma import encode_metadata
from memstate_pg.sync import SyncWorker
from memstate_pg.sync.apply import build_record, read_states
from memstate_pg.sync.outbox import load_config

# --- database ---------------------------------------------------------------------------


def fresh_database(admin_dsn: str, name: str) -> str:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(admin_dsn)
    params["dbname"] = name
    dsn = make_conninfo(**params)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    migrations.upgrade(dsn)
    return dsn


def new_store(dsn: str, pool: int = 4) -> Any:
    store = MemoryStore(dsn, embedder=HashingEmbedder(dim=384), max_size=max(4, pool))
    store.register_schema("note", None, text_field="text")
    return store


def commit_facts(store: Any, n: int, namespace: str) -> None:
    for start in range(0, n, 500):
        store.commit_many(
            [
                Fact(type="note", payload={"text": f"fact {i} {uuid.uuid4().hex}", "n": i})
                for i in range(start, min(n, start + 500))
            ],
            namespace=namespace,
        )


# --- throughput -------------------------------------------------------------------------


def make_mirror(kind: str, workdir: Path, batch: int) -> Mirror:
    """A fresh, empty mirror; Chroma gets a directory of its own, so that no background
    work of an earlier run (Chroma compacts its log) lands in the next measurement."""
    collection = f"b{uuid.uuid4().hex[:12]}"
    if kind == "chroma":
        return ChromaMirror.from_path(
            workdir / f"chroma-{collection}", collection, batch_size=batch
        )
    return QdrantMirror.from_location(":memory:", collection, batch_size=batch)


def raw_upsert(kind: str, mirror: Mirror, records: list[MirrorRecord], batch: int) -> float:
    """The baseline: the store's own client, the same ids, vectors, documents and metadata
    (already in the store's shape, prepared untimed), the same batch size. Timed: what a
    caller of the raw client must do, building the client's request objects and upserting."""
    chunks = [records[i : i + batch] for i in range(0, len(records), batch)]
    if kind == "chroma":
        assert isinstance(mirror, ChromaMirror)
        coll = mirror.collection
        prepared = [
            (
                [r.fact_id for r in c],
                [r.embedding for r in c],
                [encode_metadata(r) for r in c],
                [r.content for r in c],
            )
            for c in chunks
        ]
        t0 = time.perf_counter()
        for ids, vectors, metas, docs in prepared:
            coll.upsert(ids=ids, embeddings=vectors, metadatas=metas, documents=docs)  # type: ignore[arg-type]
        return time.perf_counter() - t0
    from qdrant_client import models

    assert isinstance(mirror, QdrantMirror)
    client, name = mirror.client, mirror.collection_name
    client.create_collection(
        name, vectors_config=models.VectorParams(size=384, distance=models.Distance.COSINE)
    )
    prepared_q = [[(r.fact_id, r.embedding, build_payload(r)) for r in c] for c in chunks]
    t0 = time.perf_counter()
    for c in prepared_q:
        points = [
            models.PointStruct(id=fid, vector=vec, payload=payload) for fid, vec, payload in c
        ]
        client.upsert(name, points=points, wait=True)
    return time.perf_counter() - t0


def throughput_run(
    dsn: str, kind: str, n: int, batch: int, workdir: Path, raw_first: bool
) -> tuple[float, float]:
    """(sync facts/s, raw facts/s) for one run on fresh collections; `raw_first` runs the
    baseline before the worker (runs alternate, so neither side always goes second)."""
    store = new_store(dsn)
    ns = f"t{uuid.uuid4().hex[:8]}"
    name = f"tp-{ns}"
    sync_mirror = make_mirror(kind, workdir, batch)
    sync_mirror.count()  # create the collection outside the timing (Chroma)
    store.add_mirror(sync_mirror, name, namespaces=[ns], backfill=False)
    commit_facts(store, n, ns)
    with psycopg.connect(dsn, autocommit=True) as conn:  # the same records, for the baseline
        config = load_config(conn, name)
        assert config is not None
        ids = [
            r[0]
            for r in conn.execute("SELECT fact_id FROM memstate.facts WHERE namespace = %s", (ns,))
        ]
        states = read_states(conn, ids)
    records = [build_record(config, s) for s in states.values()]
    del states
    raw_mirror = make_mirror(kind, workdir, batch)
    if kind == "chroma":
        raw_mirror.count()

    def run_raw() -> float:
        return raw_upsert(kind, raw_mirror, records, batch)

    def run_sync() -> float:
        worker = SyncWorker(store, {name: sync_mirror}, batch_size=batch)
        worker.pending()  # open the worker's pool outside the timing
        t0 = time.perf_counter()
        assert worker.drain(600)
        elapsed = time.perf_counter() - t0
        worker.close()
        return elapsed

    if raw_first:
        t_raw, t_sync = run_raw(), run_sync()
    else:
        t_sync, t_raw = run_sync(), run_raw()
    assert sync_mirror.count() == n, (sync_mirror.count(), n)
    assert raw_mirror.count() == n
    store.remove_mirror(name)
    for m in (sync_mirror, raw_mirror):
        m.close()
    store.close()
    return n / t_sync, n / t_raw


# --- lag ----------------------------------------------------------------------------------


class StampingMirror(ChromaMirror):
    """Chroma embedded, writing `fact_id monotonic_ns` to a file when an upsert returns,
    and `start_ns end_ns cpu_ns records` of each call to `stamp_path`.calls (cpu: of the
    whole process during the call, Chroma's own threads included)."""

    stamp_path: str = ""
    _stamp_lock = threading.Lock()  # worker threads share the files

    def _upsert_batch(self, records):  # type: ignore[no-untyped-def]
        start, cpu = time.monotonic_ns(), time.process_time_ns()
        super()._upsert_batch(records)
        now = time.monotonic_ns()
        cpu = time.process_time_ns() - cpu
        with self._stamp_lock:
            with open(self.stamp_path, "a") as f:
                f.write("".join(f"{r.fact_id} {now}\n" for r in records))
            with open(self.stamp_path + ".calls", "a") as f:
                f.write(f"{start} {now} {cpu} {len(records)}\n")


def lag_worker(
    dsn: str,
    name: str,
    chroma_dir: str,
    collection: str,
    stamp_path: str,
    ready: Any,
    threads: int = 1,
) -> None:
    """The worker process: `threads` SyncWorkers (run_forever each) on one Chroma mirror."""
    import chromadb
    from chromadb.config import Settings

    store = MemoryStore(dsn, max_size=1)
    mirror = StampingMirror(
        chromadb.PersistentClient(path=chroma_dir, settings=Settings(anonymized_telemetry=False)),
        collection,
    )
    mirror.stamp_path = stamp_path
    mirror.count()
    workers = [SyncWorker(store, {name: mirror}, poll_interval=1.0) for _ in range(threads)]
    for worker in workers:
        worker.pending()
    others = [threading.Thread(target=w.run_forever, daemon=True) for w in workers[1:]]
    for t in others:
        t.start()
    ready.set()
    workers[0].run_forever()  # until SIGTERM
    for worker, t in zip(workers[1:], others, strict=True):
        worker.stop()
        t.join(10)
    for worker in workers:
        worker.close()
    store.close()


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds the processes `pids` have used so far (gone ones: 0)."""
    import psutil

    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system
    return total


def _postgres_pids(dsn: str) -> list[int]:
    """The server's processes (postmaster and children), when it runs on this machine."""
    import psutil

    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute("SELECT pg_backend_pid()").fetchone()
    assert row is not None
    try:
        postmaster = psutil.Process(int(row[0])).parent()
    except psutil.Error:
        return []
    if postmaster is None:
        return []
    return [postmaster.pid, *(c.pid for c in postmaster.children())]


def lag_run(
    dsn: str, rate: float, seconds: float, workdir: Path, committers: int, threads: int = 1
) -> dict[str, Any]:
    """Commit-to-visible lag at a steady commit rate, open loop: `committers` threads share
    the schedule (commit i is issued at start + i/rate), so the rate holds even when one
    commit takes longer than 1/rate. Returns the lag percentiles (ms), how late commits
    started (ms), the CPU used (cores) and the Chroma calls of the worker."""
    store = new_store(dsn, pool=committers)
    ns = f"l{uuid.uuid4().hex[:8]}"
    name = f"lag-{ns}"
    collection = f"lag{uuid.uuid4().hex[:10]}"
    chroma_dir = str(workdir / f"chroma-lag-{ns}")
    probe = ChromaMirror.from_path(chroma_dir, collection)
    store.add_mirror(probe, name, namespaces=[ns], backfill=False)
    probe.close()
    stamp_path = str(workdir / f"stamps-{ns}.txt")
    ctx = multiprocessing.get_context("spawn")
    ready = ctx.Event()
    proc = ctx.Process(
        target=lag_worker,
        args=(dsn, name, chroma_dir, collection, stamp_path, ready, threads),
    )
    proc.start()
    try:
        assert ready.wait(120), "lag worker did not start"
        total = int(rate * seconds)
        pg_pids = _postgres_pids(dsn)
        assert proc.pid is not None
        cpu0 = (_cpu_seconds([proc.pid]), _cpu_seconds(pg_pids), time.process_time())
        wall0 = time.monotonic()
        committed, late = commit_at_rate(store, ns, rate, total, committers)
        seen = wait_for_stamps(stamp_path, total, timeout=30)
        wall = time.monotonic() - wall0
        worker_cpu = _cpu_seconds([proc.pid]) - cpu0[0]
        pg_cpu = _cpu_seconds(pg_pids) - cpu0[1]
        own_cpu = time.process_time() - cpu0[2]
    finally:
        proc.terminate()
        proc.join(30)
    store.remove_mirror(name)
    store.close()
    lags = sorted((seen[f] - t) / 1e6 for f, t in committed.items() if f in seen)
    if len(lags) < total:
        print(f"  warning: {total - len(lags)} fact(s) never seen", file=sys.stderr)
    calls = []
    with open(stamp_path + ".calls") as f:
        for line in f:
            start, end, cpu, n = (int(x) for x in line.split())
            calls.append(((end - start) / 1e6, cpu / 1e9, n))
    call_ms = sorted(c[0] for c in calls)
    late.sort()
    return {
        "p50": pct(lags, 0.5),
        "p99": pct(lags, 0.99),
        "max": lags[-1],
        "facts": len(lags),
        "late_p99_ms": pct(late, 0.99),
        "late_max_ms": late[-1],
        "wall_s": wall,
        "worker_cores": worker_cpu / wall,
        "chroma_cores": sum(c[1] for c in calls) / wall,
        "postgres_cores": pg_cpu / wall,
        "committer_cores": own_cpu / wall,
        "calls": len(calls),
        "records_per_call": statistics.median(c[2] for c in calls),
        "call_p50_ms": pct(call_ms, 0.5),
        "call_p99_ms": pct(call_ms, 0.99),
        "in_calls_share": sum(call_ms) / 1000 / wall,
    }


def pct(values: list[float], q: float) -> float:
    """The q-quantile of sorted `values` (nearest rank)."""
    return values[min(len(values) - 1, int(len(values) * q))]


def commit_at_rate(
    store: Any, ns: str, rate: float, total: int, committers: int
) -> tuple[dict[str, int], list[float]]:
    """Commit `total` facts, commit i due at start + i/rate, from `committers` threads.
    Returns {fact_id: monotonic ns when its commit returned} and how late (ms) each commit
    started after its scheduled time."""
    committed: dict[str, int] = {}
    late: list[float] = []
    start = time.monotonic() + 0.2
    schedule = iter(range(total))
    lock = threading.Lock()

    def commit_on_schedule() -> None:
        while True:
            with lock:
                i = next(schedule, None)
            if i is None:
                return
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            late.append(max(0.0, -delay) * 1000)
            fid = store.commit(
                Fact(type="note", payload={"text": f"lag {i} {uuid.uuid4().hex}"}), namespace=ns
            )
            committed[str(fid)] = time.monotonic_ns()

    threads = [threading.Thread(target=commit_on_schedule) for _ in range(committers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return committed, late


def wait_for_stamps(path: str, total: int, timeout: float) -> dict[str, int]:
    """{fact_id: monotonic ns} the worker wrote, once all `total` are there (or timeout)."""
    deadline = time.monotonic() + timeout
    seen: dict[str, int] = {}
    while time.monotonic() < deadline:
        if os.path.exists(path):
            with open(path) as f:
                seen = {k: int(v) for k, v in (line.split() for line in f if line.endswith("\n"))}
        if len(seen) >= total:
            break
        time.sleep(0.05)
    return seen


# --- reconcile at scale ---------------------------------------------------------------------


def reconcile_run(dsn: str, n: int, workdir: Path, page_size: int) -> tuple[float, float, int]:
    """(seconds, peak MiB of Python allocations, checked) reconciling n facts in Chroma embedded."""
    import tracemalloc

    store = new_store(dsn)
    ns = f"r{uuid.uuid4().hex[:8]}"
    name = f"rec-{ns}"
    mirror = ChromaMirror.from_path(workdir / "chroma-rec", f"rec{uuid.uuid4().hex[:10]}")
    store.add_mirror(mirror, name, namespaces=[ns], backfill=False)
    commit_facts(store, n, ns)
    with SyncWorker(store, {name: mirror}, batch_size=1000) as worker:
        assert worker.drain(3600)
    mirror.delete([fid for fid, _ in next(mirror.scan(100))])  # a little drift to find
    tracemalloc.start()
    t0 = time.perf_counter()
    report = store.reconcile(name, page_size=page_size)
    seconds = time.perf_counter() - t0
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert report.missing == 100 and report.repaired == 100, report
    store.remove_mirror(name)
    mirror.close()
    store.close()
    return seconds, peak / 2**20, report.checked


LAG_TARGET_MS = 100.0  # issue 15: p99 at 200 commits/s, Chroma embedded


def lag_report(dsn: str, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    print(
        f"\nlag: {args.rate:.0f} commits/s for {args.lag_seconds:.0f} s (open loop, "
        f"{args.committers} committer threads), Chroma embedded, commit returned -> mirror "
        "upsert returned (ms)"
    )
    runs = [
        lag_run(dsn, args.rate, args.lag_seconds, workdir, args.committers, args.worker_threads)
        for _ in range(args.runs)
    ]
    med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    per_run = ", ".join(f"{r['p50']:.1f}/{r['p99']:.1f}" for r in runs)
    print(
        f"  p50 {med['p50']:.1f}   p99 {med['p99']:.1f}   max {med['max']:.1f}   "
        f"(runs p50/p99: {per_run}; "
        f"{runs[0]['facts']} facts each)"
    )
    print(
        f"  commits started late: p99 {med['late_p99_ms']:.1f} ms, max {med['late_max_ms']:.1f}"
        " ms after their scheduled time"
    )
    print(
        f"  CPU (cores): worker process {med['worker_cores']:.2f} (inside Chroma's upsert "
        f"{med['chroma_cores']:.2f}), postgres {med['postgres_cores']:.2f}, committers "
        f"{med['committer_cores']:.2f}; {os.cpu_count()} cpu(s), load average "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}"
    )
    print(
        f"  Chroma upsert calls: {med['calls']:.0f} per run, {med['records_per_call']:.0f} "
        f"records per call, {med['call_p50_ms']:.1f} ms p50 / {med['call_p99_ms']:.1f} ms p99 "
        f"per call; the worker spent {med['in_calls_share']:.0%} of the wall time in them"
    )
    behind = med["late_max_ms"] / 1000
    if behind > 0.5:
        print(
            f"  warning: the committers fell {behind:.2f} s behind the schedule: the rate was "
            "not held (the machine is short of CPU), the lag figures do not judge the target",
            file=sys.stderr,
        )
    met = med["p99"] < LAG_TARGET_MS
    print(
        f"  target sync lag p99 at {args.rate:.0f} commits/s: {med['p99']:.1f} ms "
        f"(goal < {LAG_TARGET_MS:.0f} ms): {'met' if met else 'not met'}"
    )
    return {
        "rate": args.rate,
        "seconds": args.lag_seconds,
        "committers": args.committers,
        "p50_ms": med["p50"],
        "p99_ms": med["p99"],
        "max_ms": med["max"],
        "behind_s": behind,  # the latest commit started this long after its scheduled time
        "median": med,
        "target_met": met,
        "runs": runs,
    }


# --- main ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark, print its tables, and return the figures (for benchmarks/harness)."""
    args = parse_args(argv)
    restore = _exit_on_sigterm()
    try:
        with tempfile.TemporaryDirectory(prefix="memstate-bench-sync-") as tmp:
            return run_all(args, Path(tmp))
    finally:
        restore()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--facts", type=int, default=5000, help="facts per throughput run")
    p.add_argument(
        "--batch", type=int, default=500, help="batch size of both the worker and the raw client"
    )
    p.add_argument("--runs", type=int, default=5)
    p.add_argument("--rate", type=float, default=200.0, help="commits per second in the lag test")
    p.add_argument("--lag-seconds", type=float, default=10.0)
    p.add_argument("--committers", type=int, default=8, help="threads sharing the commit schedule")
    p.add_argument(
        "--worker-threads", type=int, default=1, help="SyncWorkers in the lag worker process"
    )
    p.add_argument(
        "--reconcile-facts",
        type=int,
        default=0,
        help="also reconcile this many facts (e.g. 100000)",
    )
    p.add_argument("--page-size", type=int, default=1000)
    p.add_argument("--kinds", default="chroma,qdrant")
    return p.parse_args(argv)


def _exit_on_sigterm() -> Callable[[], None]:
    """SIGTERM -> SystemExit while the benchmark runs, so its cleanup runs (else the embedded
    server outlives it); returns what restores the previous handler."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    return lambda: signal.signal(signal.SIGTERM, previous)


def run_all(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    figures: dict[str, Any] = {"throughput": {}, "lag": None, "reconcile": None}
    admin = os.environ.get("MEMSTATE_DSN")
    embedded_dir = None
    if admin is None:
        from memstate_pg import embedded

        embedded_dir = Path(os.environ.get("MEMSTATE_BENCH_DIR", workdir / "pg"))
        admin = embedded.start(embedded_dir)
    try:
        dsn = fresh_database(admin, "memstate_bench_sync")
        print(
            f"postgres: {'MEMSTATE_DSN' if embedded_dir is None else 'embedded'}; "
            f"{os.cpu_count()} cpu(s); median of {args.runs} runs"
        )
        print(f"\nthroughput: {args.facts} facts, batch {args.batch} (facts/s)")
        print(f"  {'mirror':<16}{'sync worker':>12}{'raw client':>12}{'ratio':>8}")
        for kind in [k for k in args.kinds.split(",") if k]:
            throughput_run(dsn, kind, min(args.facts, 1000), args.batch, workdir, False)  # warm-up
            runs = [
                throughput_run(dsn, kind, args.facts, args.batch, workdir, i % 2 == 1)
                for i in range(args.runs)
            ]
            sync_rate = statistics.median(r[0] for r in runs)
            raw_rate = statistics.median(r[1] for r in runs)
            label = "chroma embedded" if kind == "chroma" else "qdrant :memory:"
            print(
                f"  {label:<16}{sync_rate:>12.0f}{raw_rate:>12.0f}{sync_rate / raw_rate:>7.2f}x"
                f"   (runs: {', '.join(f'{a:.0f}/{b:.0f}' for a, b in runs)})"
            )
            figures["throughput"][kind] = {
                "sync_facts_per_s": sync_rate,
                "raw_facts_per_s": raw_rate,
                "ratio": sync_rate / raw_rate,
                "runs": runs,
            }

        if args.lag_seconds > 0:
            figures["lag"] = lag_report(dsn, args, workdir)

        if args.reconcile_facts:
            secs, peak, checked = reconcile_run(dsn, args.reconcile_facts, workdir, args.page_size)
            print(
                f"\nreconcile: {checked} facts (Chroma embedded, page {args.page_size}): "
                f"{secs:.1f} s, {checked / secs:.0f} facts/s, peak Python allocations {peak:.1f} MiB"
            )
            figures["reconcile"] = {"facts": checked, "seconds": secs, "peak_mib": peak}
    finally:
        if embedded_dir is not None:
            from memstate_pg import embedded

            embedded.stop(embedded_dir)
    return figures


if __name__ == "__main__":
    main()
