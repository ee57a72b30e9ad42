"""A million facts: `python -m benchmarks --only scale` (never part of the default run).

Two databases of `--scale-facts` facts each (default 1,000,000), 384-d clustered vectors
(benchmarks/scale_data.py), on a server of their own kept on disk in `--scale-dir`
(default /var/tmp/memstate-scale; with $MEMSTATE_DSN, databases ``msscale_one`` and
``msscale_many`` on that server instead), so `--scale-reuse` reruns the sections without
reloading:

* ``one``: every fact in one namespace (1.3 versions per fact, 31 commits);
* ``many``: the same number of facts over `--scale-namespaces` namespaces (default 10,000:
  100 facts each).

Two databases rather than one table of 2M: each side is then exactly what it claims (a
namespace of 1M facts whose HNSW index holds 1M entries; 10,000 tenants sharing a 1M
index), the total cost is the same (two COPYs of 1M rows, two builds of 1M-entry graphs),
and the two builds measure `max_parallel_maintenance_workers` 1 and 2 on equal data.

Sections, each a table (same-run ratios):
  build      COPY time, HNSW build time and size (workers 1 on ``one``, 2 on ``many``);
  search     top-10 on ``one``, unfiltered: raw pgvector SQL vs MemoryStore.search
             (hnsw.ef_search 40 and 100), p50/p95 and tie-aware recall@10;
  filtered   the same with a 1% payload filter (10,000 of 1M match: above the exact
             pre-filter cap, so HNSW with iterative scan) vs raw SQL with iterative scan;
  namespace  top-10 in one namespace of ``many`` vs raw SQL exact top-10 of the namespace;
  commit     single-fact commits into the 1M table (a fresh namespace, same HNSW index)
             vs the raw floor (three pipelined INSERTs) on the same table;
  reconcile  an in-memory mirror of the 1M facts, drifted and reconciled with repair, in a
             child process (time; resident-set peak; Python allocation peak), see
             benchmarks/scale_reconcile.py;
  compact    `compact --older-than 7d --keep-versions 1` on a copy of ``one`` (0.3M old
             versions), when the store has `compact`;
  replica    replay lag of a streaming standby of the scale server under a commit load,
             when memstate_pg has read replicas.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import numpy as np
import psycopg
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from benchmarks import scale_data
from benchmarks.context import BenchContext, migrate_and_register, timed_rate
from benchmarks.harness import BenchResult
from benchmarks.workloads.search import Entry, FixedModel
from memstate_pg import Fact, MemoryStore

K = 10
SECTIONS = ("build", "search", "filtered", "namespace", "reconcile", "commit", "compact", "replica")
DEFAULT_DIR = "/var/tmp/memstate-scale"
SERVER_SETTINGS = {
    # the embedded wheel's defaults (128MB buffers, 1GB max_wal_size) are for a laptop;
    # the scale server gets what a 1M-fact deployment on this machine would be given
    "shared_buffers": "2GB",
    "effective_cache_size": "12GB",
    "max_wal_size": "16GB",
    "checkpoint_timeout": "30min",
}
MAINTENANCE_WORK_MEM = "4GB"  # the 1M-entry graph (≈ 2 GB) must fit, else the build crawls
BUILD_WORKERS = {"one": 1, "many": 2}
DB_NAMES = {"one": "msscale_one", "many": "msscale_many"}


def _dsn_for(admin: str, name: str) -> str:
    params = conninfo_to_dict(admin)
    params["dbname"] = name
    return make_conninfo(**params)


class ScaleServer:
    """The server the scale databases live on (see the module docstring)."""

    def __init__(self, ctx: BenchContext) -> None:
        self.ctx = ctx
        self.dir = Path(getattr(ctx.sizes, "scale_dir", None) or DEFAULT_DIR)
        self.embedded = not os.environ.get("MEMSTATE_DSN")
        self.admin = ctx.admin_dsn

    def start(self) -> str:
        if not self.embedded:
            return self.admin
        from memstate_pg import embedded

        self.dir.mkdir(parents=True, exist_ok=True)
        self.admin = embedded.start(self.dir)
        with psycopg.connect(self.admin, autocommit=True) as conn:
            current = dict(
                conn.execute(
                    "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name = ANY(%s)",
                    (list(SERVER_SETTINGS),),
                ).fetchall()
            )
            todo = {k: v for k, v in SERVER_SETTINGS.items() if _norm(current.get(k)) != _norm(v)}
            for k, v in todo.items():
                conn.execute(sql.SQL("ALTER SYSTEM SET {} = {}").format(sql.Identifier(k), v))
        if todo:
            self.ctx.log(f"scale server: {todo}; restarting")
            embedded.stop(self.dir)
            self.admin = embedded.start(self.dir)
        self.ctx._stack.callback(embedded.stop, self.dir)
        return self.admin

    def dsn(self, kind: str) -> str:
        return _dsn_for(self.admin, DB_NAMES[kind])

    def settings(self) -> dict:
        with psycopg.connect(self.admin) as conn:
            return dict(
                conn.execute(
                    "SELECT name, setting || coalesce(unit, '') FROM pg_settings WHERE name IN "
                    "('shared_buffers', 'effective_cache_size', 'work_mem', 'max_wal_size', "
                    "'max_parallel_maintenance_workers', 'synchronous_commit')"
                ).fetchall()
            )


def _norm(v: str | None) -> str | None:
    """'2GB' and '262144 8kB' compare equal."""
    if v is None:
        return None
    units = {"kB": 1024, "8kB": 8192, "MB": 2**20, "GB": 2**30, "s": 1, "min": 60, "ms": 0.001}
    for u in sorted(units, key=len, reverse=True):
        if v.endswith(u) and v[: -len(u)].strip().replace(".", "").isdigit():
            return str(float(v[: -len(u)]) * units[u])
    return v


# --- the datasets ----------------------------------------------------------------------------


def ensure_dataset(
    ctx: BenchContext, server: ScaleServer, kind: str, space: scale_data.VectorSpace
) -> tuple[str, scale_data.ScaleSet]:
    """The `kind` database, loaded and indexed (reused when --scale-reuse and it matches)."""
    sz = ctx.sizes
    n = sz.scale_facts
    namespaces = sz.scale_namespaces if kind == "many" else 1
    want = {
        "loader": scale_data.LOADER_VERSION,
        "kind": kind,
        "n": n,
        "namespaces": namespaces,
        "space": space.__dict__,
    }
    dsn = server.dsn(kind)
    ctx.log(f"scale: generating {n:,} vectors ({kind})…")
    ds = scale_data.generate(kind, n, namespaces, space)
    meta = scale_data.read_meta(dsn) if getattr(sz, "scale_reuse", False) else None
    if meta and meta.get("params") == want and meta.get("index"):
        ctx.log(f"scale: reusing {DB_NAMES[kind]} (loaded {meta.get('loaded_at')}); migrating")
        migrate_and_register(dsn, ctx.dim)  # to this commit's schema (a no-op when current)
        _reapply_head(dsn)
        ds.meta = {**meta, "reused": True}
        return dsn, ds
    name = sql.Identifier(DB_NAMES[kind])
    with psycopg.connect(server.admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(name))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(name))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    migrate_and_register(dsn, ctx.dim)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT memstate.register_model(%s, %s)", (scale_data.MODEL, space.dim))
    ctx.log(f"scale: loading {DB_NAMES[kind]} ({n:,} facts, {namespaces:,} namespace(s))…")
    loaded = scale_data.load(dsn, ds, log=ctx.log)
    ctx.log(
        f"scale: loaded in {loaded['load_seconds']} s; building HNSW (workers={BUILD_WORKERS[kind]})…"
    )
    notices: list[str] = []
    index = scale_data.build_index(
        dsn,
        (loaded["index_name"], loaded["index_ddl"]),
        workers=BUILD_WORKERS[kind],
        maintenance_work_mem=MAINTENANCE_WORK_MEM,
        notices=notices,
    )
    index["notices"] = notices
    ctx.log(
        f"scale: HNSW built in {index['index_seconds']} s, {index['index_bytes'] / 2**30:.2f} GiB"
    )
    meta = {
        "params": want,
        "load": loaded,
        "index": index,
        "loaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    scale_data.write_meta(dsn, meta)
    ds.meta = meta
    return dsn, ds


def _reapply_head(dsn: str) -> None:
    """Run the newest migration file again on a reused database: until a release freezes
    it, the head migration is re-assembled as SQL lands (same revision, new functions), so
    a database migrated earlier would keep the older functions. Its statements are
    idempotent (IF NOT EXISTS, CREATE OR REPLACE), as every migration's must be."""
    from memstate_pg import sqlfiles

    head = max(p.name for p in sqlfiles.MIGRATIONS_DIR.glob("0*.sql"))
    with psycopg.connect(dsn) as conn, conn.transaction():
        sqlfiles.execute_migration_file(conn, head)


# --- exact ground truth ---------------------------------------------------------------------


class Truth:
    """Exact top-k of each query over a dataset (optionally over a subset of rows)."""

    def __init__(
        self, ds: scale_data.ScaleSet, qvecs: np.ndarray, rows: list[np.ndarray] | None = None
    ) -> None:
        self.ds, self.q = ds, qvecs
        self.rows = rows
        self.kth: list[float] = []
        self.top: list[set[str]] = []
        self.size: list[int] = []
        for i, q in enumerate(qvecs):
            if rows is None:
                dist = 1.0 - ds.matrix @ q
                idx = None
            else:
                idx = rows[i]
                dist = 1.0 - ds.matrix[idx] @ q
            k = min(K, len(dist))
            part = np.argpartition(dist, k - 1)[:k]
            order = part[np.argsort(dist[part], kind="stable")]
            self.kth.append(float(dist[order[-1]]))
            picked = order if idx is None else idx[order]
            self.top.append({str(ds.ids[r]) for r in picked})
            self.size.append(k)
        self.allowed = None if rows is None else [set(r.tolist()) for r in rows]

    def recall(self, i: int, returned: list[str], eps: float = 1e-5) -> tuple[float, float]:
        """(strict, tie-aware) recall@k of query i, as in benchmarks/data.recall_at_k."""
        got = list(dict.fromkeys(returned[:K]))
        strict = len(self.top[i] & set(got)) / self.size[i]
        good = 0
        for fid in got:
            r = self.ds.row_of.get(fid)
            if r is None or (self.allowed is not None and r not in self.allowed[i]):
                continue
            if 1.0 - float(self.ds.matrix[r] @ self.q[i]) <= self.kth[i] + eps:
                good += 1
        return strict, good / self.size[i]


def measure(
    ctx: BenchContext, res: BenchResult, truth: Truth, entries: list[Entry], runs: int
) -> None:
    """One warm-up pass per entry (its answers give the recall), then `runs` passes with
    the entries taking turns query by query (the order rotating), so noise hits all alike."""
    idx = range(len(truth.q))
    warm = [[e.call(i) for i in idx] for e in entries]
    lat: list[list[float]] = [[] for _ in entries]
    order = list(range(len(entries)))
    for _ in range(runs):
        for i in idx:
            shift = i % len(order)
            for j in order[shift:] + order[:shift]:
                t0 = time.perf_counter()
                entries[j].call(i)
                lat[j].append((time.perf_counter() - t0) * 1000.0)
    for e, times, got in zip(entries, lat, warm, strict=True):
        strict, tie = zip(*(truth.recall(i, got[i]) for i in idx), strict=True)
        res.add(
            e.label,
            times,
            baseline=e.baseline,
            runs=runs,
            note=e.note,
            recall_tie=float(np.mean(tie)),
            recall_strict=float(np.mean(strict)),
        )


def _lit(v: np.ndarray) -> str:
    return "[" + ",".join(map(repr, map(float, v.tolist()))) + "]"


class Raw:
    """Raw SQL top-k on one connection (same index expression as memstate.search)."""

    def __init__(self, dsn: str, query: str, settings: dict[str, str] | None = None) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True)
        for k, v in (settings or {}).items():
            self.conn.execute(f"SET {k} = '{v}'")
        self.sql = query

    def __call__(self, **params) -> list[str]:
        return [str(r[0]) for r in self.conn.execute(self.sql, params, prepare=True).fetchall()]

    def close(self) -> None:
        self.conn.close()


EXPR = "embedding::vector(384) <=> %(q)s::vector(384)"
RAW_TOPK = (
    f"SELECT fact_id, 1 - ({EXPR}) AS score, payload, content FROM memstate.facts "
    f"WHERE embedding_model = %(model)s AND namespace = %(ns)s {{where}} ORDER BY {EXPR} LIMIT %(k)s"
)
RAW_EXACT_NS = (
    f"WITH c AS MATERIALIZED (SELECT fact_id, payload, content, {EXPR} AS distance "
    "FROM memstate.facts WHERE embedding_model = %(model)s AND namespace = %(ns)s) "
    "SELECT fact_id, 1 - distance AS score, payload, content FROM c ORDER BY distance LIMIT %(k)s"
)


@contextlib.contextmanager
def store(dsn: str, ef_search: int | None = None):
    opts = {"options": f"-c hnsw.ef_search={ef_search}"} if ef_search else {}
    with ConnectionPool(
        dsn, min_size=1, max_size=1, open=True, kwargs={"autocommit": True, **opts}
    ) as pool:
        yield MemoryStore(pool, embedder=FixedModel(scale_data.MODEL, 384))


def ids_of(hits) -> list[str]:
    return [str(h.fact.id) for h in hits]


# --- sections -----------------------------------------------------------------------------


def section_build(sets: dict[str, scale_data.ScaleSet]) -> BenchResult:
    res = BenchResult(
        "scale_build",
        "Scale: bulk load and HNSW build",
        "s",
        False,
        "per run",
        params={
            "dim": 384,
            "hnsw": "m=16 ef_construction=64",
            "maintenance_work_mem": MAINTENANCE_WORK_MEM,
        },
    )
    for kind, ds in sets.items():
        idx, load = ds.meta["index"], ds.meta["load"]
        where = "1 namespace" if kind == "one" else f"{ds.namespaces:,} namespaces"
        res.add(
            f"HNSW build, {ds.n:,} facts in {where} (parallel workers={idx['workers']})",
            [idx["index_seconds"]],
            runs=1,
            index_gib=idx["index_bytes"] / 2**30,
            facts_table_gib=idx["table_bytes"].get("facts", 0) / 2**30,
            versions_table_gib=idx["table_bytes"].get("fact_versions", 0) / 2**30,
            note="; ".join(idx.get("notices") or []),
        )
        res.add(
            f"COPY load + VACUUM ANALYZE, {ds.n:,} facts in {where} "
            f"({load['versions']:,} versions, {load['commits']:,} commits)",
            [load["load_seconds"]],
            runs=1,
            note="row triggers skipped (session_replication_role)"
            if load["triggers_skipped"]
            else "",
        )
    return res


def section_search(ctx: BenchContext, dsn: str, ds, space, stack) -> BenchResult:
    nq = ctx.sizes.queries
    qvecs = space.draw(nq, stream=2)
    lits = [_lit(v) for v in qvecs]
    res = BenchResult(
        "scale_search",
        f"Scale: search top-{K}, {ds.n:,} facts in one namespace",
        "ms",
        False,
        "per query",
        params={"facts": ds.n, "dim": 384, "k": K, "queries": nq, "runs": ctx.sizes.runs},
    )
    ctx.log("scale: search (unfiltered)…")
    truth = Truth(ds, qvecs)
    entries = []
    for ef in (40, 100):
        raw = Raw(dsn, RAW_TOPK.format(where=""), {"hnsw.ef_search": str(ef)})
        stack.callback(raw.close)
        mem = stack.enter_context(store(dsn, ef_search=ef))
        entries += [
            Entry(
                f"raw pgvector SQL (ef_search={ef})",
                lambda i, r=raw: r(q=lits[i], model=scale_data.MODEL, ns=scale_data.NAMESPACE, k=K),
                baseline=ef == 40,
            ),
            Entry(
                f"MemoryStore.search (vector given, ef_search={ef})",
                lambda i, m=mem: ids_of(
                    m.search(qvecs[i].tolist(), k=K, namespace=scale_data.NAMESPACE)
                ),
            ),
        ]
    measure(ctx, res, truth, entries, ctx.sizes.runs)
    return res


def section_filtered(ctx: BenchContext, dsn: str, ds, space, stack) -> BenchResult:
    nq = ctx.sizes.filtered_queries
    qvecs = space.draw(nq, stream=3)
    lits = [_lit(v) for v in qvecs]
    buckets = [j % scale_data.BUCKETS for j in range(nq)]
    res = BenchResult(
        "scale_filtered",
        f"Scale: filtered search top-{K} (1% payload filter), {ds.n:,} facts in one namespace",
        "ms",
        False,
        "per query",
        params={
            "facts": ds.n,
            "matching": ds.n // scale_data.BUCKETS,
            "dim": 384,
            "k": K,
            "queries": nq,
            "runs": ctx.sizes.runs,
        },
    )
    ctx.log("scale: filtered search (1%)…")
    all_b = ds.buckets
    truth = Truth(ds, qvecs, [np.flatnonzero(all_b == b) for b in buckets])
    raw = Raw(
        dsn,
        RAW_TOPK.format(where="AND payload @> %(f)s::jsonb"),
        {
            "hnsw.iterative_scan": "relaxed_order",
            "enable_seqscan": "off",
            "enable_bitmapscan": "off",
        },
    )
    stack.callback(raw.close)
    mem = stack.enter_context(store(dsn))
    filters = [json.dumps({"bucket": b}) for b in buckets]
    entries = [
        Entry(
            "raw SQL, HNSW + iterative_scan=relaxed_order",
            lambda i: raw(
                q=lits[i], model=scale_data.MODEL, ns=scale_data.NAMESPACE, k=K, f=filters[i]
            ),
            baseline=True,
        ),
        Entry(
            "MemoryStore.search(filters=…)",
            lambda i: ids_of(
                mem.search(
                    qvecs[i].tolist(),
                    k=K,
                    namespace=scale_data.NAMESPACE,
                    filters={"bucket": buckets[i]},
                )
            ),
        ),
    ]
    measure(ctx, res, truth, entries, ctx.sizes.runs)
    return res


def section_namespace(ctx: BenchContext, dsn: str, ds, space, stack) -> BenchResult:
    nq = ctx.sizes.queries
    qvecs = space.draw(nq, stream=4)
    lits = [_lit(v) for v in qvecs]
    rng = np.random.default_rng(5)
    picks = [int(x) for x in rng.integers(0, ds.namespaces, nq)]
    names = [scale_data.namespace_of(p, ds.namespaces) for p in picks]
    res = BenchResult(
        "scale_namespace",
        f"Scale: search top-{K} in one of {ds.namespaces:,} namespaces ({ds.n:,} facts in the table)",
        "ms",
        False,
        "per query",
        params={
            "facts": ds.n,
            "namespaces": ds.namespaces,
            "per_namespace": ds.n // ds.namespaces,
            "dim": 384,
            "k": K,
            "queries": nq,
            "runs": ctx.sizes.runs,
        },
    )
    ctx.log("scale: per-namespace search…")
    truth = Truth(ds, qvecs, [ds.namespace_rows(p) for p in picks])
    exact = Raw(dsn, RAW_EXACT_NS)
    planner = Raw(dsn, RAW_TOPK.format(where=""))
    stack.callback(exact.close)
    stack.callback(planner.close)
    mem = stack.enter_context(store(dsn))
    entries = [
        Entry(
            "raw pgvector SQL exact top-10 of the namespace",
            lambda i: exact(q=lits[i], model=scale_data.MODEL, ns=names[i], k=K),
            baseline=True,
            note="MATERIALIZED CTE of the namespace's rows, exact sort",
        ),
        Entry(
            "raw pgvector SQL, planner's choice, in the namespace",
            lambda i: planner(q=lits[i], model=scale_data.MODEL, ns=names[i], k=K),
        ),
        Entry(
            "MemoryStore.search in the namespace",
            lambda i: ids_of(mem.search(qvecs[i].tolist(), k=K, namespace=names[i])),
        ),
    ]
    measure(ctx, res, truth, entries, ctx.sizes.runs)
    return res


def floor_single(conn: psycopg.Connection, ns: str, items: list[tuple[str, str]]) -> int:
    """benchmarks/commit.py's floor (a commit row, the fact, its version: three INSERTs
    pipelined in one transaction), with the scale model's vectors."""
    for text, vec in items:
        fid = uuid.uuid4()
        payload = json.dumps({"text": text})
        with conn.transaction(), conn.pipeline():
            cur = conn.execute(
                "INSERT INTO memstate.commits (namespace) VALUES (%s) RETURNING seq", (ns,)
            )
            conn.execute(
                "INSERT INTO memstate.facts (fact_id, namespace, type, payload, content, embedding,"
                " embedding_model, version, commit_seq) VALUES (%s, %s, 'note', %s::jsonb, %s,"
                " %s::vector, %s, 1, currval('memstate.commits_seq_seq'))",
                (fid, ns, payload, text, vec, scale_data.MODEL),
            )
            conn.execute(
                "INSERT INTO memstate.fact_versions (fact_id, version, seq, namespace, type, op,"
                " payload, content, embedding, embedding_model) VALUES (%s, 1,"
                " currval('memstate.commits_seq_seq'), %s, 'note', 'put', %s::jsonb, %s,"
                " %s::vector, %s)",
                (fid, ns, payload, text, vec, scale_data.MODEL),
            )
        cur.fetchone()
    return len(items)


def section_commit(ctx: BenchContext, dsn: str, ds, space) -> BenchResult:
    n, runs = ctx.sizes.single, ctx.sizes.runs
    res = BenchResult(
        "scale_commit",
        f"Scale: single-fact commits into the {ds.n:,}-fact table",
        "commits/s",
        True,
        "per run",
        params={"facts_in_table": ds.n, "commits_per_run": n, "runs": runs, "dim": 384},
    )
    ctx.log("scale: single commits…")
    tag = time.strftime("%H%M%S")
    rates: dict[str, list[float]] = {"floor": [], "ours": []}
    with (
        psycopg.connect(dsn, autocommit=True) as raw,
        store(dsn) as mem,
    ):

        def items(r: int, who: str) -> list[tuple[str, np.ndarray]]:
            vecs = space.draw(n, stream=100 + 2 * r + (who == "ours"))
            return [(f"scale write {who} {tag} {r} {i}", v) for i, v in enumerate(vecs)]

        def floor_round(r: int) -> Callable[[], int]:
            its = [(t, _lit(v)) for t, v in items(r, "floor")]
            return lambda: floor_single(raw, f"scale_wf_{tag}", its)

        def ours_round(r: int) -> Callable[[], int]:
            facts = [
                Fact(type="note", payload={"text": t}, embedding=v.tolist())
                for t, v in items(r, "ours")
            ]
            return lambda: len([mem.commit(f, namespace=f"scale_wm_{tag}") for f in facts])

        floor_round(-1)()
        ours_round(-1)()
        for r in range(runs):
            for label, prep in (("floor", floor_round), ("ours", ours_round)):
                rates[label].append(timed_rate(prep(r)))
            ctx.log(
                f"  run {r + 1}/{runs}: floor {rates['floor'][-1]:,.0f}/s, ours {rates['ours'][-1]:,.0f}/s"
            )
    res.add("raw psycopg floor (3 inserts, pipelined)", rates["floor"], baseline=True, runs=runs)
    res.add("MemoryStore.commit (vector given)", rates["ours"], runs=runs)
    res.notes.append(
        "writes go to fresh namespaces of the 1M-fact table, so into the same 1M-entry HNSW "
        "index, without touching the namespace the searches measure"
    )
    return res


def section_reconcile(ctx: BenchContext, dsn: str, ds) -> BenchResult:
    res = BenchResult(
        "scale_reconcile",
        f"Scale: reconcile a mirror of {ds.n:,} facts (in-memory mirror, float32 vectors)",
        "facts/s",
        True,
        "per run",
        params={"facts": ds.n, "drift": "1% missing, 1% stale, 0.5% ghosts", "page_size": 1000},
    )
    ctx.log("scale: reconcile (child process)…")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(Path(__file__).parents[2]), *sys.path])}
    out = subprocess.run(
        [sys.executable, "-m", "benchmarks.scale_reconcile", dsn, str(ds.n)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if out.returncode != 0:
        res.skipped = f"child failed: {out.stderr.strip().splitlines()[-1] if out.stderr.strip() else out.returncode}"
        ctx.log(out.stderr[-2000:])
        return res
    got = json.loads(out.stdout.strip().splitlines()[-1])
    for run in got["runs"]:
        rep = run["report"]
        res.add(
            f"reconcile(repair=True), {run['run']} mirror",
            [run["rate"]],
            runs=1,
            seconds=run["seconds"],
            rss_before_mb=run["rss_before_mb"],
            rss_peak_mb=run["rss_peak_mb"] or float("nan"),
            rss_added_mb=run["rss_added_mb"] if run["rss_added_mb"] is not None else float("nan"),
            missing=rep.get("missing", 0),
            stale=rep.get("stale", 0),
            ghosts=rep.get("ghosts", 0),
        )
    res.params["mirror_fill_seconds"] = got["fill_seconds"]
    res.params["tracemalloc_peak_mb"] = got["tracemalloc_peak_mb"]
    res.notes.append(
        "mirror: in memory, float32 vectors, in a child process (benchmarks/scale_reconcile.py); "
        f"rss_added_mb = peak resident set during the run minus before it; Python allocation "
        f"peak of a third, traced run (tracemalloc): {got['tracemalloc_peak_mb']} MB"
    )
    return res


def section_compact(ctx: BenchContext, server: ScaleServer, ds) -> BenchResult:
    res = BenchResult(
        "scale_compact",
        f"Scale: compact --older-than 7d --keep-versions 1 on {ds.n:,} facts "
        f"({ds.n // scale_data.UPDATE_EVERY * scale_data.UPDATE_ROUNDS:,} old versions)",
        "versions/s",
        True,
        "per run",
        params={"facts": ds.n},
    )
    if not hasattr(MemoryStore, "compact"):
        res.skipped = "not run: MemoryStore.compact does not exist on this commit"
        return res
    return _run_compact(ctx, server, ds, res)


def _run_compact(ctx: BenchContext, server: ScaleServer, ds, res: BenchResult) -> BenchResult:
    from datetime import timedelta

    copy = sql.Identifier(DB_NAMES["one"] + "_compact")
    with psycopg.connect(server.admin, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(copy))
        t0 = time.perf_counter()
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {} STRATEGY FILE_COPY").format(
                copy, sql.Identifier(DB_NAMES["one"])
            )
        )
        res.params["copy_seconds"] = round(time.perf_counter() - t0, 1)
    dsn = _dsn_for(server.admin, DB_NAMES["one"] + "_compact")
    try:
        with psycopg.connect(dsn) as conn:
            before = conn.execute("SELECT count(*) FROM memstate.fact_versions").fetchone()[0]
        with MemoryStore(dsn, embedder=FixedModel(scale_data.MODEL, 384), max_size=2) as mem:
            t0 = time.perf_counter()
            report = mem.compact(
                keep_versions=1, older_than=timedelta(days=7), namespace=scale_data.NAMESPACE
            )
            secs = time.perf_counter() - t0
        with psycopg.connect(dsn) as conn:
            after = conn.execute("SELECT count(*) FROM memstate.fact_versions").fetchone()[0]
        deleted = before - after
        res.add(
            "MemoryStore.compact(keep_versions=1, older_than=7 days)",
            [deleted / secs if secs else 0.0],
            runs=1,
            seconds=round(secs, 1),
            versions_before=before,
            versions_deleted=deleted,
        )
        res.params["report"] = _jsonable(report)
    finally:
        with psycopg.connect(server.admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(copy))
    return res


def _jsonable(x):
    if hasattr(x, "model_dump"):
        return x.model_dump(mode="json")
    try:
        json.dumps(x, default=str)
        return x
    except TypeError:
        return repr(x)


def section_replica(ctx: BenchContext, server: ScaleServer, ds) -> BenchResult:
    res = BenchResult(
        "scale_replica",
        "Scale: replica replay lag under a commit load (1M-fact table)",
        "ms",
        False,
        "per sample",
        params={"facts": ds.n},
    )
    try:
        from benchmarks import scale_replica
    except ImportError as exc:
        res.skipped = f"not run: {exc}"
        return res
    return scale_replica.run(ctx, server, ds, res)


# --- entry point ------------------------------------------------------------------------------


def run(ctx: BenchContext) -> list[BenchResult]:
    started = time.perf_counter()
    server = ScaleServer(ctx)
    server.start()
    space = scale_data.VectorSpace()
    sets: dict[str, scale_data.ScaleSet] = {}
    dsns: dict[str, str] = {}
    for kind in ("one", "many"):
        dsns[kind], sets[kind] = ensure_dataset(ctx, server, kind, space)
    wanted = {x.strip() for x in (ctx.sizes.scale_sections or "").split(",") if x.strip()}
    unknown = wanted - set(SECTIONS)
    if unknown:
        raise ValueError(f"unknown scale section(s) {sorted(unknown)}; choose from {SECTIONS}")

    def on(name: str) -> bool:
        return not wanted or name in wanted

    out = [section_build(sets)] if on("build") else []
    with contextlib.ExitStack() as stack:
        sections: list[tuple[str, Callable[[], BenchResult]]] = [
            ("search", lambda: section_search(ctx, dsns["one"], sets["one"], space, stack)),
            ("filtered", lambda: section_filtered(ctx, dsns["one"], sets["one"], space, stack)),
            ("namespace", lambda: section_namespace(ctx, dsns["many"], sets["many"], space, stack)),
        ]
        for name, fn in sections:
            if on(name):
                out.append(_guard(ctx, name, fn))
    sets["many"].matrix = np.empty((0, 384), dtype=np.float32)  # free 1.5 GB before the child
    later: list[tuple[str, Callable[[], BenchResult]]] = [
        ("reconcile", lambda: section_reconcile(ctx, dsns["one"], sets["one"])),
        ("commit", lambda: section_commit(ctx, dsns["one"], sets["one"], space)),
        ("compact", lambda: section_compact(ctx, server, sets["one"])),
        ("replica", lambda: section_replica(ctx, server, sets["one"])),
    ]
    for name, fn in later:
        if on(name):
            out.append(_guard(ctx, name, fn))
    total = round(time.perf_counter() - started, 1)
    for r in out:
        r.params.setdefault("scale_seconds_total", total)
        r.params["server"] = "embedded (own data dir)" if server.embedded else "MEMSTATE_DSN"
    if out:
        out[0].params["server_settings"] = server.settings()
        out[0].params["reused"] = bool(getattr(ctx.sizes, "scale_reuse", False)) and all(
            s.meta.get("reused") for s in sets.values()
        )
    ctx.log(f"scale: done in {total:.0f} s")
    return out


def _guard(ctx: BenchContext, name: str, fn: Callable[[], BenchResult]) -> BenchResult:
    import traceback

    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - one broken section must not sink the rest
        traceback.print_exc()
        return BenchResult(
            f"scale_{name}", f"Scale: {name}", "", True, "", skipped=f"failed: {exc!r}"
        )
