"""Alembic migrations: own version table in schema memstate, idempotent, and harmless to an
application's own alembic history in the same database."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg

from memstate_pg import Fact, MemoryStore, migrations
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
    """sql/*.sql applied with psql-like execution equals what alembic built."""
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


def test_concurrent_migrators_serialise(empty_dsn: str):
    code = "import sys; from memstate_pg import migrations; migrations.upgrade(sys.argv[1])"
    procs = [subprocess.Popen([sys.executable, "-c", code, empty_dsn], cwd=ROOT) for _ in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    assert migrations.current(empty_dsn) == migrations.head()
