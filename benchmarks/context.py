"""What every workload is handed: the sizes, the server, fresh databases, shared datasets.

One `BenchContext` per `python -m benchmarks` run. All databases live on one server:
$MEMSTATE_DSN's, else one embedded server started for the run. Large datasets are loaded
once (see benchmarks/data.py) and shared by the workloads that only read them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from rich.console import Console

from benchmarks import data

DIM = 384
PEER_MODULES = ("memstate", "langgraph.store.postgres")
"""The packages of the comparison peers (MemState 0.5.1, LangGraph's PostgresStore as a
peer of MemoryStore); skipped when `Sizes.peers` is off."""


@dataclass
class Sizes:
    """Every knob that sets how long a run takes."""

    runs: int = 5  # measured runs (after one warm-up)
    single: int = 300  # commits per single-commit run
    batch: int = 1000  # facts per batched transaction
    small: int = 10_000  # "10k" dataset
    large: int = 100_000  # "100k" dataset (0: skip)
    queries: int = 200  # search queries per run
    filtered_queries: int = 40  # filtered-search queries per run (slow plans take 100+ ms each)
    mixed_seconds: float = 5.0  # duration of one mixed-workload run
    mixed_clients: int = 4
    peer_search: int = 10_000  # facts loaded into slow peers (LangGraph, MemState) for search
    reconcile: int = 100_000  # facts in the reconcile benchmark (0: skip)
    mirror_points: int = 5_000  # points per raw mirror-client run
    ef_search: tuple[int, ...] = (40, 100, 200)
    delegate: bool = True  # run other owners' benchmark scripts (sync.py, langgraph_store.py)
    kinds: tuple[str, ...] = ("hashing", "random")  # vector sets of search and filtered
    peers: bool = True  # the comparison peers (MemState 0.5.1, LangGraph) in commits, search
    sync_args: tuple[str, ...] = ()  # argv of benchmarks/sync.py (its defaults when empty)
    scale_facts: int = 1_000_000  # facts per scale database (workload `scale`, on request only)
    scale_namespaces: int = 10_000  # namespaces of the scale "many" database
    scale_dir: str = "/var/tmp/memstate-scale"  # the scale server's data dir (kept)
    scale_reuse: bool = False  # reuse the loaded scale databases when they match
    scale_sections: str = ""  # comma-separated scale sections to run (empty: all)

    @classmethod
    def targets(cls) -> Sizes:
        """The sizes of the issue's targets (`python -m benchmarks --targets`): 10k and 100k
        facts for search, 100k for filtered, 1000-fact batches, 5 interleaved runs; without
        what no target reads (the ef_search sweep, the random vector set, the comparison
        peers, the mixed and reconcile workloads), so that it fits in about 20 minutes on
        2 cores."""
        return cls(
            runs=5,
            single=300,
            batch=1000,
            small=10_000,
            large=100_000,
            queries=200,
            filtered_queries=40,
            peer_search=0,
            reconcile=0,
            mirror_points=5_000,
            ef_search=(40,),
            kinds=("hashing",),
            peers=False,
            sync_args=("--runs", "5", "--rate", "200", "--lag-seconds", "10", "--kinds="),
        )

    @classmethod
    def quick(cls) -> Sizes:
        return cls(
            runs=1,
            single=20,
            batch=100,
            small=300,
            large=600,
            queries=10,
            filtered_queries=10,
            mixed_seconds=0.5,
            mixed_clients=2,
            peer_search=300,
            reconcile=600,
            mirror_points=200,
            ef_search=(40,),
            delegate=False,
            scale_facts=3000,
            scale_namespaces=30,
        )


@dataclass
class BenchContext:
    sizes: Sizes
    quick: bool
    console: Console
    admin_dsn: str = ""
    dim: int = DIM
    _stack: contextlib.ExitStack = field(default_factory=contextlib.ExitStack)
    _datasets: dict[tuple, tuple[str, data.Dataset]] = field(default_factory=dict)
    _tmp: str | None = None
    _n: int = 0

    # -- server ----------------------------------------------------------------------------

    def start(self) -> BenchContext:
        admin = os.environ.get("MEMSTATE_DSN")
        if not admin:
            from memstate_pg import embedded

            self._tmp = tempfile.mkdtemp(prefix="memstate-bench-")
            admin = embedded.start(self._tmp)
            tmp = self._tmp

            def _stop() -> None:
                embedded.stop(tmp)
                shutil.rmtree(tmp, ignore_errors=True)

            self._stack.callback(_stop)
        if not self.sizes.peers:
            from benchmarks import peers

            saved = dict(peers.SKIP)
            peers.SKIP.update(dict.fromkeys(PEER_MODULES, "not measured in this mode"))

            def _restore() -> None:
                peers.SKIP.clear()
                peers.SKIP.update(saved)

            self._stack.callback(_restore)
        self.admin_dsn = admin
        return self

    def close(self) -> None:
        self._stack.close()

    def __enter__(self) -> BenchContext:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def log(self, msg: str) -> None:
        self.console.print(f"[dim]{time.strftime('%H:%M:%S')} {msg}[/dim]")

    # -- databases ------------------------------------------------------------------------

    def _dsn_for(self, name: str) -> str:
        params = conninfo_to_dict(self.admin_dsn)
        params["dbname"] = name
        return make_conninfo(**params)

    @contextlib.contextmanager
    def database(self, label: str, *, migrate: bool = True) -> Iterator[str]:
        """A fresh database (migrated into schema memstate, type ``note`` registered),
        dropped afterwards."""
        self._n += 1
        name = f"msbench_{os.getpid()}_{self._n}_{label}"[:63]
        ident = sql.Identifier(name)
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
        dsn = self._dsn_for(name)
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
            if migrate:
                migrate_and_register(dsn, self.dim)
            yield dsn
        finally:
            with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(ident))

    def dataset(self, kind: str, size: int, *, with_index: bool = True) -> tuple[str, data.Dataset]:
        """A database holding `size` facts of vector kind `kind` in namespace ``bench``
        (loaded once per run, kept until the end). Read-only for the workloads. Without
        `with_index` the HNSW build is left out (until a workload asks for it)."""
        key = (kind, size)
        if key not in self._datasets:
            dsn = self._stack.enter_context(self.database(f"{kind}_{size}"))
            self.log(
                f"loading {size:,} {kind} facts (COPY{', then HNSW build' if with_index else ''})…"
            )
            ds = data.bulk_load(
                dsn, kind=kind, n=size, dim=self.dim, namespace="bench", with_index=False
            )
            self._datasets[key] = (dsn, ds)
            self.log(f"  loaded in {ds.load_seconds:.1f} s")
        dsn, ds = self._datasets[key]
        if with_index and not ds.index_seconds:
            data.build_index(dsn, ds)
            self.log(f"  HNSW index of {size:,} {kind} facts built in {ds.index_seconds:.1f} s")
        return dsn, ds

    def drop_dataset(self, kind: str, size: int) -> None:
        """Forget a dataset (its database is dropped at the end of the run)."""
        self._datasets.pop((kind, size), None)


def migrate_and_register(dsn: str, dim: int) -> None:
    from memstate_pg import HashingEmbedder, MemoryStore

    with MemoryStore(dsn, embedder=HashingEmbedder(dim=dim), min_size=1, max_size=1) as mem:
        mem.migrate()
        mem.register_schema("note", None, text_field="text")


def server_info(dsn: str) -> dict[str, Any]:
    with psycopg.connect(dsn) as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        vec = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
        settings = dict(
            conn.execute(
                "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN "
                "('shared_buffers', 'work_mem', 'maintenance_work_mem', 'max_parallel_maintenance_workers', "
                "'synchronous_commit', 'fsync', 'max_connections')"
            ).fetchall()
        )
    return {"postgresql": pg, "pgvector": vec[0] if vec else None, "pg_settings": settings}


def timed_rate(fn: Callable[[], int]) -> float:
    """Runs `fn` (which returns how many operations it did); returns operations/s."""
    t0 = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - t0)


def latencies_ms(fn: Callable[[Any], Any], items) -> tuple[list[float], list[Any]]:
    """Calls fn(item) for each item; returns (latencies in ms, results)."""
    lat, out = [], []
    for item in items:
        t0 = time.perf_counter()
        out.append(fn(item))
        lat.append((time.perf_counter() - t0) * 1000.0)
    return lat, out
