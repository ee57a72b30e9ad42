"""Alembic environment for memstate-pg, for running our revisions with the alembic CLI:

    alembic -c alembic.ini -x dsn=postgresql://... upgrade head      (or MEMSTATE_DSN=...)

`memstate-pg migrate`, `MemoryStore.migrate()` and `memstate_pg.migrations.upgrade()` do the
same without this file (and without alembic's global context). Our version table lives in
schema `memstate` (memstate.alembic_version), so an application's own alembic history
(public.alembic_version) in the same database is never touched. The transaction, locking and
error handling are memstate_pg.migrations' (see its docstring).
"""

from __future__ import annotations

import os

from alembic import context

from memstate_pg import migrations

config = context.config


def _want_rls() -> bool:
    """`alembic -x rls=true upgrade head`, or config.attributes["rls"] = True."""
    flag = context.get_x_argument(as_dictionary=True).get("rls", "")
    return bool(config.attributes.get("rls")) or flag.lower() in ("1", "true", "yes", "on")


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        migrations.run_alembic_env(connection, context, rls=_want_rls())
        return
    dsn = (
        context.get_x_argument(as_dictionary=True).get("dsn")
        or os.environ.get("MEMSTATE_DSN")
        or config.get_main_option("sqlalchemy.url")
    )
    if not dsn:
        raise SystemExit("memstate-pg migrations need a database: -x dsn=... or MEMSTATE_DSN")
    migrations.run_alembic_env(dsn, context, rls=_want_rls())


if context.is_offline_mode():
    raise SystemExit(
        "offline mode is not supported: apply the files of memstate_pg/sql/migrations with psql"
    )
run_migrations_online()
