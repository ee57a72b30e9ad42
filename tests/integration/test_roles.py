"""Least-privilege roles (sql/roles.sql): each role can do its job and nothing more.

memstate_reader reads and searches; memstate_app writes facts through the SQL functions;
memstate_sync feeds mirrors. Every allowance and every refusal is proven by logging in as a
fresh login role IN the group role (RLS on, granted the namespaces the test uses).
"""

from __future__ import annotations

import json

import psycopg
import pytest

from memstate_pg import (
    Fact,
    MemoryStore,
    PermissionDenied,
    migrations,
    security,
)
from memstate_pg.cli import main as cli_main
from memstate_pg.vectors import vector_text
from tests.integration.test_rls import login, secured, sqlstate_of, stores  # noqa: F401 - shared fixtures

VEC = vector_text([0.1] * 384)


@pytest.fixture
def seeded(mem: MemoryStore, secured: str) -> dict:  # noqa: F811
    """Facts in namespace a (one in a session) and a mirror covering everything."""
    with psycopg.connect(secured, autocommit=True) as conn:
        conn.execute("INSERT INTO memstate.mirrors (name, kind) VALUES ('mem', 'memory')")
    note = mem.commit(Fact(type="note", payload={"text": "hello from a"}), namespace="a")
    mem.commit(Fact(type="note", payload={"text": "working"}), namespace="a", session_id="s")
    return {"note": note, "model": mem.embedder.model, "dsn": secured}


# --- the group roles ---------------------------------------------------------------------------


def test_group_roles_are_nologin_and_creation_is_idempotent(secured):  # noqa: F811
    assert security.create_roles(secured) == []  # already there: nothing new, grants refreshed
    with psycopg.connect(secured) as conn:
        rows = conn.execute(
            "SELECT rolname, rolcanlogin, rolsuper, rolcreaterole, rolcreatedb, rolbypassrls "
            "FROM pg_roles WHERE rolname LIKE 'memstate\\_%' ORDER BY 1"
        ).fetchall()
    assert [r[0] for r in rows] == ["memstate_app", "memstate_reader", "memstate_sync"]
    assert all(not any(r[1:]) for r in rows)
    assert {r.role: r.exists for r in security.list_roles(secured)} == dict.fromkeys(
        security.GROUP_ROLES, True
    )


def test_no_role_needs_a_sequence_privilege(seeded, login, stores):  # noqa: F811
    """Identity columns draw their values without a privilege check: writers hold none."""
    dsn = login("memstate_app", "a")
    with psycopg.connect(dsn) as conn:
        assert (
            conn.execute(
                "SELECT bool_or(has_sequence_privilege(c.oid, 'USAGE')) FROM pg_class c "
                "JOIN pg_namespace n ON n.oid = c.relnamespace "
                "WHERE n.nspname = 'memstate' AND c.relkind = 'S'"
            ).fetchone()[0]
            is False
        )
    assert stores(dsn).commit(Fact(type="note", payload={"text": "x"}), namespace="a")


# --- memstate_reader -----------------------------------------------------------------------------


def test_reader_reads_and_searches(seeded, login, stores):  # noqa: F811
    reader = stores(login("memstate_reader", "a"))
    assert reader.get(seeded["note"]).payload == {"text": "hello from a", "tags": []}
    assert reader.search("hello", namespace="a", k=1)[0].fact.id == seeded["note"]
    assert len(reader.query(namespace="a")) == 2
    assert [v.op for v in reader.history(seeded["note"])] == ["put"]
    assert len(reader.as_of(10**9, namespace="a")) == 2
    assert reader.commits(namespace="a")
    assert "mem" in reader.status()


def test_reader_cannot_write(seeded, login, stores, mem):  # noqa: F811
    dsn = login("memstate_reader", "a")
    reader = stores(dsn)
    for attempt in (
        lambda: reader.commit(Fact(type="note", payload={"text": "x"}), namespace="a"),
        lambda: reader.update(seeded["note"], {"payload": {"text": "x"}}),
        lambda: reader.delete(seeded["note"]),
        lambda: reader.rollback(namespace="a"),
        lambda: reader.promote_session("s", namespace="a"),
        lambda: reader.register_schema("mine", None),
    ):
        with pytest.raises(PermissionDenied):
            attempt()
    with psycopg.connect(dsn) as conn:
        for query in (
            "DELETE FROM memstate.outbox",
            "UPDATE memstate.mirrors SET enabled = false",
            "INSERT INTO memstate.commits (namespace) VALUES ('a')",
            "SELECT memstate.register_model('other', 3)",
        ):
            assert sqlstate_of(conn, query) == "42501", query
    assert mem.get(seeded["note"]).version == 1


# --- memstate_app --------------------------------------------------------------------------------


def test_app_runs_the_whole_write_path(seeded, login, stores):  # noqa: F811
    app = stores(login("memstate_app", "a"))
    fid = app.commit(Fact(type="note", payload={"text": "x"}), namespace="a", idempotency_key="k1")
    assert (
        app.commit(Fact(type="note", payload={"text": "x"}), namespace="a", idempotency_key="k1")
        == fid
    )
    assert app.update(fid, {"payload": {"text": "y"}}, expected_version=1) == 2
    ids = app.commit_many(
        [Fact(type="note", payload={"text": str(i)}) for i in range(3)], namespace="a"
    )
    with app.transaction(namespace="a", reason="batch") as tx:
        tx.update(ids[0], {"payload": {"text": "changed"}})
        tx.delete(ids[1])
    seq = app.rollback(namespace="a")
    assert app.get(ids[1]) is not None
    app.revert(seq)
    assert app.get(ids[1]) is None
    app.delete(fid)
    assert app.discard_session("s", namespace="a") is not None
    assert app.promote_session("nothing", namespace="a") is None
    assert app.search("changed", namespace="a", k=1)[0].fact.id == ids[0]


def test_app_cannot_do_admin_work_or_rewrite_history(seeded, login, stores):  # noqa: F811
    dsn = login("memstate_app", "a")
    app = stores(dsn)
    with pytest.raises(PermissionDenied):  # types are global: one tenant must not change them
        app.register_schema("note", None)
    with psycopg.connect(dsn) as conn:
        for query in (
            "SELECT memstate.register_type('mine')",
            "SELECT memstate.register_model('other-model', 3)",  # builds an index: owner only
            "CREATE TABLE memstate.mine (x int)",
            "CREATE INDEX ON memstate.facts (content)",
            "ALTER TABLE memstate.facts ADD COLUMN x int",
            "UPDATE memstate.fact_versions SET payload = '{}'",
            "DELETE FROM memstate.fact_versions",
            "TRUNCATE memstate.fact_versions",
            "DELETE FROM memstate.commits",
            "UPDATE memstate.commits SET reason = 'forged'",
            "UPDATE memstate.commits SET namespace = 'b'",
            "DELETE FROM memstate.outbox",  # acknowledging is the worker's
            "UPDATE memstate.outbox SET attempts = 0",
            "UPDATE memstate.mirrors SET enabled = false",
            "INSERT INTO memstate.mirrors (name, kind) VALUES ('x', 'memory')",
            "UPDATE memstate.types SET immutable = false",
            "UPDATE memstate.config SET value = '1'",
            "INSERT INTO memstate.namespace_grants (role, pattern) VALUES (current_user, '*')",
        ):
            assert sqlstate_of(conn, query) == "42501", query
        # the undo bookkeeping columns are the only ones it may update
        assert (
            sqlstate_of(conn, "UPDATE memstate.commits SET result = result WHERE namespace = 'a'")
            is None
        )


# --- memstate_sync -------------------------------------------------------------------------------


def test_sync_role_feeds_a_mirror_and_reconciles(seeded, login, mem):  # noqa: F811
    try:
        from memstate_pg.mirrors.memory import InMemoryMirror
        from memstate_pg.sync import SyncWorker, reconcile
    except ImportError as exc:  # pragma: no cover - the sync package lands separately
        pytest.skip(f"memstate_pg.sync is not importable yet: {exc}")
    mem.commit(Fact(type="note", payload={"text": "in b"}), namespace="b")
    dsn = login("memstate_sync", "a")  # its mirror covers everything, but it may see only a
    mirror = InMemoryMirror()
    with (
        MemoryStore(dsn, max_size=2) as store,
        SyncWorker(store, mirrors={"mem": mirror}) as worker,
    ):
        assert worker.drain(timeout=10) is True  # b's rows are not its own: they wait
        assert held(mirror) == {str(f.id) for f in mem.query(namespace="a")}
        with psycopg.connect(seeded["dsn"]) as conn:
            left = conn.execute(
                "SELECT array_agg(DISTINCT namespace) FROM memstate.outbox"
            ).fetchone()[0]
        assert left == ["b"]
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT memstate.can_reconcile('mem')").fetchone()[0] is False
    security.grant(seeded["dsn"], conninfo_user(dsn), ["*"])
    with (
        MemoryStore(dsn, max_size=2) as store,
        SyncWorker(store, mirrors={"mem": mirror}) as worker,
    ):
        assert worker.drain(timeout=10) is True
        assert mirror.count() == 3
        mirror.reset()
        report = reconcile(lambda: _autocommit(dsn), "mem", mirror)
        assert (report.missing, report.repaired) == (3, 3)
        assert mirror.count() == 3


def test_reconcile_never_deletes_what_the_role_cannot_see(seeded, login, mem):  # noqa: F811
    from memstate_pg.mirrors.memory import InMemoryMirror
    from memstate_pg.sync import SyncWorker, reconcile

    mem.commit(Fact(type="note", payload={"text": "in b"}), namespace="b")
    mirror = InMemoryMirror()
    with SyncWorker(mem, mirrors={"mem": mirror}) as worker:  # the admin fills the shared mirror
        assert worker.drain(timeout=10) is True
    everything = held(mirror)
    assert len(everything) == 3
    narrowed = login("memstate_sync", "a")
    try:
        reconcile(lambda: _autocommit(narrowed), "mem", mirror)
    except PermissionDenied:
        pass  # refusing is fine; deleting b's points as "ghosts" is not
    assert held(mirror) == everything


def test_sync_role_cannot_write_memory(seeded, login):  # noqa: F811
    with psycopg.connect(login("memstate_sync", "*")) as conn:
        for query, params in (
            ("UPDATE memstate.facts SET payload = '{}'", None),
            ("DELETE FROM memstate.facts", None),
            ("INSERT INTO memstate.commits (namespace) VALUES ('a')", None),
            ("SELECT count(*) FROM memstate.fact_versions", None),
            ("SELECT count(*) FROM memstate.commits", None),
            (
                "SELECT memstate.commit_fact('a', 'note', '{\"text\": \"x\"}', NULL, %s::vector, %s)",
                [VEC, seeded["model"]],
            ),
            ("SELECT memstate.delete_fact(%s)", [seeded["note"]]),
            ("SELECT memstate.rollback('a')", None),
            (
                "INSERT INTO memstate.outbox (mirror, fact_id, namespace, seq, version, op) "
                "SELECT 'mem', fact_id, namespace, commit_seq, version, 'put' FROM memstate.facts",
                None,
            ),
            ("UPDATE memstate.mirrors SET namespaces = '{a}'", None),
            ("UPDATE memstate.mirrors SET options = '{}'", None),
            ("DELETE FROM memstate.mirrors", None),
        ):
            assert sqlstate_of(conn, query, params) == "42501", query
        # what it may do: claim, back off, acknowledge, report
        for query in (
            "SELECT id FROM memstate.outbox FOR UPDATE SKIP LOCKED",
            "UPDATE memstate.outbox SET attempts = attempts + 1, last_error = 'x'",
            "UPDATE memstate.mirrors SET last_synced_at = now(), last_reconciled_at = now()",
            "DELETE FROM memstate.outbox WHERE false",
        ):
            assert sqlstate_of(conn, query) is None, query


# --- the CLI -------------------------------------------------------------------------------------


def _cli(*argv: str) -> int:
    return cli_main(list(argv))


def test_security_cli(dsn, capsys):
    assert _cli("roles", "--dsn", dsn) == 0
    assert _cli("rls", "on", "--dsn", dsn) == 0
    assert "facts on" in capsys.readouterr().out
    assert _cli("grant", "memstate_reader", "tenant-*", "x_y", "--dsn", dsn) == 0
    assert _cli("grant", "memstate_reader", "x_y", "--dsn", dsn) == 0
    capsys.readouterr()
    assert _cli("grants", "memstate_reader", "--json", "--dsn", dsn) == 0
    assert [g["pattern"] for g in json.loads(capsys.readouterr().out)] == ["tenant-*", "x_y"]
    assert _cli("revoke", "memstate_reader", "x_y", "--dsn", dsn) == 0
    assert _cli("revoke", "memstate_reader", "--dsn", dsn) == 2  # neither patterns nor --all
    assert _cli("revoke", "memstate_reader", "--all", "--dsn", dsn) == 0
    assert security.list_grants(dsn) == []
    capsys.readouterr()
    assert _cli("roles", "--list", "--json", "--dsn", dsn) == 0
    assert {r["role"] for r in json.loads(capsys.readouterr().out)} == set(security.GROUP_ROLES)
    assert _cli("rls", "off", "--json", "--dsn", dsn) == 0
    assert set(json.loads(capsys.readouterr().out).values()) == {"off"}
    assert _cli("grant", "no_such_role_here", "x", "--dsn", dsn) == 2


def test_cli_commands_run_under_the_roles(seeded, login, capsys):  # noqa: F811
    """`memstate-pg history` as an app role, `status` as the sync role: the CLI must not try
    to migrate (CREATE) with roles that may not."""
    dsn = login("memstate_app", "a")
    migrations.upgrade(dsn)  # at head already: a no-op a least-privilege role may call
    assert cli_main(["history", "--dsn", dsn, "-n", "a"]) == 0
    assert "history of namespace a" in capsys.readouterr().out
    assert cli_main(["status", "--dsn", login("memstate_sync", "*")]) == 0


def test_grant_validation(secured):  # noqa: F811
    from memstate_pg import NotFound, ValidationFailed

    with pytest.raises(NotFound):
        security.grant(secured, "no_such_role_here", ["a"])
    for bad in ("", "x" * 201, "a\x00b", "\ud800"):
        with pytest.raises(ValidationFailed):
            security.grant(secured, "memstate_app", [bad])
    with pytest.raises(ValidationFailed):
        security.grant(secured, "memstate_app", [])
    with pytest.raises(ValidationFailed):
        security.create_login(secured, "x", "postgres")
    with pytest.raises(ValidationFailed):
        security.drop_login(secured, "memstate_app")


def test_grants_need_rls_installed(dsn):
    from memstate_pg import NotFound

    with pytest.raises(NotFound):
        security.grant(dsn, "memstate_app", ["a"])


# --- helpers -------------------------------------------------------------------------------------


def held(mirror) -> set[str]:
    return {fid for page in mirror.scan() for fid, _ in page}


def conninfo_user(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    return conninfo_to_dict(dsn)["user"]


def _autocommit(dsn: str):
    return psycopg.connect(dsn, autocommit=True)
