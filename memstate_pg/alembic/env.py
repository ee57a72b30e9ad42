"""Alembic environment for memstate-pg.

Our version table lives in schema `memstate` (memstate.alembic_version), so these
migrations run into a database that already has an application's own alembic history
(public.alembic_version) without touching it. Run them with `memstate-pg migrate`,
`MemoryStore.migrate()`, or alembic itself:

    alembic -c alembic.ini -x dsn=postgresql://... upgrade head

A session advisory lock serialises concurrent migrators (several workers starting at once).
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import create_engine, pool, text

config = context.config
LOCK_KEY = 0x6D656D7374617465  # "memstate"


def _engine_from_dsn(dsn: str):
    import psycopg

    return create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), poolclass=pool.NullPool
    )


def _run(connection) -> None:
    connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": LOCK_KEY})
    try:
        connection.execute(text("CREATE SCHEMA IF NOT EXISTS memstate"))
        connection.commit()
        context.configure(
            connection=connection,
            target_metadata=None,
            version_table="alembic_version",
            version_table_schema="memstate",
            transactional_ddl=True,
        )
        with context.begin_transaction():
            context.run_migrations()
            if _want_rls():
                from memstate_pg.sqlfiles import execute_sql_file

                execute_sql_file(connection, "rls.sql")
        connection.commit()
    finally:
        connection.rollback()  # a failed migration left the transaction aborted: unlock needs a fresh one
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": LOCK_KEY})
        connection.commit()


def _want_rls() -> bool:
    """`alembic -x rls=true upgrade head`, or migrations.upgrade(dsn, rls=True)."""
    flag = context.get_x_argument(as_dictionary=True).get("rls", "")
    return bool(config.attributes.get("rls")) or flag.lower() in ("1", "true", "yes", "on")


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    dsn = (
        context.get_x_argument(as_dictionary=True).get("dsn")
        or os.environ.get("MEMSTATE_DSN")
        or config.get_main_option("sqlalchemy.url")
    )
    if not dsn:
        raise SystemExit("memstate-pg migrations need a database: -x dsn=... or MEMSTATE_DSN")
    with _engine_from_dsn(dsn).connect() as conn:
        _run(conn)


if context.is_offline_mode():
    raise SystemExit(
        "offline mode is not supported: apply sql/schema.sql and sql/functions.sql with psql"
    )
run_migrations_online()
