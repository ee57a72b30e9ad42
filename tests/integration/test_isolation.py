# ruff: noqa: F811 - pytest fixtures imported from test_rls are parameters here
"""Isolation round 2 (issue 11, the SQL side): one regression test per item, each an attack by
a tenant logged in as a real LOGIN role IN a memstate group role (RLS on, as in
test_rls.py), proven against the database. Each `test_item_*` and `test_*` regression test
here failed before its fix; test_item_2_qualified_distance_still_uses_the_hnsw_index guards
the fix itself (search keeps its index with pgvector qualified).
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
import time

import psycopg
import psycopg.sql
import pytest

from memstate_pg import Fact, NotFound, security
from memstate_pg.vectors import vector_text
from tests.integration.test_rls import (  # noqa: F401 - shared fixtures
    digest,
    login,
    secured,
    sqlstate_of,
    stores,
    world,
)

VEC = vector_text([0.1] * 384)


def _connect(dsn: str, **kw) -> psycopg.Connection:
    return psycopg.connect(dsn, autocommit=True, **kw)


# --- item 2: search_path hijack ----------------------------------------------------------------

# Overloads a tenant with CREATE on `public` can plant: each is a better match than the
# pg_catalog function an unqualified call with these argument types resolves to, so it ran
# inside memstate's functions with the rights of whoever called them (another tenant, the
# owner). Each copies what its caller sees of memstate.facts into a table the tenant reads.
PLANTS = {
    "jsonb_build_object(text, bigint, text, boolean)": "pg_catalog.jsonb_build_object($1, $2, $3, $4)",
    "array_to_string(text[], text)": "pg_catalog.array_to_string($1, $2)",
    "to_jsonb(text)": "pg_catalog.to_jsonb($1)",
    "format(text, text)": "pg_catalog.format($1, $2)",
    "format(text, text, text)": "pg_catalog.format($1, $2, $3)",
    "format(text, uuid, text)": "pg_catalog.format($1, $2, $3)",
    "vector_dims(real[])": "0",
}


def test_item_2_planted_overloads_never_run_inside_memstate(world, login, secured, mem):
    attacker = login("memstate_app", "a")
    victim = login("memstate_app", "b")
    with _planting(secured, attacker) as loot:
        _item_2_attack(world, secured, attacker, victim, mem)
        assert loot() == []


def _user(dsn: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(dsn)["user"]


@contextlib.contextmanager
def _planting(admin_dsn: str, tenant: str):
    """Give `tenant` CREATE on public (PostgreSQL <= 14's default, or a pg_upgrade'd
    database); yields a function returning what the tenant's table public.loot holds; drops
    the tenant's objects afterwards."""
    ident = psycopg.sql.Identifier(_user(tenant))
    with _connect(admin_dsn) as admin:
        admin.execute(psycopg.sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(ident))
    with _connect(tenant) as a:
        a.execute("CREATE TABLE public.loot (who text, what text)")
        a.execute("GRANT INSERT ON public.loot TO PUBLIC")
    try:
        yield lambda: _connect(tenant).execute("SELECT who, what FROM public.loot").fetchall()
    finally:
        with _connect(admin_dsn) as admin:
            admin.execute(psycopg.sql.SQL("DROP OWNED BY {}").format(ident))


def _item_2_attack(world, secured, attacker, victim, mem) -> None:
    with _connect(secured) as admin:
        admin.execute(
            "SELECT memstate.register_type('strict', "
            '\'{"type":"object","properties":{"n":{"type":"integer"}}}\')'
        )
    with _connect(attacker) as a:
        for signature, result in PLANTS.items():
            returns = {"jsonb_": "jsonb", "array_": "text", "to_jso": "jsonb", "format": "text"}
            rtype = returns.get(signature[:6], "int")
            a.execute(
                f"CREATE FUNCTION public.{signature} RETURNS {rtype} LANGUAGE sql AS $f$ "
                "INSERT INTO public.loot SELECT current_user, "
                "coalesce(pg_catalog.string_agg(f.payload::text, '|'), '') FROM memstate.facts f; "
                f"SELECT {result} $f$"
            )
    b = world["b"]
    with _connect(victim) as v:  # the default search_path: "$user", public
        v.execute("BEGIN")
        v.execute("SELECT memstate.begin_commit('b')")
        v.execute(
            "SELECT memstate.commit_fact('b', 'note', '{\"text\": \"b again\"}', NULL, "
            "%s::vector, %s, idempotency_key => 'k1')",
            [VEC, world["model"]],
        )
        v.execute("COMMIT")
        v.execute(
            "SELECT memstate.commit_fact('b', 'note', '{\"text\": \"b keyed\"}', NULL, "
            "%s::vector, %s, idempotency_key => 'k2')",
            [VEC, world["model"]],
        )
        for query, params in [
            (  # validate_payload's message
                "SELECT memstate.commit_fact('b', 'strict', '{\"n\": \"x\"}', NULL, %s::vector, %s)",
                [VEC, world["model"]],
            ),
            ("SELECT memstate.rollback('b', 1, 'no such session')", None),
            ("SELECT memstate.delete_fact(%s, 99)", [b["note"]]),
        ]:
            assert sqlstate_of(v, query, params) is not None
        v.execute("SELECT * FROM memstate.search('b', %s::vector, 3)", [VEC])
    mem.commit(Fact(type="note", payload={"text": "the owner writes"}), namespace="b")
    with mem.transaction(namespace="b") as tx:
        tx.commit(Fact(type="note", payload={"text": "owner in a transaction"}))


# --- also: glob_to_like under standard_conforming_strings = off ------------------------------


def test_glob_to_like_without_standard_conforming_strings(world, login):
    app = login("memstate_app", "a", "tenant\\*lit_*")
    with _connect(app) as conn:
        conn.execute("SET standard_conforming_strings = off")
        assert conn.execute("SELECT count(*) FROM memstate.facts").fetchone()[0] == 3
        assert (
            conn.execute("SELECT memstate.glob_to_like(%s)", ["a\\*b_%c\\\\d\\"]).fetchone()[0]
            == "a*b\\_\\%c\\\\d\\\\"
        )


# --- item 7: re-applying functions.sql by hand ---------------------------------------------


def _statements(text: str) -> list[str]:
    """Split a SQL file the way psql sends it without -1: one statement at a time (comments,
    quotes and dollar quotes respected)."""
    out, start, i, n = [], 0, 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("--", i):
            i = text.find("\n", i) if text.find("\n", i) != -1 else n
        elif c == "'":
            i = text.find("'", i + 1) + 1
        elif c == "$" and (m := re.match(r"\$[A-Za-z_]*\$", text[i:])):
            i = text.find(m.group(0), i + len(m.group(0))) + len(m.group(0))
        elif c == ";":
            out.append(text[start : i + 1].strip())
            start = i = i + 1
        else:
            i += 1
    return [s for s in out if s.strip(" ;\n")]


def test_item_7_reapplying_functions_sql_never_opens_the_view(world, login, secured):
    """psql -f sql/functions.sql (autocommit, statement by statement) while a tenant reads
    current_facts: after every single statement the view still shows only its namespace."""
    from memstate_pg.sqlfiles import read_sql

    statements = _statements(read_sql("functions.sql"))
    views = [s for s in statements if "VIEW memstate.current_facts" in s]
    assert views, "functions.sql defines the view"
    app = login("memstate_app", "a")
    with _connect(secured) as admin, _connect(app) as tenant:
        for statement in statements:
            admin.execute(statement)
            if statement in views:
                rows = tenant.execute(
                    "SELECT DISTINCT namespace FROM memstate.current_facts"
                ).fetchall()
                assert rows == [("a",)], statement[:80]


# --- item 3: version squatting -----------------------------------------------------------------


def _open_commit(conn: psycopg.Connection, namespace: str) -> int:
    return conn.execute("SELECT memstate.begin_commit(%s)", [namespace]).fetchone()[0]


def test_item_3_fact_ids_belong_to_one_namespace(world, login, mem, secured):
    b = world["b"]
    attacker = login("memstate_app", "a")
    mem.delete(b["city"])  # a deleted fact's id must not be taken over either
    city_deleted = mem.commits(namespace="b", limit=1)[0]["seq"]
    with _connect(attacker) as a:
        squat = (
            "INSERT INTO memstate.fact_versions (fact_id, version, seq, namespace, type, op, payload,"
            " content) VALUES (%s, %s, %s, 'a', 'note', 'put', '{}', 'x')"
        )
        for fact_id in (b["note"], b["city"]):
            for version in range(1, 5):
                with a.transaction():
                    seq = _open_commit(a, "a")
                    assert sqlstate_of(a, squat, [fact_id, version, seq]) in ("MSC01", "23505")
        with a.transaction():
            seq = _open_commit(a, "a")
            assert (
                sqlstate_of(
                    a,
                    "INSERT INTO memstate.facts (fact_id, namespace, type, payload, content,"
                    " embedding, embedding_model, version, commit_seq) VALUES (%s, 'a', 'profile',"
                    ' \'{"field": "f", "value": "v"}\', \'v\', %s::vector, %s, 3, %s)',
                    [b["city"], VEC, world["model"], seq],
                )
                == "MSC01"
            )
        # write_fact's own guard, which reads under RLS, and the trigger behind it
        assert (
            sqlstate_of(
                a,
                "SELECT memstate.commit_fact('a', 'note', '{\"text\": \"mine\"}', NULL, %s::vector,"
                " %s, fact_id => %s)",
                [VEC, world["model"], b["city"]],
            )
            == "MSC01"
        )
        # versions are contiguous, in its own namespace too
        own = world["a"]["note"]
        with a.transaction():
            seq = _open_commit(a, "a")
            assert sqlstate_of(a, squat, [own, 9, seq]) == "MSC01"
    # the victim's history is intact: its fact updates and deletes, its deleted fact comes back
    assert mem.update(b["note"], {"payload": {"text": "b still works"}}) == 3
    mem.delete(b["note"])
    mem.revert(mem.commits(namespace="b", limit=1)[0]["seq"])
    assert mem.get(b["note"]).namespace == "b"
    mem.revert(city_deleted)
    assert mem.get(b["city"]).payload["value"] == "b-town"
    with _connect(secured) as admin:
        assert (
            admin.execute(
                "SELECT count(*) FROM memstate.fact_versions WHERE namespace = 'a' AND fact_id = ANY (%s)",
                [[b["note"], b["city"]]],
            ).fetchone()[0]
            == 0
        )


# --- item 5: size limits for raw SQL -----------------------------------------------------------


def test_item_5_size_limits_hold_for_raw_inserts(world, login, secured):
    big = "x" * (1024 * 1024 + 10)  # the default limits are 1 MiB of payload and of content
    app = login("memstate_app", "a")
    with _connect(app) as a, a.transaction():
        seq = _open_commit(a, "a")
        fact = (
            "INSERT INTO memstate.facts (fact_id, namespace, type, payload, content, embedding,"
            " embedding_model, version, commit_seq) VALUES (gen_random_uuid(), 'a', 'note',"
            " %s::jsonb, %s, %s::vector, %s, 1, %s)"
        )
        assert (
            sqlstate_of(a, fact, [json.dumps({"text": big}), "c", VEC, world["model"], seq])
            == "MSV01"
        )
        assert sqlstate_of(a, fact, ['{"text": "t"}', big, VEC, world["model"], seq]) == "MSV01"
        version = (
            "INSERT INTO memstate.fact_versions (fact_id, version, seq, namespace, type, op,"
            " payload, content) VALUES (gen_random_uuid(), 1, %s, 'a', 'note', 'put', %s::jsonb, %s)"
        )
        assert sqlstate_of(a, version, [seq, json.dumps({"text": big}), "c"]) == "MSV01"
        assert sqlstate_of(a, version, [seq, '{"text": "t"}', big]) == "MSV01"
        assert (
            sqlstate_of(
                a,
                "UPDATE memstate.facts SET content = %s WHERE fact_id = %s",
                [big, world["a"]["note"]],
            )
            == "MSV01"
        )
    with _connect(secured) as admin:
        assert (
            admin.execute(
                "SELECT max(octet_length(content)) FROM memstate.fact_versions"
            ).fetchone()[0]
            < 1000
        )


# --- item 13: undo bookkeeping -------------------------------------------------------------


def test_item_13_commit_bookkeeping_only_grows(world, login, stores):
    dsn = login("memstate_app", "a")
    app = stores(dsn)
    fid = app.commit(
        Fact(type="note", payload={"text": "keyed"}), namespace="a", idempotency_key="k"
    )
    done = app.commits(namespace="a", limit=1)[0]["seq"]
    undo = app.rollback(namespace="a")
    with _connect(dsn) as a:
        for query, params in [
            ("UPDATE memstate.commits SET undone_by = NULL WHERE seq = %s", [done]),  # erase it
            ("UPDATE memstate.commits SET undone_by = %s WHERE seq = %s", [done, done]),
            ("UPDATE memstate.commits SET undoes = '{}' WHERE seq = %s", [undo]),
            ("UPDATE memstate.commits SET undoes = NULL WHERE seq = %s", [undo]),
            (
                "UPDATE memstate.commits SET result = %s WHERE seq = %s",
                [json.dumps([str(world["a"]["note"])]), done],
            ),
            ("UPDATE memstate.commits SET result = NULL WHERE seq = %s", [done]),
        ]:
            assert sqlstate_of(a, query, params) == "MSC01", query
        # a commit that is still in effect cannot be marked undone by a commit that did not undo it
        other = app.commit(Fact(type="note", payload={"text": "other"}), namespace="a")
        last = app.commits(namespace="a", limit=1)[0]["seq"]
        assert (
            sqlstate_of(
                a, "UPDATE memstate.commits SET undone_by = %s WHERE seq = %s", [undo, last]
            )
            == "MSC01"
        )
    # the functions' own bookkeeping still works: redo, and the idempotent replay
    app.revert(undo)
    assert app.get(fid) is not None and app.get(other) is not None
    assert (
        app.commit(Fact(type="note", payload={"text": "keyed"}), namespace="a", idempotency_key="k")
        == fid
    )


# --- item 14: a namespace-bound revert() checks one seq ---------------------------------------


def test_item_14_bound_revert_does_not_download_the_namespace(mem, dsn, stores):
    """Python memory of one revert() by a store bound to a namespace of 30,000 commits: it
    asks the database about one seq instead of fetching every commit (before: ~18 MB)."""
    import tracemalloc

    bound = stores(dsn, namespace="big")
    fid = bound.commit(Fact(type="note", payload={"text": "to revert"}))
    seq = bound.commits(limit=1)[0]["seq"]
    with _connect(dsn) as admin:
        admin.execute(
            "INSERT INTO memstate.commits (namespace, actor, reason) "
            "SELECT 'big', 'actor', 'a reason ' || g FROM generate_series(1, 30000) g"
        )
    other = mem.commit(Fact(type="note", payload={"text": "elsewhere"}), namespace="small")
    foreign = mem.commits(namespace="small", limit=1)[0]["seq"]
    tracemalloc.start()
    try:
        bound.revert(seq)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert bound.get(fid) is None
    assert peak < 2_000_000, f"{peak} bytes allocated by one revert()"
    with pytest.raises(NotFound):
        bound.revert(foreign)
    assert mem.get(other) is not None


# --- also: a concurrent re-creation during revert is a conflict, not a raw 23505 ---------------


def _wait_until_blocked(conn: psycopg.Connection, pid: int) -> None:
    for _ in range(500):
        if conn.execute(
            "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s", [pid]
        ).fetchone()[0]:
            return
        time.sleep(0.01)
    raise AssertionError("the second transaction never waited")


def test_concurrent_recreation_during_revert_is_msc01(mem, dsn):
    fid = mem.commit(Fact(type="note", payload={"text": "v1"}), namespace="n")
    mem.delete(fid)
    deleted = mem.commits(namespace="n", limit=1)[0]["seq"]
    model = mem.embedder.model
    outcome: dict = {}
    with _connect(dsn) as first, _connect(dsn) as second, _connect(dsn) as watch:
        first.execute("BEGIN")
        first.execute(
            "SELECT memstate.commit_fact('n', 'note', '{\"text\": \"again\"}', NULL, %s::vector,"
            " %s, fact_id => %s)",
            [VEC, model, fid],
        )
        pid = second.info.backend_pid

        def revert() -> None:
            outcome["state"] = sqlstate_of(second, "SELECT memstate.revert(%s)", [deleted])

        thread = threading.Thread(target=revert)
        thread.start()
        _wait_until_blocked(watch, pid)
        first.execute("COMMIT")
        thread.join(10)
    assert outcome["state"] == "MSC01"
    assert mem.get(fid).payload["text"] == "again"


# --- item 4: LOCK TABLE --------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["ACCESS EXCLUSIVE", "EXCLUSIVE", "SHARE ROW EXCLUSIVE", "SHARE"])
def test_item_4_a_tenant_cannot_lock_facts_against_everyone(world, login, stores, mode):
    dsn = login("memstate_app", "a")
    with _connect(dsn) as a:
        with a.transaction():
            assert sqlstate_of(a, f"LOCK TABLE memstate.facts IN {mode} MODE") == "42501"
        # a raw DELETE is refused too (DELETE is what allowed LOCK); deletes go through the
        # functions, which mark the row and let the facts_delete trigger remove it
        assert sqlstate_of(a, "DELETE FROM memstate.facts") == "42501"
        assert (
            sqlstate_of(a, "UPDATE memstate.facts SET namespace = 'a', fact_id = fact_id")
            == "42501"
        )
    app = stores(dsn)
    note, sess = world["a"]["note"], world["a"]["sess"]
    app.delete(note)
    assert app.get(note) is None
    assert app.discard_session("s1", namespace="a") is not None
    assert app.get(sess) is None
    app.rollback(namespace="a", steps=2)
    assert app.get(note) is not None and app.get(sess) is not None
    assert [v.op for v in app.history(note)][-2:] == ["delete", "put"]


def test_item_4_lock_holders_are_reported(world, login, secured):
    """memstate_sync keeps DELETE on the outbox (acknowledgement), which also allows LOCK
    TABLE: not preventable by grants, so it is detected and named."""
    dsn = login("memstate_sync", "*")
    with _connect(dsn) as sync:
        sync.execute("BEGIN")
        sync.execute("LOCK TABLE memstate.outbox IN ACCESS EXCLUSIVE MODE")
        found = security.lock_holders(secured)
        sync.execute("ROLLBACK")
    assert [(h.role, h.table, h.mode) for h in found] == [
        (_user(dsn), "outbox", "AccessExclusiveLock")
    ]
    assert security.lock_holders(secured) == []


# --- item 10: mirrors do not tell tenants about each other ---------------------------------------


def test_item_10_tenants_do_not_learn_other_namespaces_from_mirrors(world, login, stores, secured):
    report = {"missing": 3, "stale": 1, "ghosts": 2}
    with _connect(secured) as admin:
        admin.execute("UPDATE memstate.mirrors SET last_reconcile = %s", [json.dumps(report)])
    dsn = login("memstate_app", "a")
    with _connect(dsn) as a:
        assert sqlstate_of(a, "SELECT namespaces FROM memstate.mirrors") == "42501"
        assert sqlstate_of(a, "SELECT last_reconcile FROM memstate.mirrors") == "42501"
        rows = a.execute(
            "SELECT name, namespaces, last_reconcile FROM memstate.mirror_info ORDER BY name"
        ).fetchall()
    assert rows == [("ab", None, None), ("all", None, None)]
    status = stores(dsn).status()
    assert set(status) == {"ab", "all"}
    assert all(s.last_reconcile is None for s in status.values())
    # a role granted every namespace a mirror covers sees all of it; the sync worker too
    wide = login("memstate_reader", "a", "b")
    sync = login("memstate_sync", "*")
    for who, expected in [
        (
            wide,
            {"ab": (["a", "b"], report), "all": (None, None), "only_b": (["b"], report)},
        ),
        (sync, {"ab": (["a", "b"], report), "all": (None, report), "only_b": (["b"], report)}),
    ]:
        with _connect(who) as conn:
            got = {
                name: (namespaces, last)
                for name, namespaces, last in conn.execute(
                    "SELECT name, namespaces, last_reconcile FROM memstate.mirror_info"
                )
            }
        assert got == expected
    with _connect(sync) as conn:  # the worker keeps reading the registry itself
        assert (
            len(conn.execute("SELECT name, namespaces, options FROM memstate.mirrors").fetchall())
            == 3
        )


def test_item_2_roles_warns_about_and_revokes_create_on_the_path(secured, login, capsys):
    tenant = login("memstate_app", "a")
    with _connect(secured) as admin:  # as on PostgreSQL <= 14, plus a grant of its own
        admin.execute("GRANT CREATE ON SCHEMA public TO PUBLIC")
        admin.execute(
            psycopg.sql.SQL("GRANT CREATE ON SCHEMA public TO {}").format(
                psycopg.sql.Identifier(_user(tenant))
            )
        )
    try:
        _check_create_warnings(secured, tenant, capsys)
    finally:  # the tenant's grant would keep its role from being dropped
        with _connect(secured) as admin:
            admin.execute(
                psycopg.sql.SQL("REVOKE CREATE ON SCHEMA public FROM PUBLIC, {}").format(
                    psycopg.sql.Identifier(_user(tenant))
                )
            )


def _check_create_warnings(secured: str, tenant: str, capsys) -> None:
    from memstate_pg.cli import main

    risks = {(r.schema, r.grantee) for r in security.create_risks(secured)}
    assert risks == {("public", "PUBLIC"), ("public", _user(tenant))}

    def cli(*argv: str) -> int:
        return main(list(argv))

    assert cli("roles", "--list", "--dsn", secured) == 0
    err = capsys.readouterr().err
    assert "warning: PUBLIC may CREATE in schema public" in err
    assert "memstate-pg roles --revoke-create" in err
    assert cli("roles", "--revoke-create", "--dsn", secured) == 0
    assert security.create_risks(secured) == []
    with _connect(tenant) as t:
        assert sqlstate_of(t, "CREATE TABLE public.planted (x int)") == "42501"
    assert cli("roles", "--list", "--dsn", secured) == 0
    assert "warning" not in capsys.readouterr().err


def test_item_2_qualified_distance_still_uses_the_hnsw_index(mem, dsn):
    """search() qualifies pgvector's type and operator (its schema is not on the pinned
    path); the expression must still match the model's partial HNSW index."""
    mem.commit(Fact(type="note", payload={"text": "note"}), namespace="s")
    with _connect(dsn) as conn:
        dim, index = conn.execute(
            "SELECT dim, index_name FROM memstate.embedding_models WHERE model = %s",
            [mem.embedder.model],
        ).fetchone()
        expr = conn.execute(
            "SELECT memstate._distance_sql(%s, %s, quote_literal(%s))", [dim, index, VEC]
        ).fetchone()[0]
        assert "OPERATOR(public.<=>)" in expr
        conn.execute("SET enable_seqscan = off")
        conn.execute("SET enable_bitmapscan = off")
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                f"EXPLAIN SELECT f.fact_id FROM memstate.facts f WHERE f.embedding_model = %s "
                f"AND f.namespace = 's' ORDER BY {expr} LIMIT 5",
                [mem.embedder.model],
            )
        )
    assert index in plan, plan
    assert [h.fact.payload["text"] for h in mem.search("note", namespace="s", k=3)] == ["note"]
