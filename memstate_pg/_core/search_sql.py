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
* The model and k are SQL literals (quoted by psycopg), the vector and the filters
  parameters, so the statement text is the same for every search of one shape and
  psycopg prepares it after a few runs.
* Without a payload filter or session, a search is first the capped exact plan with the
  namespace a parameter (%(namespace)s): one prepared statement serves every namespace,
  and a namespace with at most 'search_exact_max' facts (of the model, and type if given)
  is searched exactly, recall 1.0, without planning. Its candidates are taken in the
  order of the (namespace, type) btree, so that even a generic plan walks that index.
  No row: more candidates than the cap (or none); the store then takes the HNSW plan,
  and remembers the namespace as large (StoreCore._search_large) to take the HNSW plan
  first for its next searches, probing the cap again now and then.
* In the HNSW plan and the filtered exact plan the namespace is a literal, so PostgreSQL
  plans the statement for *that* namespace (what the function's custom plan gives).
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
* otherwise: the HNSW plan of the function, after the exact plan gave no row or for a
  namespace remembered as large; fewer than k rows (a rare type, a filter on top of the
  index, k over hnsw.ef_search) and the function answers.

Either way the hits are those of memstate.search for the same call
(tests/integration/test_search_direct.py compares them); the one exception is a
namespace remembered as large that has since shrunk under the cap: it is searched with
HNSW (as before this cache existed) until its next probe, at most
ops.SEARCH_LARGE_RECHECK searches later.
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

    def exact_distance(self) -> str:
        """The distance of the exact plans: the plain operator (the same value as the index's
        vector(dim) expression, without a cast per row), but the index's halfvec expression
        above 2000 dimensions, so a score never depends on the plan (memstate.search too)."""
        if self.indexed and self.dim > 2000:
            return self.distance()
        vs = _ident(self.vector_schema)
        return f"f.embedding OPERATOR({vs}.<=>) %(query)s::{vs}.vector"


def _ident(name: str) -> str:
    return sql.Identifier(name).as_string(None).replace("%", "%%")  # not a placeholder


def _literal(value: str) -> str:
    return sql.Literal(value).as_string(None).replace("%", "%%")


@lru_cache(maxsize=1024)  # the text of a recent shape is reused as is (and psycopg prepares it)
def statement(
    shape: SearchModel,
    *,
    model: str,
    namespace: str | None,
    k: int,
    payload_filter: bool,
    fact_type: bool,
    session: bool,
) -> tuple[str, bool]:
    """(SQL, exact) of one search. Parameters: %(query)s, and %(filter)s, %(type)s,
    %(session_id)s for the filters used. `exact`: the capped pre-filter plan (no row means:
    ask memstate.search); else the HNSW plan (fewer than k rows means: ask memstate.search).

    `namespace` None, without a payload filter or session: the capped exact plan of
    memstate.search's small namespaces, the namespace a parameter (%(namespace)s), so one
    text, prepared once, serves every namespace. Otherwise the namespace is a literal: the
    filtered exact plan, or (no filter) the HNSW plan, planned for that namespace."""
    expr = shape.distance()
    model_lit = _literal(model)
    unfiltered = not (payload_filter or session)
    if namespace is None and not unfiltered:
        raise ValueError("a filtered search statement names its namespace")
    ns_sql = "%(namespace)s" if namespace is None else _literal(namespace)
    where = f"f.embedding_model = {model_lit} AND f.namespace = {ns_sql}"
    if payload_filter:
        where += " AND f.payload @> %(filter)s::jsonb"
    if fact_type:
        where += " AND f.type = %(type)s"
    if session:
        where += " AND f.session_id = %(session_id)s"
    check = f"memstate._search_check({ns_sql}, {model_lit})"
    if namespace is None or not unfiltered:
        # unfiltered: candidates in the order of the (namespace, type) btree, so that even a
        # generic plan of the prepared statement walks that index (as memstate.search does)
        # the candidates' distances are taken as the index scan reads them; only the k
        # nearest are read again, for their columns
        order = " ORDER BY f.namespace, f.type" if unfiltered else ""
        exact = shape.exact_distance()
        return (
            "WITH c AS MATERIALIZED (SELECT f.ctid AS t, f.fact_id AS id, "
            f"{exact} AS d FROM memstate.facts f WHERE {where}{order} LIMIT {_MAX} + 1) "
            f"SELECT f.fact_id, 1 - ({exact}) AS score, {_COLUMNS} "
            "FROM memstate.facts f "
            f"WHERE {check} AND (SELECT count(*) FROM c) <= {_MAX} "
            f"AND f.ctid = ANY (ARRAY(SELECT c.t FROM c ORDER BY c.d, c.id LIMIT {int(k)})) "
            f"ORDER BY {exact}, f.fact_id LIMIT {int(k)}",
            True,
        )
    return (
        f"SELECT s.fact_id, 1 - s.distance AS score, {_COLUMNS.replace('f.', 's.')} "
        f"FROM (SELECT f.fact_id, {_COLUMNS}, {expr} AS distance FROM memstate.facts f "
        f"WHERE {check} AND {where} ORDER BY {expr} LIMIT {int(k)}) s "
        "ORDER BY s.distance, s.fact_id",
        False,
    )
