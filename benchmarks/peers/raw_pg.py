"""The floor: raw psycopg + pgvector doing the minimal equivalent SQL on the same tables.

Writes reuse the lead's floor from benchmarks/commit.py (three pipelined inserts per
commit; COPY for batches). Search is one plain top-k statement over memstate.facts using
the same HNSW index (same expression, same partial predicate) as memstate.search, and
returning the same useful columns (id, score, payload, content).
"""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row

from benchmarks.commit import floor_copy, floor_single  # noqa: F401 - re-exported


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
