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
    with pytest.raises(NotMigrated):  # short: the function is asked
        store.search(vec, k=10, namespace="tiny")


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
