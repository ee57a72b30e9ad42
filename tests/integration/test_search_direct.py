"""The stores' search runs memstate.search's statement directly (memstate_pg/_core/search_sql.py)
and must answer exactly as the SQL function does, for every shape: no filter, payload
filter, type, session, k over the namespace's size, small and large namespaces, and the
fall-back to the function when the direct statement stops short."""

from __future__ import annotations

import json
import random

import psycopg
import pytest
from psycopg.rows import dict_row

from memstate_pg import Fact, MemoryStore
from memstate_pg._core.search_sql import statement
from memstate_pg.errors import NotMigrated, ValidationFailed
from memstate_pg.vectors import vector_text

DIM = 8
MODEL = f"hashing-v1-{DIM}"


def _vec(rng: random.Random) -> list[float]:
    return [round(rng.uniform(-1, 1), 3) for _ in range(DIM)]


@pytest.fixture
def loaded(dsn: str):
    """Three namespaces (400, 30 and 3 facts) of 8-d vectors with ties (rounded values,
    repeated vectors), payload buckets, two types and sessions."""
    from memstate_pg import HashingEmbedder

    rng = random.Random(5)
    store = MemoryStore(dsn, embedder=HashingEmbedder(dim=DIM), max_size=2)
    store.migrate()
    pool = [_vec(rng) for _ in range(120)]  # repeated vectors: exact ties in distance
    for ns, n in (("big", 400), ("mid", 30), ("tiny", 3)):
        facts = [
            Fact(
                type="note" if i % 3 else "memo",
                payload={"text": f"{ns} {i}", "bucket": i % 10, "even": i % 2 == 0},
                embedding=pool[rng.randrange(len(pool))],
            )
            for i in range(n)
        ]
        store.commit_many(facts[: n // 2], namespace=ns)
        store.commit_many(facts[n // 2 :], namespace=ns, session_id="s1")
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ANALYZE memstate.facts")
    try:
        yield store, dsn, rng
    finally:
        store.close()


def _function(conn, ns, vec, k, filters=None, type=None, session=None):
    rows = conn.execute(
        "SELECT fact_id, score FROM memstate.search(%s, %s::vector, %s, %s::jsonb, %s, %s, %s)",
        (
            ns,
            vector_text(vec),
            k,
            json.dumps(filters) if filters is not None else None,
            type,
            MODEL,
            session,
        ),
    ).fetchall()
    return [(str(r["fact_id"]), r["score"]) for r in rows]


def test_store_search_answers_as_the_sql_function(loaded):
    store, dsn, rng = loaded
    shapes = [
        {},
        {"filters": {"bucket": 3}},
        {"filters": {"even": True}},
        {"type": "memo"},
        {"session_id": "s1"},
        {"filters": {"bucket": 4}, "type": "note", "session_id": "s1"},
        {"filters": {"bucket": 99}},  # nothing matches
    ]
    compared = 0
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        for _ in range(6):
            vec = _vec(rng)
            for ns in ("big", "mid", "tiny", "empty"):
                for k in (1, 5, 10, 40):
                    for shape in shapes:
                        hits = store.search(vec, k=k, namespace=ns, **shape)
                        got = [(str(h.fact.id), h.score) for h in hits]
                        want = _function(
                            conn,
                            ns,
                            vec,
                            k,
                            shape.get("filters"),
                            shape.get("type"),
                            shape.get("session_id"),
                        )
                        assert got == want, (ns, k, shape)
                        compared += bool(want)
    assert compared > 300


def test_search_with_the_exact_cap_hit_answers_as_the_function(loaded):
    """More candidates than 'search_exact_max': the direct statement gives no row and the
    function's HNSW plan answers (same hits as calling it)."""
    store, dsn, rng = loaded
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(
            "INSERT INTO memstate.config (key, value) VALUES ('search_exact_max', '20') "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        for _ in range(5):
            vec = _vec(rng)
            hits = store.search(vec, k=10, namespace="big", filters={"even": True})
            assert len(hits) == 10
            assert [(str(h.fact.id), h.score) for h in hits] == _function(
                conn, "big", vec, 10, {"even": True}
            )


def test_search_runs_without_the_function_when_the_statement_answers(loaded):
    """The search of a namespace with k facts or more is one direct statement: it works
    with memstate.search out of the way (it fell back to the function only when short)."""
    store, dsn, rng = loaded
    vec = _vec(rng)
    before = [h.fact.id for h in store.search(vec, k=10, namespace="big")]
    filtered = [h.fact.id for h in store.search(vec, k=5, namespace="big", filters={"bucket": 2})]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "ALTER FUNCTION memstate.search(text, vector, int, jsonb, text, text, text) "
            "RENAME TO search_elsewhere"
        )
    assert [h.fact.id for h in store.search(vec, k=10, namespace="big")] == before
    assert [
        h.fact.id for h in store.search(vec, k=5, namespace="big", filters={"bucket": 2})
    ] == filtered
    # a small namespace is searched exactly by the statement, fewer than k facts or not
    assert len(store.search(vec, k=10, namespace="tiny")) == 3
    with pytest.raises(NotMigrated):  # no row at all: the function is asked
        store.search(vec, k=10, namespace="empty")


def _exact(conn, ns, vec, k, type=None):
    """The exact top-k of a namespace by brute force (the plain operator: no index)."""
    rows = conn.execute(
        "SELECT fact_id FROM memstate.facts WHERE namespace = %s AND embedding_model = %s "
        "AND (%s::text IS NULL OR type = %s) "
        "ORDER BY embedding <=> %s::vector, fact_id LIMIT %s",
        (ns, MODEL, type, type, vector_text(vec), k),
    ).fetchall()
    return [str(r["fact_id"]) for r in rows]


def test_small_namespaces_are_searched_exactly_by_one_prepared_statement(loaded):
    """Unfiltered search of a namespace with at most 'search_exact_max' facts is exact
    (recall 1.0, ties by fact id), and one statement text serves every namespace: the
    namespace is a parameter, not a literal planned anew for each."""
    store, dsn, rng = loaded
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        conn.execute("SET enable_indexscan = off")  # brute force for _exact
        for _ in range(5):
            vec = _vec(rng)
            for ns in ("big", "mid", "tiny"):
                for k, type in ((10, None), (3, "memo"), (40, None)):
                    got = [str(h.fact.id) for h in store.search(vec, k=k, namespace=ns, type=type)]
                    assert got == _exact(conn, ns, vec, k, type), (ns, k, type)
    statement.cache_clear()
    for ns in ("big", "mid", "tiny"):
        store.search(_vec(rng), k=10, namespace=ns)
    assert statement.cache_info().currsize == 1  # one text for the three namespaces
    assert store._search_large == {}  # none of them over the cap


def test_namespaces_over_the_exact_cap_are_searched_with_hnsw_as_the_function(loaded):
    """Over 'search_exact_max' candidates, unfiltered search takes the HNSW plan, with the
    same hits as memstate.search; the store remembers the namespace as large (HNSW first),
    and a namespace back under the cap is searched exactly once it is probed again."""
    store, dsn, rng = loaded
    with psycopg.connect(dsn, autocommit=True, row_factory=dict_row) as conn:
        conn.execute(
            "INSERT INTO memstate.config (key, value) VALUES ('search_exact_max', '20') "
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value"
        )
        for _ in range(4):
            vec = _vec(rng)
            for ns in ("big", "mid", "tiny"):
                for k in (1, 10):
                    hits = store.search(vec, k=k, namespace=ns)
                    assert [(str(h.fact.id), h.score) for h in hits] == _function(
                        conn, ns, vec, k
                    ), (ns, k)
        assert set(store._search_large) == {(MODEL, "big", None), (MODEL, "mid", None)}
        # the cap raised again: the next probe finds "mid" small and searches it exactly
        conn.execute("UPDATE memstate.config SET value = '2000' WHERE key = 'search_exact_max'")
        conn.execute("SET enable_indexscan = off")
        store._search_large[(MODEL, "mid", None)] = 1
        vec = _vec(rng)
        store.search(vec, k=10, namespace="mid")  # the last HNSW-first search
        assert (MODEL, "mid", None) not in store._search_large
        got = [str(h.fact.id) for h in store.search(vec, k=10, namespace="mid")]
        assert got == _exact(conn, "mid", vec, 10)
        assert (MODEL, "mid", None) not in store._search_large


def test_search_refuses_a_query_of_another_dimension(loaded):
    store, _dsn, _rng = loaded
    with pytest.raises(ValidationFailed, match="dimensions"):
        store.search([0.5] * (DIM + 1), k=3, namespace="big")


def test_namespace_and_model_names_are_literals_not_placeholders(dsn: str):
    """The namespace is a SQL literal of the statement: quotes, backslashes and % signs
    stay data."""
    from memstate_pg import HashingEmbedder

    with MemoryStore(dsn, embedder=HashingEmbedder(dim=DIM), max_size=1) as store:
        store.migrate()
        for ns in ("it's", "50%off", "back\\slash", "%(query)s"):
            fid = store.commit(Fact(type="note", payload={"text": f"in {ns}"}), namespace=ns)
            hits = store.search(f"in {ns}", k=3, namespace=ns)
            assert [h.fact.id for h in hits] == [fid]
            assert hits[0].fact.namespace == ns
