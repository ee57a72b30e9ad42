"""Benchmark data: deterministic texts and vectors, bulk loading, exact ground truth, recall.

Every workload draws its facts from here, so all peers get the same texts and the same
vectors. Two vector sets:

* ``hashing``: `HashingEmbedder` vectors of templated texts. Realistic for this project
  (it is the default embedder), but bag-of-words vectors of templated texts have many
  neighbours at *exactly* the same distance, so plain recall@10 is ill-defined; see
  `recall_at_k` for the tie-aware rule.
* ``random``: seeded random unit vectors, where ties do not occur (the hard case for HNSW).

Large sets are loaded with COPY straight into memstate's tables (one commit row, the
current rows, the version rows), with the model's HNSW index dropped first and rebuilt
afterwards under a raised ``maintenance_work_mem``: building the index once over the
loaded rows is many times faster than inserting into it row by row, and keeps a 100k run
bounded (≈ 25 s for the index instead of minutes). The result is the state that
`commit_many` would have produced, minus per-row commit bookkeeping.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import numpy as np
import psycopg

from memstate_pg import HashingEmbedder

CITIES = [
    "Berlin",
    "Lisbon",
    "Osaka",
    "Lima",
    "Oslo",
    "Quito",
    "Accra",
    "Hanoi",
    "Perth",
    "Porto",
    "Seoul",
    "Dakar",
    "Cusco",
    "Turin",
    "Cork",
    "Minsk",
    "Bern",
    "Nice",
    "Riga",
    "Sofia",
    "Kyiv",
    "Baku",
    "Doha",
    "Male",
    "Nuuk",
    "Suva",
    "Apia",
    "Lome",
    "Pune",
    "Kobe",
    "Graz",
]
FOODS = [
    "ramen",
    "tacos",
    "falafel",
    "pierogi",
    "sushi",
    "paella",
    "curry",
    "pho",
    "bao",
    "gnocchi",
    "borscht",
    "ceviche",
    "injera",
    "dumplings",
    "risotto",
    "kimchi",
    "halloumi",
]
TOPICS = [
    "travel",
    "work",
    "family",
    "health",
    "music",
    "books",
    "sports",
    "money",
    "garden",
    "movies",
    "cooking",
    "language",
    "pets",
    "weather",
    "school",
    "cars",
    "art",
    "games",
]

FILTER_BUCKETS = 100
"""Every fact's payload has ``bucket = i % 100``: a filter on one bucket matches 1%."""


def fact_text(prefix: str, i: int) -> str:
    """A templated memory: shared vocabulary, so many facts are near (or tied) neighbours."""
    return (
        f"{prefix} user {i} lives in {CITIES[i % len(CITIES)]} and likes "
        f"{FOODS[(i // 7) % len(FOODS)]}; note about {TOPICS[(i // 3) % len(TOPICS)]} number {i % 97}"
    )


def query_text(j: int) -> str:
    """A search question over the same vocabulary as `fact_text`."""
    return (
        f"who lives in {CITIES[(j * 5) % len(CITIES)]} and likes {FOODS[(j * 3) % len(FOODS)]} "
        f"{TOPICS[j % len(TOPICS)]}"
    )


def payload_of(text: str, i: int) -> dict:
    return {"text": text, "bucket": i % FILTER_BUCKETS, "n": i}


@dataclass
class Dataset:
    """Facts loaded into a database, with the vectors kept in memory for exact search."""

    kind: str  # "hashing" or "random"
    namespace: str
    model: str
    dim: int
    ids: list[uuid.UUID]
    texts: list[str]
    matrix: np.ndarray  # (n, dim) float32, unit rows, same order as ids
    buckets: np.ndarray  # (n,) int, payload["bucket"]
    row_of: dict[str, int] = field(default_factory=dict)
    load_seconds: float = 0.0
    index_seconds: float = 0.0
    index_def: str | None = None  # the model's CREATE INDEX, dropped for the load
    namespace_of: np.ndarray | None = (
        None  # (n,) int: row -> namespace number (bulk_load_namespaces)
    )

    @property
    def size(self) -> int:
        return len(self.ids)

    def __post_init__(self) -> None:
        if not self.row_of:
            self.row_of = {str(fid): n for n, fid in enumerate(self.ids)}


def hashing_vectors(texts: list[str], dim: int) -> np.ndarray:
    return np.asarray(HashingEmbedder(dim=dim).embed(texts), dtype=np.float32)


def random_unit_vectors(n: int, dim: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((n, dim), dtype=np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    return m


def vector_literal(v: np.ndarray | list[float]) -> str:
    """pgvector's text form (float32 values written shortest-exact)."""
    return "[" + ",".join(map(repr, map(float, np.asarray(v, dtype=np.float32).tolist()))) + "]"


def model_index(conn: psycopg.Connection, model: str) -> tuple[str, str] | None:
    """(index name, CREATE INDEX statement) of a model's HNSW index, if it has one."""
    row = conn.execute(
        "SELECT i.indexname, i.indexdef FROM memstate.embedding_models m "
        "JOIN pg_indexes i ON i.schemaname = 'memstate' AND i.indexname = m.index_name "
        "WHERE m.model = %s",
        (model,),
    ).fetchone()
    return (row[0], row[1]) if row else None


def bulk_load(
    dsn: str,
    *,
    kind: str,
    n: int,
    dim: int,
    namespace: str,
    seed: int = 7,
    maintenance_work_mem: str = "1GB",
    with_index: bool = True,
) -> Dataset:
    """Load `n` facts of one vector kind into a migrated database (type ``note`` must be
    registered) with COPY, then (re)build the model's HNSW index once (unless
    `with_index` is false: then see `build_index`)."""
    import time

    texts = [fact_text(namespace, i) for i in range(n)]
    if kind == "hashing":
        model = HashingEmbedder(dim=dim).model
        matrix = hashing_vectors(texts, dim)
    elif kind == "random":
        model = f"random-unit-{dim}"
        matrix = random_unit_vectors(n, dim, seed)
    else:
        raise ValueError(f"unknown vector kind {kind!r}")
    ids = [
        uuid.UUID(int=int(x), version=4)
        for x in np.random.default_rng(seed + n).integers(0, 2**62, n)
    ]
    buckets = np.arange(n) % FILTER_BUCKETS
    t0 = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT memstate.register_model(%s, %s)", (model, dim))
        index = model_index(conn, model)
        if index:
            conn.execute(f"DROP INDEX IF EXISTS memstate.{index[0]}")
        with conn.transaction():
            seq = conn.execute(
                "INSERT INTO memstate.commits (namespace, reason) VALUES (%s, 'bench bulk load') "
                "RETURNING seq",
                (namespace,),
            ).fetchone()[0]
            rows = [
                (fid, namespace, payload_of(t, i), t, seq)
                for i, (fid, t) in enumerate(zip(ids, texts, strict=True))
            ]
            _copy_facts(conn, rows, matrix, model)
        loaded = time.perf_counter()
    ds = Dataset(
        kind=kind,
        namespace=namespace,
        model=model,
        dim=dim,
        ids=ids,
        texts=texts,
        matrix=matrix,
        buckets=buckets,
        load_seconds=loaded - t0,
        index_def=index[1] if index else None,
    )
    if with_index:
        build_index(dsn, ds, maintenance_work_mem)
    return ds


def build_index(dsn: str, ds: Dataset, maintenance_work_mem: str = "1GB") -> None:
    """Build the HNSW index that bulk_load dropped (once), and ANALYZE."""
    import time

    t0 = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        if ds.index_def and not model_index(conn, ds.model):
            conn.execute(f"SET maintenance_work_mem = '{maintenance_work_mem}'")
            conn.execute(ds.index_def)
        conn.execute("ANALYZE memstate.facts")
    ds.index_seconds = time.perf_counter() - t0


def namespace_name(prefix: str, j: int) -> str:
    """The j-th namespace of a `bulk_load_namespaces` dataset."""
    return f"{prefix}-{j:05d}"


def bulk_load_namespaces(
    dsn: str,
    *,
    kind: str,
    namespaces: int,
    per_namespace: int,
    dim: int,
    prefix: str = "tenant",
    seed: int = 13,
) -> Dataset:
    """`namespaces` x `per_namespace` facts, COPYed like `bulk_load`: row i lives in
    namespace `namespace_name(prefix, i // per_namespace)` (one commit row per namespace),
    then the model's HNSW index is built once and the table ANALYZEd. The Dataset's
    `namespace` is the prefix; `namespace_of` maps rows to namespace numbers (for exact
    per-namespace ground truth: mask ``namespace_of == j``)."""
    import time

    n = namespaces * per_namespace
    texts = [fact_text(prefix, i) for i in range(n)]
    if kind == "hashing":
        model = HashingEmbedder(dim=dim).model
        matrix = hashing_vectors(texts, dim)
    elif kind == "random":
        model = f"random-unit-{dim}"
        matrix = random_unit_vectors(n, dim, seed)
    else:
        raise ValueError(f"unknown vector kind {kind!r}")
    ids = [
        uuid.UUID(int=int(x), version=4)
        for x in np.random.default_rng(seed + n).integers(0, 2**62, n)
    ]
    ns_of = np.arange(n) // per_namespace
    names = [namespace_name(prefix, j) for j in range(namespaces)]
    t0 = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT memstate.register_model(%s, %s)", (model, dim))
        index = model_index(conn, model)
        if index:
            conn.execute(f"DROP INDEX IF EXISTS memstate.{index[0]}")
        with conn.transaction():
            with conn.cursor() as cur:
                cur.executemany(
                    "INSERT INTO memstate.commits (namespace, reason) VALUES (%s, 'bench bulk load') "
                    "RETURNING seq",
                    [(name,) for name in names],
                    returning=True,
                )
                seqs = []
                while True:
                    seqs.append(cur.fetchone()[0])
                    if not cur.nextset():
                        break
            rows = [
                (fid, names[i // per_namespace], payload_of(t, i), t, seqs[i // per_namespace])
                for i, (fid, t) in enumerate(zip(ids, texts, strict=True))
            ]
            _copy_facts(conn, rows, matrix, model)
        loaded = time.perf_counter()
    ds = Dataset(
        kind=kind,
        namespace=prefix,
        model=model,
        dim=dim,
        ids=ids,
        texts=texts,
        matrix=matrix,
        buckets=np.arange(n) % FILTER_BUCKETS,
        load_seconds=loaded - t0,
        index_def=index[1] if index else None,
        namespace_of=ns_of,
    )
    build_index(dsn, ds)
    return ds


def _copy_facts(conn: psycopg.Connection, rows: list, matrix: np.ndarray, model: str) -> None:
    """COPY one first version per fact: `rows` of (fact_id, namespace, payload, text, seq),
    row i with vector matrix[i], into memstate.facts and memstate.fact_versions."""
    _copy_rows(
        conn,
        "facts",
        [
            "fact_id",
            "namespace",
            "type",
            "payload",
            "content",
            "embedding",
            "embedding_model",
            "version",
            "commit_seq",
        ],
        ((f, ns, "note", p, t, matrix[i], model, 1, s) for i, (f, ns, p, t, s) in enumerate(rows)),
    )
    _copy_rows(
        conn,
        "fact_versions",
        [
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
        ],
        (
            (f, 1, s, ns, "note", "put", p, t, matrix[i], model)
            for i, (f, ns, p, t, s) in enumerate(rows)
        ),
    )


_COPY_TYPES = {
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
}


def _copy_rows(conn: psycopg.Connection, table: str, columns: list[str], rows) -> None:
    """Binary COPY: vectors go as pgvector's binary form, straight from float32 arrays
    (formatting 38M floats as text would take longer than the COPY itself)."""
    from pgvector.psycopg import register_vector

    register_vector(conn)
    cols = ", ".join(columns)
    with conn.cursor().copy(
        f"COPY memstate.{table} ({cols}) FROM STDIN WITH (FORMAT BINARY)"
    ) as copy:
        copy.set_types([_COPY_TYPES[c] for c in columns])
        for row in rows:
            copy.write_row(row)


# --- exact search and recall ----------------------------------------------------------


def exact_neighbours(
    ds: Dataset, query: np.ndarray, k: int, mask: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cosine distances) of the exact k nearest, ascending; `mask` restricts rows."""
    dist = 1.0 - ds.matrix @ query.astype(np.float32)
    if mask is not None:
        dist = np.where(mask, dist, np.inf)
    k = min(k, int(np.isfinite(dist).sum()))
    part = np.argpartition(dist, k - 1)[:k]
    order = part[np.argsort(dist[part], kind="stable")]
    return order, dist[order]


def recall_at_k(
    ds: Dataset,
    query: np.ndarray,
    returned: list[str],
    k: int,
    mask: np.ndarray | None = None,
    eps: float = 1e-5,
) -> tuple[float, float]:
    """(strict, tie-aware) recall@k of `returned` fact ids against exact search.

    strict: the share of the exact top-k ids that were returned (ids at equal distance are
    interchangeable, so this undercounts when ties straddle the k-th place).
    tie-aware: a returned id counts as correct when its exact distance is no worse than the
    exact k-th distance (+ eps for float32 rounding), and it satisfies the filter.
    """
    rows, dists = exact_neighbours(ds, query, k, mask)
    if len(rows) == 0:
        return 1.0, 1.0
    want = {str(ds.ids[r]) for r in rows}
    strict = len(want & set(returned[:k])) / len(rows)
    kth = float(dists[-1])
    qv = query.astype(np.float32)
    good = 0
    for fid in returned[:k]:
        r = ds.row_of.get(fid)
        if r is None or (mask is not None and not mask[r]):
            continue
        if 1.0 - float(ds.matrix[r] @ qv) <= kth + eps:
            good += 1
    return strict, good / len(rows)


def query_vectors(ds: Dataset, n: int, seed: int = 11) -> tuple[list[str], np.ndarray]:
    """`n` queries for a dataset: question texts (hashing) or fresh random unit vectors."""
    if ds.kind == "hashing":
        qs = [query_text(j) for j in range(n)]
        return qs, hashing_vectors(qs, ds.dim)
    return [f"random query {j}" for j in range(n)], random_unit_vectors(n, ds.dim, seed)
