"""The SQL of `search`, run directly: one statement per search shape, built here in Python.

`memstate.search` (sql/functions.sql) is the search of SQL callers: a plpgsql function that
resolves the model, checks it, builds its statement with `format()` and runs it with
`EXECUTE`. Called from Python, that costs a function call, a few catalog lookups and a
parse and plan of dynamic SQL on every search, about a third on top of the query itself.
So the stores build the same statement themselves, once per shape, and run it directly:

* The model's dimension, HNSW index and pgvector's schema are read once per model
  (`SearchModel`, cached by the store: a model's dimension and index never change once
  registered), so the distance expression is the index's expression, as in the function
  (memstate._distance_sql).
* The model, the namespace and k are SQL literals (quoted by psycopg), the vector and the
  filters parameters. The statement text is therefore the same for every search of one
  namespace with one shape, psycopg prepares it after a few runs, and PostgreSQL plans it
  for *that* namespace (a small namespace gets the exact plan, a large one the HNSW index):
  what the function's custom plan gives, without planning each time.
* The namespace's model rule (a namespace switched by a re-embed searches only its active
  model; MSV01 otherwise) is `memstate._search_check`, the function the SQL function calls
  too, as a one-time filter of the same statement: no extra round trip.
* Row Level Security applies as in the function (which runs with the caller's rights).

What the direct statement cannot do is pgvector's iterative scan (the function sets
``hnsw.iterative_scan`` for its own duration; a statement cannot, short of changing the
caller's session). So whenever the direct statement may have stopped short, the store
calls memstate.search itself, whose answer is then the answer:

* a payload filter or session: the exact plan of the function (at most
  'search_exact_max' candidates from the GIN/btree indexes, sorted by true distance);
  no row means "more candidates than the cap" or "none", the function decides which;
* otherwise: the HNSW plan of the function; fewer than k rows (a rare type, a filter on
  top of the index, k over hnsw.ef_search, or a namespace with fewer than k facts) and
  the function runs the iterative scan.

Either way the hits are those of memstate.search for the same call
(tests/integration/test_search_direct.py compares them).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

from psycopg import sql

_COLUMNS = (
    "f.type, f.session_id, f.payload, f.content, f.embedding_model, f.version, "
    "f.commit_seq, f.created_at, f.updated_at"
)
_MAX = "coalesce(memstate._config_int('search_exact_max'), 2000)"


@dataclass(frozen=True, slots=True)
class SearchModel:
    """What the statement of one embedding model needs (read once per model)."""

    dim: int
    indexed: bool  # the model has its HNSW index (memstate.register_model)
    vector_schema: str  # pgvector's schema, to qualify its types and operator

    def distance(self) -> str:
        """memstate._distance_sql: the cosine distance of f.embedding to %(query)s, written
        as the model's partial HNSW index is, so the planner can use it."""
        vs = _ident(self.vector_schema)
        if not self.indexed:
            return f"f.embedding OPERATOR({vs}.<=>) %(query)s::{vs}.vector"
        kind = "vector" if self.dim <= 2000 else "halfvec"
        cast = f"{vs}.{kind}({self.dim})"
        return f"f.embedding::{cast} OPERATOR({vs}.<=>) %(query)s::{cast}"


def _ident(name: str) -> str:
    return sql.Identifier(name).as_string(None).replace("%", "%%")  # not a placeholder


def _literal(value: str) -> str:
    return sql.Literal(value).as_string(None).replace("%", "%%")


@lru_cache(maxsize=1024)  # the text of a recent shape is reused as is (and psycopg prepares it)
def statement(
    shape: SearchModel,
    *,
    model: str,
    namespace: str,
    k: int,
    payload_filter: bool,
    fact_type: bool,
    session: bool,
) -> tuple[str, bool]:
    """(SQL, exact) of one search. Parameters: %(query)s, and %(filter)s, %(type)s,
    %(session_id)s for the filters used. `exact`: the pre-filter plan (no row means: ask
    memstate.search); else the HNSW plan (fewer than k rows means: ask memstate.search)."""
    expr = shape.distance()
    model_lit, ns_lit = _literal(model), _literal(namespace)
    where = f"f.embedding_model = {model_lit} AND f.namespace = {ns_lit}"
    if payload_filter:
        where += " AND f.payload @> %(filter)s::jsonb"
    if fact_type:
        where += " AND f.type = %(type)s"
    if session:
        where += " AND f.session_id = %(session_id)s"
    check = f"memstate._search_check({ns_lit}, {model_lit})"
    if payload_filter or session:
        return (
            f"WITH c AS MATERIALIZED (SELECT f.ctid AS t FROM memstate.facts f WHERE {where} "
            f"LIMIT {_MAX} + 1) "
            f"SELECT f.fact_id, 1 - ({expr}) AS score, {_COLUMNS} "
            "FROM memstate.facts f "
            f"WHERE {check} AND f.ctid = ANY (ARRAY(SELECT c.t FROM c)) "
            f"AND (SELECT count(*) FROM c) <= {_MAX} "
            f"ORDER BY {expr}, f.fact_id LIMIT {int(k)}",
            True,
        )
    return (
        f"SELECT s.fact_id, 1 - s.distance AS score, {_COLUMNS.replace('f.', 's.')} "
        f"FROM (SELECT f.fact_id, {_COLUMNS}, {expr} AS distance FROM memstate.facts f "
        f"WHERE {check} AND {where} ORDER BY {expr} LIMIT {int(k)}) s "
        "ORDER BY s.distance, s.fact_id",
        False,
    )
