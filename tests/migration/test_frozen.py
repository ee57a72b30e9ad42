"""Frozen migrations against the current SQL files (as procrastinate checks its own):

- a database built by the migrations equals one built from the current files;
- a database left by an earlier memstate-pg (the 058a291 release, and the pre-release code
  of 7cb38ef that ran the then-current files under the same revision ids) equals a fresh one
  after `upgrade()`.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import psycopg
import pytest

from memstate_pg import migrations
from memstate_pg.sqlfiles import INSTALL_ORDER, MIGRATIONS_DIR, SQL_DIR
from tests.migration.shape import differences, shape

FIXTURES = Path(__file__).resolve().parent / "fixtures"

# Released frozen migrations never change: a fix goes into a new migration.
RELEASED = {
    "0001_core.sql": "9257b1ccf49a",
    "0002_langgraph.sql": "0f320e840b26",
    "0003_one_house.sql": "2a6c70b812bb",
    "0004_reembed.sql": "fc36a4fecf81",
    "0005_scale.sql": "bdd64cc9c237",
}


def build_current(dsn: str, *, rls: bool = False) -> None:
    """What a fresh install from the current files gives (psql -1 -f ...)."""
    with psycopg.connect(dsn) as conn:
        for name in INSTALL_ORDER + (("rls.sql",) if rls else ()):
            conn.execute((SQL_DIR / name).read_text(encoding="utf-8"))


def build_from_files(dsn: str, *files: Path, stamp: str) -> None:
    """A database as earlier code left it: its SQL files, and its alembic version row."""
    with psycopg.connect(dsn) as conn:
        for path in files:
            conn.execute(path.read_text(encoding="utf-8"))
        conn.execute(
            "CREATE TABLE memstate.alembic_version (version_num varchar(32) NOT NULL, "
            "CONSTRAINT alembic_version_pkc PRIMARY KEY (version_num))"
        )
        conn.execute("INSERT INTO memstate.alembic_version VALUES (%s)", (stamp,))


def assert_same(migrated: str, fresh: str) -> None:
    diffs = differences(shape(migrated), shape(fresh))
    assert diffs == [], "\n".join(diffs)


def test_migrations_build_the_current_schema(new_database):
    migrated, fresh = new_database(), new_database()
    migrations.upgrade(migrated)
    build_current(fresh)
    assert_same(migrated, fresh)


def test_migrations_build_the_current_schema_with_rls(new_database):
    migrated, fresh = new_database(), new_database()
    migrations.upgrade(migrated, rls=True)
    build_current(fresh, rls=True)
    assert_same(migrated, fresh)


def test_upgrade_from_the_058a291_release(new_database):
    """The release's migrations are the frozen 0001 + 0002: build with them, upgrade."""
    old, fresh = new_database(), new_database()
    migrations.upgrade(old, "0002_langgraph")
    assert migrations.current(old) == "0002_langgraph"
    migrations.upgrade(old)
    assert migrations.current(old) == migrations.head()
    build_current(fresh)
    assert_same(old, fresh)


def test_upgrade_from_the_prerelease_7cb38ef(new_database):
    """Code of 7cb38ef migrated with the then-current files: without 0003 such a database
    keeps 7 old functions (no _distance_sql, no zero-vector check in search)."""
    old, fresh = new_database(), new_database()
    build_from_files(
        old,
        FIXTURES / "schema_7cb38ef.sql",
        FIXTURES / "functions_7cb38ef.sql",
        FIXTURES / "langgraph_7cb38ef.sql",
        stamp="0002_langgraph",
    )
    build_current(fresh)
    assert differences(shape(old), shape(fresh)), "the fixture should differ before upgrading"
    migrations.upgrade(old)
    assert migrations.current(old) == migrations.head()
    assert_same(old, fresh)


@pytest.mark.parametrize("name", sorted(RELEASED))
def test_released_migrations_are_frozen(name: str):
    digest = hashlib.sha256((MIGRATIONS_DIR / name).read_bytes()).hexdigest()[:12]
    assert digest == RELEASED[name], f"{name} was edited: put the change into a new migration"


def test_every_revision_has_its_frozen_file():
    """Revision 000N_x applies sql/migrations/000N_x.sql and nothing else."""
    script = migrations.script_directory()
    revisions = sorted(s.revision for s in script.walk_revisions())
    assert sorted(p.stem for p in MIGRATIONS_DIR.glob("*.sql")) == revisions
    for rev in revisions:
        source = Path(script.get_revision(rev).path).read_text(encoding="utf-8")
        assert f'execute_migration_file(revision_bind(bind), "{rev}.sql")' in source


def test_upgrade_keeps_row_level_security(new_database):
    """A database with RLS on (migrate --rls at the release) upgraded without --rls equals a
    fresh one with RLS: re-running the functions and the view in 0003 keeps the policies,
    the view's security_invoker and its grants."""
    old, fresh = new_database(), new_database()
    migrations.upgrade(old, "0002_langgraph", rls=True)
    migrations.upgrade(old)
    build_current(fresh, rls=True)
    assert_same(old, fresh)


def test_upgrade_refreshes_row_level_security_where_it_is_on(new_database):
    """The policies of an RLS database come from the release that switched RLS on; an
    upgrade to head re-applies the current rls.sql (here: a policy an older rls.sql did not
    have), while a database whose RLS was switched off stays off."""
    on, off, fresh = new_database(), new_database(), new_database()
    for dsn in (on, off):
        migrations.upgrade(dsn, "0002_langgraph", rls=True)
    with psycopg.connect(on) as conn:
        conn.execute("DROP POLICY ns_outbox_update ON memstate.outbox")  # "an older rls.sql"
    with psycopg.connect(off) as conn:
        conn.execute((SQL_DIR / "unrls.sql").read_text(encoding="utf-8"))
    migrations.upgrade(on)
    migrations.upgrade(off)
    build_current(fresh, rls=True)
    assert_same(on, fresh)
    with psycopg.connect(off) as conn:
        assert (
            conn.execute("SELECT count(*) FROM pg_policies WHERE policyname LIKE 'ns%'").fetchone()[
                0
            ]
            == 0
        )
        assert not conn.execute(
            "SELECT relrowsecurity FROM pg_class WHERE oid = 'memstate.facts'::regclass"
        ).fetchone()[0]
