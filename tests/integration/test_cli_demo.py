"""`memstate-pg demo` never touches a user's data (issue 10, item 2): it runs in a database
of its own, refuses one it did not create unless --reset, and skips the mirror part with
one line when the mirror extras are missing."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from memstate_pg import Fact, MemoryStore
from memstate_pg.demos import MARK
from tests.integration.test_cli import ROOT, assert_fails, cli


@pytest.fixture
def demo_db(pg_admin_dsn: str) -> Iterator[str]:
    """A database name for the demo of this test; dropped afterwards."""
    name = f"memstate_demo_{uuid.uuid4().hex[:8]}"
    yield name
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _snapshot(dsn: str) -> tuple:
    with psycopg.connect(dsn) as conn:
        return (
            conn.execute("SELECT count(*), max(seq) FROM memstate.commits").fetchone(),
            conn.execute("SELECT count(*) FROM memstate.fact_versions").fetchone(),
            conn.execute("SELECT count(*) FROM memstate.facts").fetchone(),
        )


def _comment(admin: str, name: str) -> str | None:
    with psycopg.connect(admin) as conn:
        row = conn.execute(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
            (name,),
        ).fetchone()
    return None if row is None else row[0]


def test_demo_dsn_leaves_the_users_memory_untouched(mem: MemoryStore, dsn: str, demo_db: str):
    """Before: `demo --dsn` ran DROP SCHEMA memstate CASCADE in the DSN's database."""
    fid = mem.commit(Fact(type="note", payload={"text": "production memory"}), namespace="prod")
    mem.update(fid, {"payload": {"text": "still production"}})
    before = _snapshot(dsn)
    out = cli("demo", "--dsn", dsn, "--no-mirrors", "--database", demo_db)
    assert out.returncode == 0, out.stderr
    assert "rollback(1)" in out.stdout and "as_of" in out.stdout
    assert "Traceback" not in out.stderr
    assert _snapshot(dsn) == before
    assert mem.get(fid).payload["text"] == "still production"
    assert _comment(dsn, demo_db) == MARK  # its own database, marked as the demo's
    demo_dsn = make_conninfo(dsn, dbname=demo_db)
    with psycopg.connect(demo_dsn) as conn:
        assert conn.execute(
            "SELECT count(*) FROM memstate.facts WHERE namespace = 'user-42'"
        ).fetchone()[0]
    again = cli("demo", "--no-mirrors", "--database", demo_db, env={"MEMSTATE_DSN": dsn})
    assert again.returncode == 0, again.stderr  # its own database: recreated without asking
    assert _snapshot(dsn) == before


def test_demo_refuses_a_database_it_did_not_create(pg_admin_dsn: str, demo_db: str):
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(demo_db)))
    theirs = make_conninfo(pg_admin_dsn, dbname=demo_db)
    with psycopg.connect(theirs, autocommit=True) as conn:
        conn.execute("CREATE TABLE precious (x int)")
        conn.execute("INSERT INTO precious VALUES (1)")
    out = cli("demo", "--dsn", pg_admin_dsn, "--no-mirrors", "--database", demo_db)
    assert_fails(out, 2, "was not created by memstate-pg demo", "--reset")
    with psycopg.connect(theirs) as conn:
        assert conn.execute("SELECT x FROM precious").fetchone() == (1,)
    out = cli("demo", "--dsn", pg_admin_dsn, "--no-mirrors", "--database", demo_db, "--reset")
    assert out.returncode == 0, out.stderr
    with psycopg.connect(theirs) as conn:
        assert conn.execute("SELECT to_regclass('public.precious')").fetchone() == (None,)


def test_demo_refuses_when_it_may_not_create_its_database(dsn: str, demo_db: str):
    role = f"nodb_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        out = cli("demo", "--dsn", make_conninfo(dsn, user=role), "--database", demo_db)
        assert_fails(out, 4, "may not create databases", "CREATEDB")
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


def test_demo_without_the_chroma_extra_skips_the_mirror_part(
    dsn: str, demo_db: str, tmp_path: Path
):
    """Before: ModuleNotFoundError halfway through the demo."""
    (tmp_path / "sitecustomize.py").write_text("import sys\nsys.modules['chromadb'] = None\n")
    out = cli(
        "demo",
        "--dsn",
        dsn,
        "--database",
        demo_db,
        env={"PYTHONPATH": f"{tmp_path}:{ROOT}"},
    )
    assert out.returncode == 0, out.stderr
    assert "Traceback" not in out.stderr
    skipped = [line for line in out.stdout.splitlines() if "mirror part skipped" in line]
    assert len(skipped) == 1
    assert 'pip install "memstate-pg[chroma]"' in skipped[0]
    assert "as_of" in out.stdout  # the story ran in full
