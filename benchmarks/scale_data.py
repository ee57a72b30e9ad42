"""The data of the scale benchmark (benchmarks/workloads/scale.py): clustered 384-d vectors,
and two bulk-loaded databases of `n` facts each, kept on disk between runs.

Vectors. Real sentence embeddings are neither uniform on the sphere (where every
neighbour sits at the same distance and HNSW recall collapses) nor tied (the hashing
embedder of templated texts): they have a low intrinsic dimension and form topics. Here a
point is ``normalize(z @ W + noise)`` where ``z`` is drawn from a mixture of
`clusters` Gaussians in a `latent`-d space and ``W`` a fixed random projection to
`dim` dimensions; queries are fresh draws from the same mixture. Everything derives from
one seed, so a reused database gets the same vectors back in memory (the exact ground
truth of recall) without reading them from Postgres.

Databases (same layout as memstate writes them: commits, facts, fact_versions):

* ``one``: `n` facts in namespace ``scale``. Commit 1 (60 days ago) puts them all; then
  three rounds (50, 40 and 30 days ago) of 10 commits each update every 10th fact's
  payload (vector unchanged, carried on every version row): ``1.3 n`` version rows, 31
  commits. This is the history that ``compact --older-than 7d --keep-versions 1`` trims.
* ``many``: `n` facts over `namespaces` namespaces (``t00000``…, fact ``i`` in namespace
  ``i % namespaces``), one commit per namespace (60 days ago), one version each.

Loading is a binary COPY of every table (vectors in pgvector's binary form straight from
the float32 matrix) with ``session_replication_role = replica`` when the role may set it
(a superuser: the embedded server), so the per-row rule triggers, which only re-check what
the generator guarantees (types registered, versions 1, 2, 3… in one namespace, dims),
are skipped; without that privilege they run. The model's HNSW index is dropped before and
built once afterwards (`build_index`).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

import numpy as np
import psycopg

MODEL = "scale-clustered-384"
NAMESPACE = "scale"
BUCKETS = 100  # payload.bucket = i % 100: a 1% filter
UPDATE_EVERY = 10  # every 10th fact of `one` gets three updates
UPDATE_ROUNDS = 3
COMMITS_PER_ROUND = 10
LOADER_VERSION = 1  # bump when the layout changes: reused databases are then reloaded


@dataclass(frozen=True)
class VectorSpace:
    """The clustered generator (see the module docstring)."""

    dim: int = 384
    seed: int = 20261128
    clusters: int = 2000
    latent: int = 48
    spread: float = 0.45
    noise: float = 0.08

    def _basis(self) -> tuple[np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        centres = rng.standard_normal((self.clusters, self.latent), dtype=np.float32)
        w = rng.standard_normal((self.latent, self.dim), dtype=np.float32) / np.sqrt(self.latent)
        return centres, w.astype(np.float32)

    def draw(self, n: int, stream: int, chunk: int = 100_000) -> np.ndarray:
        """`n` unit vectors (float32) from stream `stream` (0: facts; others: queries…)."""
        centres, w = self._basis()
        rng = np.random.default_rng([self.seed, stream])
        labels = rng.integers(0, self.clusters, n)
        out = np.empty((n, self.dim), dtype=np.float32)
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            z = centres[labels[s:e]] + self.spread * rng.standard_normal(
                (e - s, self.latent), dtype=np.float32
            )
            x = z @ w + self.noise * rng.standard_normal((e - s, self.dim), dtype=np.float32)
            x /= np.linalg.norm(x, axis=1, keepdims=True)
            out[s:e] = x
        return out


def fact_ids(n: int, seed: int) -> list[uuid.UUID]:
    rng = np.random.default_rng([seed, 99])
    return [uuid.UUID(int=int(x), version=4) for x in rng.integers(0, 2**62, n)]


def text_of(i: int) -> str:
    return f"scale fact {i} about topic {i % 997}"


def namespace_of(i: int, namespaces: int) -> str:
    return f"t{i % namespaces:05d}"


@dataclass
class ScaleSet:
    """What a workload needs of a loaded database: ids, vectors, where each row lives."""

    kind: str  # "one" or "many"
    n: int
    namespaces: int
    ids: list[uuid.UUID]
    matrix: np.ndarray
    row_of: dict[str, int] = field(default_factory=dict)
    meta: dict = field(default_factory=dict)  # as stored in public.scale_meta

    def __post_init__(self) -> None:
        if not self.row_of:
            self.row_of = {str(f): r for r, f in enumerate(self.ids)}

    @property
    def buckets(self) -> np.ndarray:
        return np.arange(self.n) % BUCKETS

    def namespace_rows(self, ns_index: int) -> np.ndarray:
        return np.arange(ns_index, self.n, self.namespaces)


def generate(kind: str, n: int, namespaces: int, space: VectorSpace) -> ScaleSet:
    matrix = space.draw(n, stream=0 if kind == "one" else 1)
    ids = fact_ids(n, space.seed + (0 if kind == "one" else 1))
    return ScaleSet(kind, n, namespaces if kind == "many" else 1, ids, matrix)


# --- loading ------------------------------------------------------------------------------


def read_meta(dsn: str) -> dict | None:
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            row = conn.execute("SELECT value FROM public.scale_meta WHERE key = 'meta'").fetchone()
    except psycopg.Error:
        return None
    return row[0] if row else None


def write_meta(dsn: str, meta: dict) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS public.scale_meta (key text PRIMARY KEY, value jsonb)"
        )
        conn.execute(
            "INSERT INTO public.scale_meta VALUES ('meta', %s) "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            (json.dumps(meta),),
        )


def _index_def(conn: psycopg.Connection) -> tuple[str, str]:
    row = conn.execute(
        "SELECT i.indexname, i.indexdef FROM memstate.embedding_models m "
        "JOIN pg_indexes i ON i.schemaname = 'memstate' AND i.indexname = m.index_name "
        "WHERE m.model = %s",
        (MODEL,),
    ).fetchone()
    if row is None:
        raise RuntimeError(f"model {MODEL} has no HNSW index to rebuild")
    return row[0], row[1]


def _replica_role(conn: psycopg.Connection) -> bool:
    """Skip the per-row triggers for the load if this role may (superuser)."""
    try:
        conn.execute("SET session_replication_role = replica")
        return True
    except psycopg.Error:
        return False


_TYPES = {
    "fact_id": "uuid",
    "namespace": "text",
    "type": "text",
    "payload": "jsonb",
    "content": "text",
    "embedding": "vector",
    "embedding_model": "text",
    "version": "int4",
    "commit_seq": "int8",
    "seq": "int8",
    "op": "text",
    "created_at": "timestamptz",
    "updated_at": "timestamptz",
}
FACT_COLS = [
    "fact_id",
    "namespace",
    "type",
    "payload",
    "content",
    "embedding",
    "embedding_model",
    "version",
    "commit_seq",
    "created_at",
    "updated_at",
]
VERSION_COLS = [
    "fact_id",
    "version",
    "seq",
    "namespace",
    "type",
    "op",
    "payload",
    "content",
    "embedding",
    "embedding_model",
    "created_at",
]


def _copy(conn: psycopg.Connection, table: str, cols: list[str], rows) -> int:
    from pgvector.psycopg import register_vector

    register_vector(conn)
    n = 0
    with conn.cursor().copy(
        f"COPY memstate.{table} ({', '.join(cols)}) FROM STDIN WITH (FORMAT BINARY)"
    ) as copy:
        copy.set_types([_TYPES[c] for c in cols])
        for row in rows:
            copy.write_row(row)
            n += 1
    return n


def load(dsn: str, ds: ScaleSet, log=print) -> dict:
    """COPY `ds` into a migrated database (model and type ``note`` registered), HNSW index
    dropped (build it with `build_index`). Returns timings."""
    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc).replace(microsecond=0)
    born = now - timedelta(days=60)
    t0 = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        name, ddl = _index_def(conn)
        conn.execute(f"DROP INDEX IF EXISTS memstate.{name}")
        bypass = _replica_role(conn)
        texts = [text_of(i) for i in range(ds.n)]
        with conn.transaction():
            if ds.kind == "one":
                load_seq = conn.execute(
                    "INSERT INTO memstate.commits (namespace, reason, created_at) "
                    "VALUES (%s, 'scale bulk load', %s) RETURNING seq",
                    (NAMESPACE, born),
                ).fetchone()[0]
                upd_seq: dict[tuple[int, int], int] = {}
                upd_at: dict[int, datetime] = {}
                for r in range(1, UPDATE_ROUNDS + 1):
                    upd_at[r] = now - timedelta(days=60 - 10 * r)
                    for j in range(COMMITS_PER_ROUND):
                        upd_seq[r, j] = conn.execute(
                            "INSERT INTO memstate.commits (namespace, reason, created_at) "
                            "VALUES (%s, %s, %s) RETURNING seq",
                            (
                                NAMESPACE,
                                f"update round {r} part {j}",
                                upd_at[r] + timedelta(minutes=j),
                            ),
                        ).fetchone()[0]
                ns_of: list[str] = []
            else:
                rows = conn.execute(
                    "INSERT INTO memstate.commits (namespace, reason, created_at) "
                    "SELECT 't' || lpad(g::text, 5, '0'), 'scale bulk load', %s "
                    "FROM generate_series(0, %s - 1) g ORDER BY g RETURNING seq, namespace",
                    (born, ds.namespaces),
                ).fetchall()
                ns_seq = {ns: seq for seq, ns in rows}
                ns_of = [namespace_of(i, ds.namespaces) for i in range(ds.namespaces)]

            def updated(i: int) -> bool:
                return ds.kind == "one" and i % UPDATE_EVERY == 0

            def part(i: int) -> int:
                return (i // UPDATE_EVERY) % COMMITS_PER_ROUND

            def payload(i: int, v: int) -> dict:
                return {"text": texts[i], "bucket": i % BUCKETS, "n": i, "rev": v}

            def fact_rows():
                for i in range(ds.n):
                    if ds.kind == "one":
                        ns = NAMESPACE
                        if updated(i):
                            v, seq, at = (
                                UPDATE_ROUNDS + 1,
                                upd_seq[UPDATE_ROUNDS, part(i)],
                                upd_at[UPDATE_ROUNDS],
                            )
                        else:
                            v, seq, at = 1, load_seq, born
                    else:
                        ns = ns_of[i % ds.namespaces]
                        v, seq, at = 1, ns_seq[ns], born
                    yield (
                        ds.ids[i],
                        ns,
                        "note",
                        payload(i, v),
                        texts[i],
                        ds.matrix[i],
                        MODEL,
                        v,
                        seq,
                        born,
                        at,
                    )

            def version_rows():
                for i in range(ds.n):
                    ns = NAMESPACE if ds.kind == "one" else ns_of[i % ds.namespaces]
                    seq = load_seq if ds.kind == "one" else ns_seq[ns]
                    yield (
                        ds.ids[i],
                        1,
                        seq,
                        ns,
                        "note",
                        "put",
                        payload(i, 1),
                        texts[i],
                        ds.matrix[i],
                        MODEL,
                        born,
                    )
                if ds.kind == "one":
                    for r in range(1, UPDATE_ROUNDS + 1):
                        for i in range(0, ds.n, UPDATE_EVERY):
                            yield (
                                ds.ids[i],
                                r + 1,
                                upd_seq[r, part(i)],
                                NAMESPACE,
                                "note",
                                "update",
                                payload(i, r + 1),
                                texts[i],
                                ds.matrix[i],
                                MODEL,
                                upd_at[r],
                            )

            t1 = time.perf_counter()
            nf = _copy(conn, "facts", FACT_COLS, fact_rows())
            log(f"  facts: {nf:,} rows in {time.perf_counter() - t1:.0f} s")
            t1 = time.perf_counter()
            nv = _copy(conn, "fact_versions", VERSION_COLS, version_rows())
            log(f"  fact_versions: {nv:,} rows in {time.perf_counter() - t1:.0f} s")
        copied = time.perf_counter()
        conn.execute("RESET session_replication_role")
        conn.execute("VACUUM (ANALYZE) memstate.facts")
        conn.execute("VACUUM (ANALYZE) memstate.fact_versions")
        conn.execute("VACUUM (ANALYZE) memstate.commits")
        conn.execute("CHECKPOINT")
        n_commits = conn.execute("SELECT count(*) FROM memstate.commits").fetchone()[0]
    return {
        "copy_seconds": round(copied - t0, 1),
        "load_seconds": round(time.perf_counter() - t0, 1),
        "facts": nf,
        "versions": nv,
        "commits": n_commits,
        "triggers_skipped": bypass,
        "index_name": name,
        "index_ddl": ddl,
    }


def build_index(
    dsn: str,
    index: tuple[str, str],
    *,
    workers: int,
    maintenance_work_mem: str,
    notices: list[str] | None = None,
) -> dict:
    """Build the model's HNSW index `(name, CREATE INDEX)` once (as `load` dropped it), with `workers` parallel
    maintenance workers (0: the leader alone); returns time and size. pgvector's notices
    (e.g. "hnsw graph no longer fits into maintenance_work_mem") go to `notices`."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        name, ddl = index
        conn.execute(f"DROP INDEX IF EXISTS memstate.{name}")
        if notices is not None:
            conn.add_notice_handler(lambda d: notices.append(d.message_primary))
        conn.execute(f"SET maintenance_work_mem = '{maintenance_work_mem}'")
        conn.execute(f"SET max_parallel_maintenance_workers = {int(workers)}")
        # the planner sizes parallel builds by table size; pin the count we measure
        conn.execute(f"ALTER TABLE memstate.facts SET (parallel_workers = {int(workers)})")
        t0 = time.perf_counter()
        try:
            conn.execute(ddl)
        finally:
            conn.execute("ALTER TABLE memstate.facts RESET (parallel_workers)")
        secs = time.perf_counter() - t0
        size = conn.execute(
            "SELECT pg_relation_size(%s::regclass)", (f"memstate.{name}",)
        ).fetchone()[0]
        sizes = dict(
            conn.execute(
                "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'memstate' "
                "WHERE c.relname IN ('facts', 'fact_versions', 'commits')"
            ).fetchall()
        )
    return {
        "index": name,
        "index_seconds": round(secs, 1),
        "index_bytes": int(size),
        "workers": workers,
        "maintenance_work_mem": maintenance_work_mem,
        "table_bytes": {k: int(v) for k, v in sizes.items()},
    }
