"""Alembic migrations: own version table in schema memstate, idempotent, and harmless to an
application's own alembic history in the same database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from memstate_pg import Fact, MemoryStore, migrations
from memstate_pg.dsn import sqlalchemy_url
from memstate_pg.sqlfiles import INSTALL_ORDER

ROOT = Path(__file__).resolve().parents[2]


def test_upgrade_into_a_database_with_its_own_alembic_history(empty_dsn: str):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA app")
        conn.execute("CREATE TABLE app.users (id int primary key, name text)")
        conn.execute("INSERT INTO app.users VALUES (1, 'ada')")
        conn.execute("CREATE TABLE public.alembic_version (version_num varchar(32) primary key)")
        conn.execute("INSERT INTO public.alembic_version VALUES ('app_rev_42')")
    # the alembic CLI, as a user would run it, with our alembic.ini
    subprocess.run(
        [
            sys.executable,
            "-m",
            "alembic",
            "-c",
            str(ROOT / "alembic.ini"),
            "-x",
            f"dsn={empty_dsn}",
            "upgrade",
            "head",
        ],
        check=True,
        cwd=ROOT,
        capture_output=True,
    )
    assert migrations.current(empty_dsn) == migrations.head()
    migrations.upgrade(empty_dsn)  # again: a no-op
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT version_num FROM public.alembic_version").fetchall() == [
            ("app_rev_42",)
        ]
        assert conn.execute("SELECT name FROM app.users").fetchall() == [("ada",)]
        assert (
            conn.execute("SELECT version_num FROM memstate.alembic_version").fetchone()[0]
            == migrations.head()
        )
    store = MemoryStore(empty_dsn, max_size=2)
    try:
        store.register_schema("note", None)
        assert store.get(store.commit(Fact(type="note", payload={"text": "works"}))) is not None
    finally:
        store.close()


def test_downgrade_removes_only_ours(empty_dsn: str):
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.keep_me (id int)")
    migrations.upgrade(empty_dsn)
    migrations.downgrade(empty_dsn, "base")
    with psycopg.connect(empty_dsn) as conn:
        left = conn.execute(
            "SELECT count(*) FROM pg_tables WHERE schemaname = 'memstate' "
            "AND tablename <> 'alembic_version'"
        ).fetchone()[0]
        assert left == 0
        assert conn.execute("SELECT to_regclass('public.keep_me')").fetchone()[0] is not None
    migrations.upgrade(empty_dsn)
    assert migrations.current(empty_dsn) == migrations.head()


def test_plain_sql_files_give_the_same_schema(empty_dsn: str, dsn: str):
    """sql/*.sql applied with psql-like execution equals what alembic built (the names;
    test_frozen.py compares the definitions)."""
    with psycopg.connect(empty_dsn, autocommit=True) as conn:
        for name in INSTALL_ORDER:
            conn.execute((ROOT / "memstate_pg" / "sql" / name).read_text())

    def shape(d):
        with psycopg.connect(d) as conn:
            return conn.execute("""
                SELECT 'col', table_name || '.' || column_name || ':' || data_type FROM information_schema.columns
                WHERE table_schema = 'memstate' AND table_name <> 'alembic_version'
                UNION ALL SELECT 'fn', p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')'
                FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'memstate'
                UNION ALL SELECT 'idx', indexname FROM pg_indexes WHERE schemaname = 'memstate'
                  AND indexname NOT LIKE 'alembic%%'
                ORDER BY 1, 2""").fetchall()

    assert shape(empty_dsn) == shape(dsn)


@pytest.mark.parametrize("start", ["empty", "0002_langgraph"])
def test_concurrent_migrators_serialise(empty_dsn: str, start: str):
    """Empty: they race on CREATE SCHEMA (the losers retry behind the version table lock);
    at 0002: they queue on LOCK TABLE memstate.alembic_version."""
    if start != "empty":
        migrations.upgrade(empty_dsn, start)
    code = "import sys; from memstate_pg import migrations; migrations.upgrade(sys.argv[1])"
    procs = [
        subprocess.Popen([sys.executable, "-c", code, empty_dsn], cwd=ROOT, stderr=subprocess.PIPE)
        for _ in range(4)
    ]
    results = [(p.wait(timeout=120), p.stderr.read().decode()[-2000:]) for p in procs]
    assert [rc for rc, _ in results] == [0, 0, 0, 0], results
    assert migrations.current(empty_dsn) == migrations.head()


def test_alembic_cli_takes_a_sqlalchemy_url_and_stops_at_a_revision(empty_dsn: str):
    url = sqlalchemy_url(empty_dsn)
    base = [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "-x", f"dsn={url}"]
    run = subprocess.run([*base, "current"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    with psycopg.connect(empty_dsn) as conn:  # `alembic current` created nothing
        assert conn.execute("SELECT to_regnamespace('memstate')").fetchone()[0] is None
    run = subprocess.run([*base, "upgrade", "0001_core"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert migrations.current(empty_dsn) == "0001_core"
    run = subprocess.run([*base, "upgrade", "head"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert migrations.current(empty_dsn) == migrations.head()


def test_upgrade_on_a_connection_in_a_transaction_keeps_the_callers_settings(empty_dsn: str):
    """Inside the caller's transaction: a savepoint, the caller's lock_timeout restored,
    nothing committed until the caller commits."""
    from sqlalchemy import create_engine, text

    engine = create_engine(sqlalchemy_url(empty_dsn))
    try:
        with engine.connect() as conn:
            conn.execute(text("SET LOCAL lock_timeout = '7s'"))
            migrations.upgrade(conn)
            assert conn.in_transaction()
            assert conn.execute(text("SHOW lock_timeout")).scalar() == "7s"
            assert migrations.current(empty_dsn) is None  # not committed yet
            conn.commit()
        assert migrations.current(empty_dsn) == migrations.head()
        with engine.connect() as conn:  # not in a transaction: we commit, and leave none open
            migrations.downgrade(conn, "0002_langgraph")
            assert not conn.in_transaction()
            migrations.upgrade(conn)
            assert not conn.in_transaction()
        assert migrations.current(empty_dsn) == migrations.head()
    finally:
        engine.dispose()


def test_a_migrator_behind_a_concurrent_create_schema_retries(empty_dsn: str):
    """Two first migrations: the one that waited on the other's CREATE SCHEMA gets a
    unique violation on the catalog when it commits, and must start again, not fail."""
    import threading
    import time

    first = psycopg.connect(empty_dsn)
    first.execute("CREATE SCHEMA memstate")
    failures: list[BaseException] = []

    def second() -> None:
        try:
            migrations.upgrade(empty_dsn)
        except BaseException as exc:
            failures.append(exc)

    thread = threading.Thread(target=second)
    thread.start()
    with psycopg.connect(empty_dsn, autocommit=True) as watcher:
        for _ in range(600):  # until the second migrator waits for our transaction
            waiting = watcher.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                "AND datname = current_database()"
            ).fetchone()[0]
            if waiting:
                break
            time.sleep(0.1)
    first.commit()
    first.close()
    thread.join(120)
    assert not thread.is_alive() and failures == []
    assert migrations.current(empty_dsn) == migrations.head()
