"""Fixtures of the migration tier: more empty databases per test, and LOGIN roles."""

from __future__ import annotations

import os
import secrets
import uuid
from collections.abc import Callable, Iterator

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from tests.support.database import with_database


def with_login(dsn: str, user: str, password: str) -> str:
    params = conninfo_to_dict(dsn)
    params.update(user=user, password=password)
    return make_conninfo(**params)


@pytest.fixture
def _roles(pg_admin_dsn: str) -> Iterator[list[str]]:
    """Roles made by login_role, dropped after every database of the test (new_database
    depends on this fixture, so its teardown runs first)."""
    made: list[str] = []
    yield made
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        for name in made:
            conn.execute(
                sql.SQL(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = {}"
                ).format(sql.Literal(name))
            )
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.fixture
def new_database(pg_admin_dsn: str, _roles: list[str]) -> Iterator[Callable[..., str]]:
    """new_database(owner=None) -> DSN (admin role) of a new empty database, dropped after."""
    made: list[str] = []

    def make(owner: str | None = None) -> str:
        name = f"memstate_m{os.getpid()}_{uuid.uuid4().hex[:10]}"
        query = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
        if owner:
            query = sql.SQL("{} OWNER {}").format(query, sql.Identifier(owner))
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(query)
        made.append(name)
        return with_database(pg_admin_dsn, name)

    yield make
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        for name in made:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )


@pytest.fixture
def login_role(pg_admin_dsn: str, _roles: list[str]) -> Callable[..., tuple[str, str]]:
    """login_role(*options) -> (name, password) of a new LOGIN NOSUPERUSER role, dropped
    after the test's databases (which it may own or hold objects in)."""

    def make(*options: str) -> tuple[str, str]:
        name = f"ms_mig_{uuid.uuid4().hex[:10]}"
        password = secrets.token_hex(12)
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER PASSWORD {} " + " ".join(options)).format(
                    sql.Identifier(name), sql.Literal(password)
                )
            )
        _roles.append(name)
        return name, password

    return make
