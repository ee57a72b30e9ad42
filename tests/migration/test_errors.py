"""What a failed migration leaves and says (issue 10 items 3/4), and who can block one
(issue 11 item 11). Roles are real LOGIN roles."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from memstate_pg import MemStateError, PermissionDenied, Unavailable, migrations
from memstate_pg.dsn import sqlalchemy_url
from memstate_pg.migrations import MigrationError, NotMigrated
from tests.migration.conftest import with_login

ROOT = Path(__file__).resolve().parents[2]
OLD_LOCK_KEY = 0x6D656D7374617465  # the advisory key memstate-pg <= 0.1 published


def schema_exists(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT to_regnamespace('memstate') IS NOT NULL").fetchone()[0]


def dbname(dsn: str) -> str:
    return conninfo_to_dict(dsn)["dbname"]


def test_failed_first_migrate_leaves_no_schema_and_says_what_to_do(new_database, login_role):
    """Database owner without superuser, pgvector not installed: PermissionDenied naming
    the remedy, and no empty schema memstate left behind. After an admin's CREATE EXTENSION
    the same owner migrates."""
    owner, password = login_role()
    admin = new_database(owner=owner)
    as_owner = with_login(admin, owner, password)
    with pytest.raises(PermissionDenied) as caught:
        migrations.upgrade(as_owner)
    message = str(caught.value)
    assert "CREATE EXTENSION vector" in message and f'"{dbname(admin)}"' in message
    assert not schema_exists(admin)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
    migrations.upgrade(as_owner)
    assert migrations.current(as_owner) == migrations.head()


def test_role_without_create_right_gets_the_grant_to_ask_for(new_database, login_role):
    role, password = login_role()
    admin = new_database()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION vector")
    with pytest.raises(PermissionDenied) as caught:
        migrations.upgrade(with_login(admin, role, password))
    assert f'GRANT CREATE ON DATABASE "{dbname(admin)}" TO "{role}"' in str(caught.value)
    assert not schema_exists(admin)


@pytest.mark.parametrize(
    "target",
    [
        "postgresql://nobody@127.0.0.1:1/nothing",
        "postgresql+psycopg://nobody@127.0.0.1:1/nothing",
        "host=127.0.0.1 port=1 dbname=nothing user=nobody",
    ],
)
def test_unreachable_server_is_unavailable_with_its_cause(target: str):
    for call in (migrations.upgrade, migrations.check_current, migrations.current):
        with pytest.raises(Unavailable) as caught:
            call(target)
        assert "refused" in str(caught.value).lower()


def test_check_current_is_read_only(new_database, login_role):
    admin = new_database()
    with pytest.raises(NotMigrated, match="run memstate-pg migrate"):
        migrations.check_current(admin)
    assert not schema_exists(admin)  # no DDL ran

    migrations.upgrade(admin, "0002_langgraph")
    with pytest.raises(NotMigrated, match=r"0002_langgraph.*run memstate-pg migrate"):
        migrations.check_current(admin)

    migrations.upgrade(admin)
    migrations.check_current(admin)
    migrations.check_current(sqlalchemy_url(admin))
    role, password = login_role()  # a role that may not CREATE anything may check
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'GRANT USAGE ON SCHEMA memstate TO "{role}"')
        conn.execute(f'GRANT SELECT ON memstate.alembic_version TO "{role}"')
    migrations.check_current(with_login(admin, role, password))
    migrations.upgrade(with_login(admin, role, password))  # at head: no DDL, no lock

    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("UPDATE memstate.alembic_version SET version_num = '0099_from_the_future'")
    with pytest.raises(MigrationError, match="upgrade the memstate-pg package"):
        migrations.check_current(admin)
    with pytest.raises(MigrationError, match="upgrade the memstate-pg package"):
        migrations.upgrade(admin)


def test_bad_target_is_a_validation_error():
    with pytest.raises(MemStateError):
        migrations.upgrade(42)  # type: ignore[arg-type]
    with pytest.raises(MemStateError):
        migrations.upgrade("this is not = a dsn")


def _tenant(admin: str, login_role) -> str:
    """A LOGIN role that may read the version table and current_facts (as tenants can)."""
    role, password = login_role()
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'GRANT USAGE ON SCHEMA memstate TO "{role}"')
        conn.execute(
            f'GRANT SELECT ON memstate.alembic_version, memstate.current_facts, memstate.facts TO "{role}"'
        )
    return with_login(admin, role, password)


def test_a_login_role_cannot_block_migrate(new_database, login_role):
    """Issue 11 item 11: a tenant held the published advisory key and migrate waited
    forever. Now it also reads the version table in an open transaction: no effect."""
    admin = new_database()
    migrations.upgrade(admin, "0002_langgraph")
    tenant = _tenant(admin, login_role)
    with psycopg.connect(tenant) as squatter:
        squatter.execute("SELECT pg_advisory_lock(%s)", (OLD_LOCK_KEY,))
        squatter.execute("SELECT pg_advisory_xact_lock(%s)", (OLD_LOCK_KEY,))
        squatter.execute("SELECT version_num FROM memstate.alembic_version").fetchall()
        # the lock migrate takes is one this role may not take
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            squatter.execute("LOCK TABLE memstate.alembic_version IN EXCLUSIVE MODE")
        squatter.rollback()
        squatter.execute("SELECT pg_advisory_lock(%s)", (OLD_LOCK_KEY,))
        squatter.execute("SELECT version_num FROM memstate.alembic_version").fetchall()
        code = "import sys; from memstate_pg import migrations; migrations.upgrade(sys.argv[1])"
        done = subprocess.run(
            [sys.executable, "-c", code, admin], cwd=ROOT, capture_output=True, timeout=180
        )
        assert done.returncode == 0, done.stderr.decode()[-2000:]
    assert migrations.current(admin) == migrations.head()


def test_lock_wait_is_bounded_and_names_the_holder(new_database, login_role):
    """A session that read current_facts in an open transaction holds a lock the upgrade
    needs: migrate gives up after lock_timeout, names the session, changes nothing."""
    admin = new_database()
    migrations.upgrade(admin, "0002_langgraph")
    tenant = _tenant(admin, login_role)
    role = conninfo_to_dict(tenant)["user"]
    with psycopg.connect(tenant) as reader:
        reader.execute("SELECT count(*) FROM memstate.current_facts").fetchone()
        pid = reader.info.backend_pid
        with pytest.raises(Unavailable) as caught:
            migrations.upgrade(admin, lock_timeout=0.5)
        message = str(caught.value)
        assert f"pid {pid} (role {role}, idle in transaction)" in message
        assert "AccessShareLock on memstate.current_facts" in message
        assert migrations.current(admin) == "0002_langgraph"
    migrations.upgrade(admin, lock_timeout=0.5)
    assert migrations.current(admin) == migrations.head()
