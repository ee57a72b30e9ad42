"""The version log stores a vector only when it changed (issue 14.3): a version whose vector
and model equal the fact's previous ones is stored with embedding NULL, and every reader
of a version's vector (rollback, revert, memstate.version_embedding) resolves it as the
newest vector at or before that version."""

from __future__ import annotations

import psycopg
import pytest

from memstate_pg import Fact, HashingEmbedder, MemoryStore

V1 = "[1,0,0]"
V2 = "[0,1,0]"


@pytest.fixture
def conn(dsn: str):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SELECT memstate.register_model('m3', 3)")
        c.execute("SELECT memstate.register_model('m3b', 3)")
        c.execute("SELECT memstate.register_type('note')")
        yield c


def write(c, payload, vec, fact_id=None, model="m3", ns="vv"):
    return c.execute(
        "SELECT fact_id, version, seq FROM memstate.write_fact(%s, 'note', %s::jsonb, NULL,"
        " %s::vector, %s, NULL, %s::uuid)",
        (ns, payload, vec, model, fact_id),
    ).fetchone()


def stored(c, fid):
    """(version, op, stored vector as text or None, model) of every version, oldest first."""
    return c.execute(
        "SELECT version, op, embedding::text, embedding_model FROM memstate.fact_versions"
        " WHERE fact_id = %s ORDER BY version",
        (fid,),
    ).fetchall()


def current(c, fid):
    row = c.execute(
        "SELECT version, payload->>'t', embedding::text, embedding_model FROM memstate.facts"
        " WHERE fact_id = %s",
        (fid,),
    ).fetchone()
    return row


def effective(c, fid, version):
    return c.execute("SELECT memstate.version_embedding(%s, %s)::text", (fid, version)).fetchone()[
        0
    ]


def test_an_unchanged_vector_is_stored_once(conn):
    fid, _, _ = write(conn, '{"t":"a"}', V1)
    write(conn, '{"t":"b"}', V1, fid)  # payload changed, same vector and model
    write(conn, '{"t":"c"}', V2, fid)  # vector changed
    write(conn, '{"t":"d"}', V2, fid, model="m3b")  # same numbers, another model
    conn.execute("SELECT memstate.delete_fact(%s)", (fid,))
    write(conn, '{"t":"e"}', V2, fid, model="m3b")  # re-created with the same vector
    assert stored(conn, fid) == [
        (1, "put", V1, "m3"),
        (2, "update", None, "m3"),
        (3, "update", V2, "m3"),
        (4, "update", V2, "m3b"),
        (5, "delete", None, "m3b"),
        (6, "put", None, "m3b"),
    ]
    assert [effective(conn, fid, v) for v in range(1, 7)] == [V1, V1, V2, V2, V2, V2]


def test_raw_inserts_follow_the_same_rule(conn):
    """A writer that bypasses write_fact (the benchmarks' floor, an importer) logs the same."""
    with conn.transaction():
        seq = conn.execute("SELECT memstate.begin_commit('vv')").fetchone()[0]
        fid = conn.execute("SELECT gen_random_uuid()").fetchone()[0]
        for version in (1, 2):
            conn.execute(
                "INSERT INTO memstate.fact_versions (fact_id, version, seq, namespace, type, op,"
                " payload, content, embedding, embedding_model)"
                " VALUES (%s, %s, %s, 'vv', 'note', 'update', '{}', 'x', %s::vector, 'm3')",
                (fid, version, seq, V1),
            )
    assert [r[2] for r in stored(conn, fid)] == [V1, None]


def test_rollback_and_revert_restore_the_effective_vector(conn):
    fid, _, _ = write(conn, '{"t":"a"}', V1)
    write(conn, '{"t":"b"}', V1, fid)  # version 2: vector not stored
    write(conn, '{"t":"c"}', V2, fid)
    undo = conn.execute("SELECT memstate.rollback('vv', 1)").fetchone()[0]
    assert current(conn, fid) == (4, "b", V1, "m3")  # version 2's state, version 1's vector
    conn.execute("SELECT memstate.revert(%s)", (undo,))  # redo
    assert current(conn, fid) == (5, "c", V2, "m3")
    assert [effective(conn, fid, v) for v in range(1, 6)] == [V1, V1, V2, V1, V2]
    assert [r[2] for r in stored(conn, fid)] == [V1, None, V2, V1, V2]


def test_rollback_recreates_a_deleted_fact_with_its_vector(conn):
    fid, _, _ = write(conn, '{"t":"a"}', V1)
    write(conn, '{"t":"b"}', V1, fid)  # version 2: vector not stored
    conn.execute("SELECT memstate.delete_fact(%s)", (fid,))
    conn.execute("SELECT memstate.rollback('vv', 1)")
    assert current(conn, fid) == (4, "b", V1, "m3")


def test_store_api_as_of_history_and_rollback(dsn):
    with MemoryStore(dsn, embedder=HashingEmbedder(dim=16), max_size=2) as mem:
        mem.migrate()
        fid = mem.commit(Fact(type="note", payload={"text": "likes tea"}), namespace="api")
        mem.update(fid, {"session_id": "s1"})  # same content, same vector: not stored again
        first = mem.commits(namespace="api", limit=1)[0]["seq"]
        mem.update(fid, {"payload": {"text": "likes coffee"}})
        with psycopg.connect(dsn) as c:
            assert [r[2] is not None for r in stored(c, fid)] == [True, False, True]
            tea = effective(c, fid, 1)
            assert [f.version for f in mem.as_of(first, namespace="api")] == [2]
            assert effective(c, fid, 2) == tea
        assert [v.version for v in mem.history(fid)] == [1, 2, 3]
        mem.rollback(namespace="api")
        with psycopg.connect(dsn) as c:
            assert current(c, fid)[2] == tea
        hits = mem.search("likes tea", namespace="api", k=1)
        assert hits[0].score == pytest.approx(1.0)
