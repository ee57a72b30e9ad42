"""The SQL functions called directly, as from psql: the same versioning, constraint checks
and outbox rows as the Python API, with no Python in the write path."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import errors

V1 = "[1,0,0]"
V2 = "[0,1,0]"
V3 = "[0,0,1]"


@pytest.fixture
def conn(dsn: str):
    with psycopg.connect(dsn, autocommit=True) as c:
        c.execute("SELECT memstate.register_model('m3', 3)")
        c.execute("""SELECT memstate.register_type('profile',
            '{"type":"object","properties":{"field":{"type":"string"},"value":{"type":"string"},
              "age":{"type":"integer"}},"required":["field","value"]}', 'field', false, 'value')""")
        c.execute("SELECT memstate.register_type('event', NULL, NULL, true)")
        c.execute("SELECT memstate.register_type('note')")
        yield c


def commit(c, ns, type_, payload, vec=V1, **kw):
    extra = "".join(f", {k} => %({k})s" for k in kw)
    return c.execute(
        f"SELECT memstate.commit_fact(%(ns)s, %(t)s, %(p)s::jsonb, NULL, %(v)s::vector, 'm3'{extra})",
        {"ns": ns, "t": type_, "p": payload, "v": vec, **kw},
    ).fetchone()[0]


def scalar(c, q, *args):
    return c.execute(q, args).fetchone()[0]


def test_commit_fact_versions_and_current_view(conn):
    fid = commit(conn, "u1", "profile", '{"field":"city","value":"Berlin"}')
    same = commit(conn, "u1", "profile", '{"field":"city","value":"Paris"}', V2)
    assert fid == same  # singleton key: an update
    row = conn.execute(
        "SELECT version, content, payload->>'value' FROM memstate.current_facts WHERE fact_id = %s",
        (fid,),
    ).fetchone()
    assert row == (2, "Paris", "Paris")  # content derived from the type's text_field
    hist = conn.execute("SELECT version, op, kind FROM memstate.history(%s)", (fid,)).fetchall()
    assert hist == [(1, "put", "commit"), (2, "update", "commit")]


def test_sql_refusals_write_nothing(conn):
    def versions():
        return scalar(conn, "SELECT count(*) FROM memstate.fact_versions")

    before = versions()
    cases = [
        ("note", '{"text":"x"}', "[1,0]"),  # wrong dimension
        ("profile", '{"field":"city"}', V1),  # missing required field
        ("profile", '{"field":"city","value":3}', V1),  # wrong JSON type
        ("profile", '{"field":"city","value":"x","age":1.5}', V1),  # integer expected
        ("note", "[1,2]", V1),  # not an object
    ]
    for type_, payload, vec in cases:
        with pytest.raises(psycopg.Error) as info:
            commit(conn, "u1", type_, payload, vec)
        assert info.value.sqlstate == "MSV01", (type_, payload, info.value)
    with pytest.raises(psycopg.Error) as info:
        commit(conn, "u1", "note", '{"text":"x"}', "[NaN,0,0]")
    assert info.value.sqlstate in ("22P02", "22000")
    assert versions() == before and scalar(conn, "SELECT count(*) FROM memstate.commits") == 0


def test_payload_size_limit_from_config(conn):
    conn.execute("UPDATE memstate.config SET value = '100' WHERE key = 'max_payload_bytes'")
    with pytest.raises(psycopg.Error) as info:
        commit(conn, "u1", "note", '{"text":"' + "x" * 200 + '"}')
    assert info.value.sqlstate == "MSV01" and "over the limit" in str(info.value)


def test_immutable_and_singleton_rules_hold_for_raw_sql(conn):
    fid = commit(conn, "u1", "event", '{"text":"signed up"}')
    with pytest.raises(psycopg.Error) as info:
        commit(conn, "u1", "event", '{"text":"rewritten"}', fact_id=fid)
    assert info.value.sqlstate == "MSC01"
    # even a raw UPDATE of the table is refused by the trigger
    with pytest.raises(psycopg.Error):
        conn.execute(
            'UPDATE memstate.facts SET payload = \'{"text":"sneaky"}\' WHERE fact_id = %s', (fid,)
        )
    # and the singleton unique index stops a raw duplicate
    commit(conn, "u1", "profile", '{"field":"city","value":"Berlin"}')
    with pytest.raises(errors.UniqueViolation):
        conn.execute("""INSERT INTO memstate.facts (fact_id, namespace, type, payload, content, embedding,
                        embedding_model, version, commit_seq)
                        VALUES (gen_random_uuid(), 'u1', 'profile', '{"field":"city","value":"Rome"}', 'Rome',
                        '[1,0,0]', 'm3', 1, 1)""")


def test_history_is_append_only(conn):
    fid = commit(conn, "u1", "note", '{"text":"x"}')
    for stmt in (
        "UPDATE memstate.fact_versions SET payload = '{}' WHERE fact_id = %s",
        "DELETE FROM memstate.fact_versions WHERE fact_id = %s",
    ):
        with pytest.raises(psycopg.Error) as info:
            conn.execute(stmt, (fid,))
        assert info.value.sqlstate == "MSC01"
    with pytest.raises(psycopg.Error):
        conn.execute("TRUNCATE memstate.fact_versions CASCADE")
    with pytest.raises(psycopg.Error):
        conn.execute("DELETE FROM memstate.commits")


def test_transaction_from_sql_shares_a_seq(conn):
    conn.execute("BEGIN")
    seq = scalar(conn, "SELECT memstate.begin_commit('u1', actor => 'psql')")
    a = commit(conn, "u1", "note", '{"text":"a"}')
    b = commit(conn, "u1", "note", '{"text":"b"}')
    conn.execute("COMMIT")
    seqs = {
        r[0]
        for r in conn.execute(
            "SELECT commit_seq FROM memstate.facts WHERE fact_id IN (%s, %s)", (a, b)
        )
    }
    assert seqs == {seq}
    # without begin_commit, each call is its own commit
    c1 = commit(conn, "u1", "note", '{"text":"c"}')
    c2 = commit(conn, "u1", "note", '{"text":"d"}')
    assert scalar(conn, "SELECT commit_seq FROM memstate.facts WHERE fact_id = %s", c1) != scalar(
        conn, "SELECT commit_seq FROM memstate.facts WHERE fact_id = %s", c2
    )


def test_delete_rollback_revert_from_sql(conn):
    a = commit(conn, "r", "note", '{"text":"a"}')
    b = commit(conn, "r", "note", '{"text":"b"}', V2)
    del_seq = scalar(conn, "SELECT memstate.delete_fact(%s)", b)
    assert scalar(conn, "SELECT count(*) FROM memstate.facts WHERE namespace = 'r'") == 1
    rb = scalar(conn, "SELECT memstate.rollback('r', 1)")  # undoes the delete
    assert scalar(conn, "SELECT count(*) FROM memstate.facts WHERE namespace = 'r'") == 2
    scalar(conn, "SELECT memstate.rollback('r', 1)")  # then the commit of b
    live = {r[0] for r in conn.execute("SELECT fact_id FROM memstate.facts WHERE namespace = 'r'")}
    assert live == {a}
    undone = dict(
        conn.execute("SELECT seq, undone_by FROM memstate.commits WHERE namespace = 'r'").fetchall()
    )
    assert undone[del_seq] == rb
    redo = scalar(
        conn, "SELECT memstate.revert(%s)", rb
    )  # redo the first rollback: b deleted again
    assert redo > rb
    assert {
        r[0] for r in conn.execute("SELECT fact_id FROM memstate.facts WHERE namespace = 'r'")
    } == {a}
    with pytest.raises(psycopg.Error) as info:
        conn.execute("SELECT memstate.delete_fact(%s)", (b,))
    assert info.value.sqlstate == "MSN01"


def test_search_from_sql(conn):
    a = commit(conn, "s", "note", '{"text":"x","tag":"red"}', V1)
    commit(conn, "s", "note", '{"text":"y","tag":"blue"}', V2)
    rows = conn.execute(
        "SELECT fact_id, score FROM memstate.search('s', '[1,0.1,0]', 2)"
    ).fetchall()
    assert (
        rows[0][0] == a and rows[0][1] > rows[1][1] and rows[0][1] == pytest.approx(0.995, abs=1e-3)
    )
    rows = conn.execute(
        """SELECT payload->>'tag' FROM memstate.search('s', '[1,0,0]', 5, '{"tag":"blue"}')"""
    )
    assert [r[0] for r in rows] == ["blue"]
    for bad in (
        "SELECT * FROM memstate.search('s', '[1,0,0]', 0)",
        "SELECT * FROM memstate.search('s', '[1,0,0]', 5, '[1]')",
        "SELECT * FROM memstate.search('s', '[1,0]', 5)",
    ):
        with pytest.raises(psycopg.Error) as info:
            conn.execute(bad)
        assert info.value.sqlstate == "MSV01"


def test_outbox_rows_only_for_enabled_mirrors_in_scope(conn):
    commit(conn, "o", "note", '{"text":"before any mirror"}')
    assert scalar(conn, "SELECT count(*) FROM memstate.outbox") == 0
    conn.execute("INSERT INTO memstate.mirrors (name, kind) VALUES ('all', 'memory')")
    conn.execute(
        "INSERT INTO memstate.mirrors (name, kind, namespaces) VALUES ('only-x', 'memory', '{x}')"
    )
    conn.execute(
        "INSERT INTO memstate.mirrors (name, kind, enabled) VALUES ('off', 'memory', false)"
    )
    with conn.cursor() as listen:
        listen.execute("LISTEN memstate_outbox")
    fid = commit(conn, "o", "note", '{"text":"after"}')
    rows = conn.execute("SELECT mirror, fact_id, version, op FROM memstate.outbox").fetchall()
    assert rows == [("all", fid, 1, "put")]
    assert any(n.channel == "memstate_outbox" for n in conn.notifies(timeout=1, stop_after=1))
    # a failed commit leaves no outbox row
    with pytest.raises(psycopg.Error):
        commit(conn, "x", "note", '{"text":"bad"}', "[1,2]")
    assert scalar(conn, "SELECT count(*) FROM memstate.outbox") == 1


def test_as_of_and_seq_at_from_sql(conn):
    a = commit(conn, "t", "note", '{"text":"one"}')
    s1 = scalar(conn, "SELECT commit_seq FROM memstate.facts WHERE fact_id = %s", a)
    commit(conn, "t", "note", '{"text":"two"}', fact_id=a)
    rows = conn.execute(
        "SELECT payload->>'text', version FROM memstate.as_of('t', %s)", (s1,)
    ).fetchall()
    assert rows == [("one", 1)]
    assert scalar(conn, "SELECT memstate.seq_at('t', now() + interval '1 hour')") > s1


def test_trigger_rules_hold_for_raw_inserts(conn):
    """The checks the triggers write out inline (sizes, dimension, norm, the active model, a
    commit born with empty bookkeeping) refuse raw INSERTs as the helper functions did."""
    conn.execute("UPDATE memstate.config SET value = '100' WHERE key = 'max_payload_bytes'")
    conn.execute("UPDATE memstate.config SET value = '10' WHERE key = 'max_content_bytes'")
    seq = scalar(conn, "SELECT memstate.begin_commit('u1')")
    raw_fact = """INSERT INTO memstate.facts (fact_id, namespace, type, payload, content, embedding,
                  embedding_model, version, commit_seq)
                  VALUES (gen_random_uuid(), %s, 'note', %s::jsonb, %s, %s::vector, 'm3', 1, %s)"""
    cases = [
        (("u1", '{"text":"' + "x" * 200 + '"}', "x", V1, seq), "payload is"),
        (("u1", '{"text":"x"}', "x" * 11, V1, seq), "content is 11 bytes"),
        (("u1", '{"text":"x"}', "x", "[1,0]", seq), "2 dimensions"),
        (("u1", '{"text":"x"}', "x", "[0,0,0]", seq), "all zeros"),
        (("u1", '{"text":"x"}', "x", "[1e30,0,0]", seq), "too long"),
    ]
    for args, message in cases:
        with pytest.raises(psycopg.Error) as info:
            conn.execute(raw_fact, args)
        assert info.value.sqlstate == "MSV01" and message in str(info.value), (args, info.value)
    with pytest.raises(psycopg.Error) as info:
        conn.execute(
            """INSERT INTO memstate.fact_versions (fact_id, version, seq, namespace, type, op,
               payload, content, embedding, embedding_model)
               VALUES (gen_random_uuid(), 1, %s, 'u1', 'note', 'put', '{}', %s, %s::vector, 'm3')""",
            (seq, "x" * 11, V1),
        )
    assert info.value.sqlstate == "MSV01" and "content is 11 bytes" in str(info.value)
    # a namespace switched to another model by a re-embed refuses vectors of the old one
    conn.execute("SELECT memstate.register_model('other', 3)")
    conn.execute("INSERT INTO memstate.namespace_models (namespace, model) VALUES ('u1', 'other')")
    with pytest.raises(psycopg.Error) as info:
        conn.execute(raw_fact, ("u1", '{"text":"x"}', "x", V1, seq))
    assert info.value.sqlstate == "MSV01" and "switched by a re-embed" in str(info.value)
    for column, value in (("undoes", "{1}"), ("result", "[]")):
        with pytest.raises(psycopg.Error) as info:
            conn.execute(
                f"INSERT INTO memstate.commits (namespace, {column}) VALUES ('u1', %s)", (value,)
            )
        assert info.value.sqlstate == "MSC01" and "a new commit has no" in str(info.value)
    with pytest.raises(psycopg.Error) as info:
        conn.execute(
            "INSERT INTO memstate.commits (namespace, undone_by) VALUES ('u1', %s)", (seq,)
        )
    assert info.value.sqlstate == "MSC01"
