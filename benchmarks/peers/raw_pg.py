"""The floor: raw psycopg + pgvector doing the minimal equivalent SQL on the same tables.

Writes reuse the lead's floor from benchmarks/commit.py (three pipelined inserts per
commit; COPY for batches). Search is one plain top-k statement over memstate.facts using
the same HNSW index (same expression, same partial predicate) as memstate.search, and
returning the same useful columns (id, score, payload, content).
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable

import psycopg
import psycopg.types
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from benchmarks.commit import EMB, floor_copy, floor_single  # noqa: F401 - re-exported
from memstate_pg.vectors import Vec, configure_connection


def floor_copy_binary(
    conn: psycopg.Connection, ns: str, items: list[tuple[str, list[float]]]
) -> int:
    """The batch floor of issue 15: one commit row, then a binary COPY of the facts and of
    their version rows (vectors in pgvector's binary format), in one transaction."""
    configure_connection(conn)  # Vec dumps binary (idempotent)
    info = psycopg.types.TypeInfo.fetch(conn, "vector")
    assert info is not None
    with conn.transaction():
        seq = conn.execute(
            "INSERT INTO memstate.commits (namespace) VALUES (%s) RETURNING seq", (ns,)
        ).fetchone()[0]
        rows = [(uuid.uuid4(), Jsonb({"text": t}), t, Vec(v)) for t, v in items]
        cur = conn.cursor()
        with cur.copy(
            "COPY memstate.facts (fact_id, namespace, type, payload, content, embedding,"
            " embedding_model, version, commit_seq) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(
                ["uuid", "text", "text", "jsonb", "text", info.oid, "text", "int4", "int8"]
            )
            for fid, payload, text, vec in rows:
                copy.write_row((fid, ns, "note", payload, text, vec, EMB.model, 1, seq))
        with cur.copy(
            "COPY memstate.fact_versions (fact_id, version, seq, namespace, type, op, payload,"
            " content, embedding, embedding_model) FROM STDIN (FORMAT BINARY)"
        ) as copy:
            copy.set_types(
                ["uuid", "int4", "int8", "text", "text", "text", "jsonb", "text", info.oid, "text"]
            )
            for fid, payload, text, vec in rows:
                copy.write_row((fid, 1, seq, ns, "note", "put", payload, text, vec, EMB.model))
    return len(items)


def concurrent(writers: int, work: Callable[[int], int]) -> int:
    """Runs work(i) for i in range(writers) on as many threads, all started together;
    returns the operations they did in total (the caller times the whole)."""
    start = threading.Barrier(writers)
    counts = [0] * writers
    errors: list[BaseException] = []

    def one(i: int) -> None:
        try:
            start.wait()
            counts[i] = work(i)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            errors.append(exc)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return sum(counts)


def search_sql(dim: int, *, with_filter: bool = False) -> str:
    expr = f"embedding::vector({dim}) <=> %(q)s::vector({dim})"
    where = "AND payload @> %(filter)s::jsonb" if with_filter else ""
    return (
        f"SELECT fact_id, 1 - ({expr}) AS score, payload, content FROM memstate.facts "
        f"WHERE embedding_model = %(model)s AND namespace = %(ns)s {where} "
        f"ORDER BY {expr} LIMIT %(k)s"
    )


class RawSearch:
    """Top-k on one connection; `settings` are SET once (e.g. hnsw.ef_search)."""

    def __init__(
        self,
        dsn: str,
        *,
        dim: int,
        model: str,
        namespace: str,
        settings: dict[str, str] | None = None,
        with_filter: bool = False,
    ) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True, row_factory=dict_row)
        for k, v in (settings or {}).items():
            self.conn.execute(f"SET {k} = '{v}'")
        self.sql = search_sql(dim, with_filter=with_filter)
        self.model = model
        self.namespace = namespace

    def search(self, qtext: str, k: int = 10, filter_json: str | None = None) -> list[str]:
        rows = self.conn.execute(
            self.sql,
            {"q": qtext, "model": self.model, "ns": self.namespace, "k": k, "filter": filter_json},
        ).fetchall()
        return [str(r["fact_id"]) for r in rows]

    def explain(self, qtext: str, k: int = 10, filter_json: str | None = None) -> str:
        rows = self.conn.execute(
            "EXPLAIN (ANALYZE, COSTS OFF, BUFFERS OFF) " + self.sql,
            {"q": qtext, "model": self.model, "ns": self.namespace, "k": k, "filter": filter_json},
        ).fetchall()
        return "\n".join(next(iter(r.values())) for r in rows)

    def close(self) -> None:
        self.conn.close()
