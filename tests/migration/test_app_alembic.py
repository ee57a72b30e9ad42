"""memstate-pg inside an application that has its own alembic (issue 10 item 5), proved
with the tiny app in tests/migration/app: its own env.py, its own version table
(public.alembic_version) and its own table, run with the alembic CLI as its team would.

(a) `memstate-pg migrate` next to the app's `alembic upgrade head`;
(b) memstate_pg.migrations.upgrade(connection | engine | URL) from the app's env.py;
(c) the app's `alembic revision --autogenerate` with include_schemas=True, with our hooks.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest

from memstate_pg import migrations
from memstate_pg.dsn import sqlalchemy_url

ROOT = Path(__file__).resolve().parents[2]
APP = Path(__file__).resolve().parent / "app"


@pytest.fixture
def app(tmp_path: Path) -> Path:
    """A copy of the app (autogenerate writes revision files into it)."""
    target = tmp_path / "app"
    shutil.copytree(APP, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def alembic(app: Path, dsn: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "APP_DATABASE_URL": sqlalchemy_url(dsn),
        **env,
    }
    return subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(app / "alembic.ini"), *args],
        cwd=app,
        env=environ,
        capture_output=True,
        text=True,
        timeout=300,
    )


def app_state(dsn: str) -> tuple[list[str], bool]:
    with psycopg.connect(dsn) as conn:
        versions = [r[0] for r in conn.execute("SELECT version_num FROM public.alembic_version")]
        has_items = conn.execute("SELECT to_regclass('public.app_items')").fetchone()[0]
    return versions, has_items is not None


def test_a_memstate_migrate_next_to_the_apps_alembic(empty_dsn: str, app: Path):
    cli = [sys.executable, "-m", "memstate_pg.cli", "migrate", "--dsn", empty_dsn]
    done = subprocess.run(
        cli, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-3000:]
    run = alembic(app, empty_dsn, "upgrade", "head", APP_MEMSTATE="none")
    assert run.returncode == 0, run.stderr[-3000:]
    assert migrations.current(empty_dsn) == migrations.head()
    assert app_state(empty_dsn) == (["app_0001"], True)
    # and in the other order: the app first, then memstate, each with its own version table
    assert alembic(app, empty_dsn, "downgrade", "base", APP_MEMSTATE="none").returncode == 0
    migrations.upgrade(sqlalchemy_url(empty_dsn))  # a postgresql+psycopg:// URL
    assert migrations.current(empty_dsn) == migrations.head()


@pytest.mark.parametrize("how", ["connection", "inside", "engine", "url"])
def test_b_upgrade_from_the_apps_env(empty_dsn: str, app: Path, how: str):
    """Before the fix: the outer `alembic upgrade head` exited 1 with KeyError: 'config'."""
    run = alembic(app, empty_dsn, "upgrade", "head", APP_MEMSTATE=how)
    assert run.returncode == 0, run.stderr[-3000:]
    assert migrations.current(empty_dsn) == migrations.head()
    assert app_state(empty_dsn) == (["app_0001"], True)
    again = alembic(app, empty_dsn, "upgrade", "head", APP_MEMSTATE=how)  # both at head
    assert again.returncode == 0, again.stderr[-3000:]
    assert app_state(empty_dsn) == (["app_0001"], True)


def test_b_inside_the_apps_transaction_fails_together(empty_dsn: str, app: Path):
    """upgrade(connection) inside the app's transaction commits with it: when the app's
    migration fails, neither schema is half-built."""
    broken = app / "migrations" / "versions" / "app_0002.py"
    broken.write_text(
        '"""Revision ID: app_0002"""\n'
        "from alembic import op\n"
        'revision = "app_0002"\ndown_revision = "app_0001"\n'
        "branch_labels = depends_on = None\n\n"
        "def upgrade():\n    op.execute('SELECT 1/0')\n\n"
        "def downgrade():\n    pass\n"
    )
    run = alembic(app, empty_dsn, "upgrade", "head", APP_MEMSTATE="inside")
    assert run.returncode != 0 and "division by zero" in run.stderr
    assert migrations.current(empty_dsn) is None
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT to_regnamespace('memstate')").fetchone()[0] is None


def _autogenerate(app: Path, dsn: str, **env: str) -> str:
    run = alembic(app, dsn, "revision", "--autogenerate", "-m", "auto", **env)
    assert run.returncode == 0, run.stderr[-3000:]
    (generated,) = [p for p in (app / "migrations" / "versions").glob("*auto.py")]
    text = generated.read_text()
    generated.unlink()
    return text


def test_c_autogenerate_leaves_memstate_alone(empty_dsn: str, app: Path):
    assert alembic(app, empty_dsn, "upgrade", "head", APP_MEMSTATE="connection").returncode == 0

    without_hooks = _autogenerate(app, empty_dsn, APP_MEMSTATE="none", APP_HOOKS="0")
    assert "schema='memstate'" in without_hooks  # what the hooks are for: drop_table(...)

    with_hooks = _autogenerate(app, empty_dsn, APP_MEMSTATE="none")
    assert "memstate" not in with_hooks
    assert "op.drop_" not in with_hooks and "op.add_column" not in with_hooks

    changed = _autogenerate(app, empty_dsn, APP_MEMSTATE="none", APP_EXTRA_COLUMN="1")
    assert "op.add_column('app_items'" in changed  # the app's own changes still show
    assert "memstate" not in changed
    assert app_state(empty_dsn) == (["app_0001"], True)


def test_our_versions_in_the_apps_version_locations_are_refused(empty_dsn: str, app: Path):
    """Before: our revisions ran under the app's env and were recorded in the app's version
    table (a false "at head" later). Now they refuse, saying what to do instead."""
    ini = app / "alembic.ini"
    ours = ROOT / "memstate_pg" / "alembic" / "versions"
    locations = os.pathsep.join(["%(here)s/migrations/versions", str(ours)])
    ini.write_text(ini.read_text() + f"version_locations = {locations}\n")
    run = alembic(app, empty_dsn, "upgrade", "heads", APP_MEMSTATE="none")
    assert run.returncode != 0
    assert "migrations.upgrade(connection) from your env.py" in run.stderr
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT to_regclass('public.alembic_version')").fetchone()[0] is None
