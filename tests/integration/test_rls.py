"""Row Level Security by namespace (sql/rls.sql): a role granted namespace A can neither see
nor change anything of namespace B — through MemoryStore, raw SQL (the narrowing setting
included) or the SQL functions — while everything of A keeps working.

Each test logs in as a fresh login role IN a memstate group role (sql/roles.sql); the
admin (`mem`, a superuser) writes the world and checks it afterwards.
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from psycopg_pool import ConnectionPool

from memstate_pg import ConflictError, Fact, MemoryStore, NotFound, PermissionDenied, security
from memstate_pg.vectors import vector_text

VEC = vector_text([0.1] * 384)
MODEL = "hashing-384"  # replaced by the store's model name in `world`

# --- fixtures shared by the security tests (test_roles.py imports them) -------------------


def with_user(dsn: str, user: str, password: str) -> str:
    params = conninfo_to_dict(dsn)
    params.update(user=user, password=password)
    return make_conninfo(**params)


@pytest.fixture
def secured(dsn: str) -> str:
    """A fresh database with the memstate roles granted and RLS on (admin DSN)."""
    security.create_roles(dsn)
    security.enable_rls(dsn)
    return dsn


@pytest.fixture
def login(secured: str) -> Iterator[Callable[..., str]]:
    """login(group, *patterns) -> DSN of a new login role IN `group`, granted `patterns`."""
    made: list[str] = []

    def make(group: str, *patterns: str) -> str:
        name = f"ms_{group.removeprefix('memstate_')}_{uuid.uuid4().hex[:10]}"
        password = secrets.token_hex(12)
        security.create_login(secured, name, group, password=password)
        made.append(name)
        if patterns:
            security.grant(secured, name, patterns)
        return with_user(secured, name, password)

    yield make
    for name in made:
        security.drop_login(secured, name)


@pytest.fixture
def stores() -> Iterator[Callable[..., MemoryStore]]:
    """stores(dsn, **kw) -> a MemoryStore closed after the test."""
    opened: list[MemoryStore] = []

    def make(dsn: str, **kwargs) -> MemoryStore:
        store = MemoryStore(dsn, max_size=2, **kwargs)
        opened.append(store)
        return store

    yield make
    for store in opened:
        store.close()


def digest(dsn: str, namespace: str) -> dict[str, str]:
    """Everything of one namespace, as the admin sees it: one hash per table."""
    out = {}
    with psycopg.connect(dsn) as conn:
        for table in ("facts", "fact_versions", "commits", "outbox"):
            out[table] = conn.execute(
                f"SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') "
                f"FROM memstate.{table} t WHERE namespace = %s",
                [namespace],
            ).fetchone()[0]
    return out


def sqlstate_of(conn: psycopg.Connection, query: str, params=None) -> str | None:
    """Run `query` in a savepoint; its SQLSTATE if it failed, else None."""
    try:
        with conn.transaction():
            conn.execute(query, params)
    except psycopg.Error as exc:
        return exc.sqlstate
    return None


@pytest.fixture
def world(mem: MemoryStore, secured: str) -> dict:
    """Namespaces a and b with facts, updates, a session, and three mirrors."""
    with psycopg.connect(secured, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO memstate.mirrors (name, kind, namespaces) VALUES "
            "('all', 'memory', NULL), ('only_b', 'memory', '{b}'), ('ab', 'memory', '{a,b}')"
        )
    w: dict = {"model": mem.embedder.model}
    for ns in ("a", "b"):
        note = mem.commit(Fact(type="note", payload={"text": f"{ns} secret note"}), namespace=ns)
        mem.update(note, {"payload": {"text": f"{ns} secret note, edited"}})
        city = mem.commit(
            Fact(type="profile", payload={"field": "city", "value": f"{ns}-town"}), namespace=ns
        )
        sess = mem.commit(
            Fact(type="note", payload={"text": f"{ns} working memory"}),
            namespace=ns,
            session_id="s1",
        )
        w[ns] = {
            "note": note,
            "city": city,
            "sess": sess,
            "seq": mem.commits(namespace=ns, limit=1)[0]["seq"],
        }
    return w


# --- the Python API ------------------------------------------------------------------------


def test_python_api_cannot_touch_another_namespace(world, login, stores, secured):
    before = digest(secured, "b")
    app = stores(login("memstate_app", "a"))
    b = world["b"]
    assert app.get(b["note"]) is None
    assert app.query(namespace="b") == []
    assert app.query(type="profile", filters={"field": "city"}, namespace="b") == []
    assert app.search("secret note", namespace="b") == []
    assert app.history(b["note"]) == []
    assert app.history(namespace="b") == []
    assert app.as_of(b["seq"], namespace="b") == []
    assert app.commits(namespace="b") == []
    with pytest.raises(NotFound):
        app.update(b["note"], {"payload": {"text": "pwned"}})
    with pytest.raises(NotFound):
        app.delete(b["note"])
    with pytest.raises(NotFound):
        app.rollback(namespace="b")
    with pytest.raises(NotFound):
        app.revert(b["seq"])
    assert app.promote_session("s1", namespace="b") is None
    assert app.discard_session("s1", namespace="b") is None
    with pytest.raises(PermissionDenied):
        app.commit(Fact(type="note", payload={"text": "planted"}), namespace="b")
    with pytest.raises(PermissionDenied), app.transaction(namespace="b") as tx:
        tx.commit(Fact(type="note", payload={"text": "planted"}))
    # reusing b's fact id from namespace a neither overwrites nor reveals it
    with pytest.raises(ConflictError) as info:
        app.commit(Fact(id=b["note"], type="note", payload={"text": "take over"}), namespace="a")
    assert "secret" not in str(info.value)
    # status shows only mirrors covering a, with a's rows
    assert set(app.status()) == {"all", "ab"}
    assert digest(secured, "b") == before


def test_python_api_works_in_its_own_namespace(world, login, stores, mem):
    app = stores(login("memstate_app", "a"))
    a = world["a"]
    assert app.get(a["note"]).payload["text"] == "a secret note, edited"
    assert {f.id for f in app.query(namespace="a")} == {a["note"], a["city"], a["sess"]}
    assert app.search("secret note", namespace="a", k=1)[0].fact.id == a["note"]
    fid = app.commit(Fact(type="note", payload={"text": "new in a"}), namespace="a")
    assert app.update(fid, {"payload": {"text": "newer in a"}}) == 2
    # the singleton is per namespace: a's city is updated, b's untouched
    assert (
        app.commit(Fact(type="profile", payload={"field": "city", "value": "Rome"}), namespace="a")
        == a["city"]
    )
    assert mem.get(world["b"]["city"]).payload["value"] == "b-town"
    with app.transaction(namespace="a") as tx:
        tx.commit(Fact(type="note", payload={"text": "one"}))
        tx.delete(fid)
    seq = app.rollback(namespace="a")
    assert app.get(fid).payload["text"] == "newer in a"
    app.revert(seq)
    assert app.get(fid) is None
    assert [v.op for v in app.history(fid)] == ["put", "update", "delete", "put", "delete"]
    assert app.promote_session("s1", namespace="a") is not None
    assert app.as_of(world["a"]["seq"], namespace="a")


def test_async_store_is_bound_the_same_way(world, login):
    import asyncio

    from memstate_pg import AsyncMemoryStore

    async def run() -> None:
        async with AsyncMemoryStore(login("memstate_app", "a"), max_size=2) as app:
            assert await app.get(world["b"]["note"]) is None
            assert await app.search("secret note", namespace="b") == []
            with pytest.raises(NotFound):
                await app.revert(world["b"]["seq"])
            with pytest.raises(PermissionDenied):
                await app.commit(Fact(type="note", payload={"text": "planted"}), namespace="b")
            assert await app.commit(Fact(type="note", payload={"text": "mine"}), namespace="a")

    asyncio.run(run())


# --- raw SQL ---------------------------------------------------------------------------------


@pytest.mark.parametrize("table", ["facts", "fact_versions", "commits", "outbox", "current_facts"])
def test_sql_reads_see_only_granted_namespaces(world, login, table):
    with psycopg.connect(login("memstate_app", "a")) as conn:
        seen = {r[0] for r in conn.execute(f"SELECT DISTINCT namespace FROM memstate.{table}")}
        assert seen <= {"a"}
        # the narrowing setting cannot widen: b stays invisible, and a disappears too
        conn.execute("SET memstate.namespace = 'b'")
        assert conn.execute(f"SELECT count(*) FROM memstate.{table}").fetchone()[0] == 0
        conn.execute("RESET memstate.namespace")
        assert (
            conn.execute(f"SELECT count(*) FROM memstate.{table} WHERE namespace = 'b'").fetchone()[
                0
            ]
            == 0
        )


def test_sql_writes_to_another_namespace_change_nothing(world, login, secured):
    before = digest(secured, "b")
    b = world["b"]
    with psycopg.connect(login("memstate_app", "a")) as conn:
        for query in (
            "UPDATE memstate.facts SET payload = '{\"text\": \"x\"}' WHERE namespace = 'b'",
            "DELETE FROM memstate.facts WHERE namespace = 'b'",
            "UPDATE memstate.commits SET undone_by = NULL WHERE namespace = 'b'",
            "DELETE FROM memstate.outbox WHERE namespace = 'b'",
        ):
            state = sqlstate_of(conn, query)
            assert state in (None, "42501"), query  # nothing matched, or no privilege
        assert sqlstate_of(conn, "INSERT INTO memstate.commits (namespace) VALUES ('b')") == "42501"
        assert (
            sqlstate_of(
                conn,
                "INSERT INTO memstate.outbox (mirror, fact_id, namespace, seq, version, op) "
                "VALUES ('all', gen_random_uuid(), 'b', 1, 1, 'put')",
            )
            == "42501"
        )
        assert (
            sqlstate_of(
                conn,
                "INSERT INTO memstate.facts (fact_id, namespace, type, payload, content, "
                "embedding, embedding_model, version, commit_seq) VALUES (gen_random_uuid(), "
                "'b', 'note', '{\"text\": \"x\"}', 'x', %s, %s, 1, 1)",
                [VEC, world["model"]],
            )
            == "42501"
        )
        # the SQL functions: not found, or refused by the policies
        calls = {
            "SELECT memstate.commit_fact('b', 'note', '{\"text\": \"x\"}', NULL, %s::vector, %s)": "42501",
            "SELECT memstate.delete_fact(%s)": "MSN01",
            "SELECT memstate.rollback('b')": "MSN01",
            "SELECT memstate.revert(%s)": "MSN01",
            "SELECT memstate.begin_commit('b')": "42501",
        }
        params = {0: [VEC, world["model"]], 1: [b["note"]], 3: [b["seq"]]}
        for i, (query, expected) in enumerate(calls.items()):
            assert sqlstate_of(conn, query, params.get(i)) == expected, query
        assert (
            conn.execute("SELECT count(*) FROM memstate.history(%s)", [b["note"]]).fetchone()[0]
            == 0
        )
        assert conn.execute("SELECT count(*) FROM memstate.as_of('b', 1 << 60)").fetchone()[0] == 0
        assert conn.execute("SELECT memstate.seq_at('b', now())").fetchone()[0] is None
        assert (
            conn.execute(
                "SELECT count(*) FROM memstate.search('b', %s::vector, 10)", [VEC]
            ).fetchone()[0]
            == 0
        )
        assert conn.execute("SELECT memstate.promote_session('b', 's1')").fetchone()[0] is None
        assert conn.execute("SELECT memstate.discard_session('b', 's1')").fetchone()[0] is None
    assert digest(secured, "b") == before


def test_forged_open_commit_cannot_hang_versions_on_a_foreign_commit(world, login, secured):
    """memstate.open_commits is a client-side setting; forging it to point at b's commit
    must not let a's writes join that commit (its rollback would then undo them)."""
    before = digest(secured, "b")
    with psycopg.connect(login("memstate_app", "a")) as conn:
        forged = json.dumps({"a": {"seq": world["b"]["seq"], "keyed": False}})
        with pytest.raises(psycopg.errors.InsufficientPrivilege), conn.transaction():
            conn.execute("SELECT set_config('memstate.open_commits', %s, true)", [forged])
            conn.execute(
                "SELECT memstate.commit_fact('a', 'note', '{\"text\": \"x\"}', NULL, %s::vector, %s)",
                [VEC, world["model"]],
            )
    assert digest(secured, "b") == before


def test_sql_fact_id_of_another_namespace_is_a_conflict(world, login, secured):
    before = digest(secured, "b")
    with psycopg.connect(login("memstate_app", "a")) as conn:
        state = sqlstate_of(
            conn,
            "SELECT memstate.commit_fact('a', 'note', '{\"text\": \"x\"}', NULL, "
            "%s::vector, %s, NULL, %s)",
            [VEC, world["model"], world["b"]["note"]],
        )
    assert state == "MSC01"
    assert digest(secured, "b") == before


def test_row_security_cannot_be_switched_off_by_the_client(world, login):
    with psycopg.connect(login("memstate_app", "a")) as conn:
        conn.execute("SET row_security = off")
        assert sqlstate_of(conn, "SELECT * FROM memstate.facts") == "42501"
        conn.execute("RESET row_security")
        for query in (
            "ALTER TABLE memstate.facts DISABLE ROW LEVEL SECURITY",
            "ALTER TABLE memstate.facts NO FORCE ROW LEVEL SECURITY",
            "DROP POLICY ns_facts ON memstate.facts",
            "CREATE POLICY mine ON memstate.facts USING (true)",
            "INSERT INTO memstate.namespace_grants (role, pattern) VALUES (current_user, '*')",
            "UPDATE memstate.namespace_grants SET pattern = '*'",
            "DELETE FROM memstate.namespace_grants",
            "SET ROLE memstate_sync",
            "CREATE OR REPLACE FUNCTION memstate.namespace_patterns() RETURNS text[] "
            "LANGUAGE sql AS $$ SELECT '{%}'::text[] $$",
        ):
            assert sqlstate_of(conn, query) == "42501", query


def test_search_path_cannot_redefine_the_policy(world, login, pg_admin_dsn, secured):
    """A role with a schema of its own shadows LIKE and '='; the policies are bound at
    creation and the helpers pin search_path, so nothing widens."""
    before = digest(secured, "b")
    dsn = login("memstate_app", "a")
    user = conninfo_to_dict(dsn)["user"]
    with psycopg.connect(secured, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA evil AUTHORIZATION "{user}"')
    try:
        with psycopg.connect(dsn) as conn:
            conn.execute(
                "CREATE FUNCTION evil.yes(text, text) RETURNS boolean LANGUAGE sql AS 'SELECT true'"
            )
            conn.execute(
                "CREATE OPERATOR evil.~~ (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.yes)"
            )
            conn.execute(
                "CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.yes)"
            )
            conn.execute("SET search_path = evil, pg_catalog, public")
            assert conn.execute("SELECT 'a' = 'b'").fetchone()[0] is True  # the shadowing works...
            seen = [r[0] for r in conn.execute("SELECT namespace FROM memstate.facts")]
            assert sorted(set(seen)) == ["a"]  # ...but not on the policies
            assert conn.execute("SELECT memstate.may_access('b')").fetchone()[0] is False
            # the SQL functions run with the caller's search_path (SECURITY INVOKER): the
            # caller breaks only its own calls, and the policies still refuse b
            assert sqlstate_of(
                conn,
                "SELECT memstate.commit_fact('b', 'note', '{\"text\": \"x\"}', NULL, "
                "%s::vector, %s)",
                [VEC, world["model"]],
            ) in ("42501", "MSV01")
    finally:
        with psycopg.connect(secured, autocommit=True) as admin:
            admin.execute("DROP SCHEMA evil CASCADE")
    assert digest(secured, "b") == before


def test_narrowing_setting_from_the_store(world, login, stores, mem):
    """A pool whose connections SET memstate.namespace (what MemoryStore(namespace=...)
    should do) sees only that namespace, even with a wider grant."""
    dsn = login("memstate_app", "*")
    mem.commit(Fact(type="note", payload={"text": "c note"}), namespace="c")
    pool = ConnectionPool(
        dsn,
        min_size=1,
        max_size=2,
        kwargs={"autocommit": True},
        open=True,
        configure=lambda c: c.execute("SET memstate.namespace = 'a'"),
    )
    try:
        narrowed = stores(pool)
        assert {f.namespace for f in narrowed.query(namespace="a")} == {"a"}
        assert narrowed.query(namespace="c") == []
        with pytest.raises(PermissionDenied):
            narrowed.commit(Fact(type="note", payload={"text": "x"}), namespace="c")
        wide = stores(dsn)
        assert [f.payload["text"] for f in wide.query(namespace="c")] == ["c note"]
    finally:
        pool.close()


def test_bound_store_narrows_the_database_side_too(world, login, stores):
    bound = stores(login("memstate_app", "*"), namespace="a")
    with bound.pool.connection() as conn:  # what a bug that bypasses the Python check would see
        seen = {r[0] for r in conn.execute("SELECT DISTINCT namespace FROM memstate.facts")}
    assert seen == {"a"}


# --- grants ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "namespace", "matches"),
    [
        ("a", "a", True),
        ("a", "ab", False),
        ("a_1", "a_1", True),
        ("a_1", "ab1", False),
        ("a%", "a%", True),
        ("a%", "abc", False),
        ("t-*", "t-42", True),
        ("t-*", "t-", True),
        ("t-*", "t", False),
        ("*", "anything at all", True),
        ("*", "", True),
        ("a?", "a?", True),
        ("a?", "ab", False),
        ("a\\*", "a*", True),
        ("a\\*", "ab", False),
        ("a\\\\b", "a\\b", True),
        ("a\\", "a\\", True),
        ("a\\_", "a_", True),
        ("a\\_", "ax", False),
        ("*/x", "tenant/x", True),
        ("*/x", "tenant/y", False),
        ("Ünï*", "Ünïcode", True),
        ("a", "A", False),
        ("x'; --", "x'; --", True),
    ],
)
def test_glob_patterns(dsn, secured, pattern, namespace, matches):
    with psycopg.connect(secured) as conn:
        got = conn.execute(
            "SELECT %s LIKE memstate.glob_to_like(%s)", [namespace, pattern]
        ).fetchone()[0]
    assert got is matches


def test_wildcards_in_namespace_names_are_literal(mem, secured, login, stores):
    for ns in ("a_1", "ab1", "a%2", "abc2"):
        mem.commit(Fact(type="note", payload={"text": ns}), namespace=ns)
    app = stores(login("memstate_app", "a_1", "a%*"))
    seen = {f.namespace for ns in ("a_1", "ab1", "a%2", "abc2") for f in app.query(namespace=ns)}
    assert seen == {"a_1", "a%2"}


def test_grants_follow_membership_and_revocation(mem, secured, login, stores):
    mem.commit(Fact(type="note", payload={"text": "shared"}), namespace="shared")
    reader = stores(login("memstate_reader"))
    app = stores(login("memstate_app"))
    assert reader.query(namespace="shared") == [] and app.query(namespace="shared") == []
    security.grant(secured, "memstate_reader", ["shared"])  # every member of the group
    assert len(reader.query(namespace="shared")) == 1
    assert app.query(namespace="shared") == []
    security.revoke(secured, "memstate_reader", ["shared"])
    assert reader.query(namespace="shared") == []


def test_grants_table_shows_a_role_only_its_own_rows(world, login, secured):
    mine = login("memstate_app", "a", "a/*")
    login("memstate_app", "b")
    with psycopg.connect(mine) as conn:
        rows = conn.execute(
            "SELECT pattern FROM memstate.namespace_grants ORDER BY pattern"
        ).fetchall()
        assert [r[0] for r in rows] == ["a", "a/*"]
        assert conn.execute(
            "SELECT memstate.may_access('a/x'), memstate.may_access('b')"
        ).fetchone() == (True, False)
    assert len(security.list_grants(secured)) >= 3


def test_without_a_grant_a_role_sees_and_writes_nothing(world, login, stores):
    app = stores(login("memstate_app"))
    assert app.query(namespace="a") == [] and app.get(world["a"]["note"]) is None
    with pytest.raises(PermissionDenied):
        app.commit(Fact(type="note", payload={"text": "x"}), namespace="a")


# --- mirrors, outbox, reconciliation -------------------------------------------------------------


def test_mirrors_visible_by_coverage_and_every_covering_mirror_gets_outbox_rows(
    world, login, stores, secured
):
    dsn = login("memstate_app", "a")
    with psycopg.connect(dsn) as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM memstate.mirror_info")}
    assert names == {"all", "ab"}
    fid = stores(dsn).commit(Fact(type="note", payload={"text": "fan out"}), namespace="a")
    with psycopg.connect(secured) as conn:
        got = {
            r[0]
            for r in conn.execute("SELECT mirror FROM memstate.outbox WHERE fact_id = %s", [fid])
        }
    assert got == {"all", "ab"}


def test_outbox_rows_name_facts_of_their_own_namespace(world, login):
    with psycopg.connect(login("memstate_app", "a")) as conn:
        insert = (
            "INSERT INTO memstate.outbox (mirror, fact_id, namespace, seq, version, op) "
            "VALUES ('ab', %s, 'a', 1, 1, 'put')"
        )
        assert sqlstate_of(conn, insert, [world["b"]["note"]]) == "42501"
        # writers queue nothing by hand at all: the outbox trigger runs as the owner
        assert sqlstate_of(conn, insert, [world["a"]["note"]]) == "42501"


def test_reconcile_needs_sight_of_every_covered_namespace(world, login):
    """A mirror point whose fact this role cannot see is not a ghost: the guard the
    reconciler asks before deleting anything (memstate.can_reconcile)."""
    checks = {
        ("a",): {"all": False, "ab": False, "only_b": None},
        ("a", "b"): {"all": False, "ab": True, "only_b": True},
        ("*",): {"all": True, "ab": True, "only_b": True},
    }
    for patterns, expected in checks.items():
        with psycopg.connect(login("memstate_sync", *patterns)) as conn:
            for mirror, ok in expected.items():
                got = conn.execute("SELECT memstate.can_reconcile(%s)", [mirror]).fetchone()[0]
                assert got is ok, (patterns, mirror)


def test_lg_ttl_clocks_follow_their_fact(world, login, secured):
    with psycopg.connect(secured, autocommit=True) as conn:
        if conn.execute("SELECT to_regclass('memstate.lg_ttl')").fetchone()[0] is None:
            pytest.skip("the LangGraph tables are not installed")
        conn.execute(
            "INSERT INTO memstate.lg_ttl (fact_id, ttl_minutes, expires_at) "
            "VALUES (%s, 1, now() + interval '1 minute')",
            [world["b"]["note"]],
        )
    with psycopg.connect(login("memstate_app", "a"), autocommit=True) as conn:
        assert conn.execute("SELECT count(*) FROM memstate.lg_ttl").fetchone()[0] == 0
        conn.execute("SELECT memstate.lg_collect_ttl()")  # must not collect b's clock
    with psycopg.connect(secured) as conn:
        assert conn.execute("SELECT count(*) FROM memstate.lg_ttl").fetchone()[0] == 1


# --- switching it on and off ---------------------------------------------------------------------


def test_owner_sees_everything_and_rls_toggles(world, login, mem, secured):
    assert {f.namespace for ns in ("a", "b") for f in mem.query(namespace=ns)} == {"a", "b"}
    dsn = login("memstate_reader", "a")
    count = "SELECT count(*) FROM memstate.facts WHERE namespace = 'b'"
    security.disable_rls(secured)
    assert set(security.rls_status(secured).values()) == {"off"}
    with psycopg.connect(dsn) as conn:
        assert conn.execute(count).fetchone()[0] == 3
    security.enable_rls(secured)
    security.enable_rls(secured)  # idempotent
    assert set(security.rls_status(secured).values()) == {"on"}
    with psycopg.connect(dsn) as conn:
        assert conn.execute(count).fetchone()[0] == 0
    security.enable_rls(secured, force=True)
    assert set(security.rls_status(secured).values()) == {"forced"}
    security.disable_rls(secured)
    assert set(security.rls_status(secured).values()) == {"off"}
