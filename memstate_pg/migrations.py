"""Runs the alembic migrations in alembic/ against a DSN (what `memstate-pg migrate` and
`MemoryStore.migrate()` call). The version table is memstate.alembic_version."""

from __future__ import annotations

from pathlib import Path

ALEMBIC_DIR = Path(__file__).resolve().parent / "alembic"


def alembic_config():
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(ALEMBIC_DIR))
    cfg.set_main_option("path_separator", "os")
    return cfg


def _engine(dsn: str):
    import psycopg
    from sqlalchemy import create_engine, pool

    return create_engine(
        "postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), poolclass=pool.NullPool
    )


def upgrade(dsn: str, revision: str = "head", *, rls: bool = False) -> None:
    """Bring the memstate schema to `revision` (idempotent; safe from many processes at once).
    With `rls`, also (re)apply sql/rls.sql in the same transaction (see SECURITY.md).

    A schema already at head is left alone without taking alembic's lock or creating
    anything, so least-privilege roles (which may not CREATE) can call this too."""
    from alembic import command

    if revision == "head" and not rls and _at_head(dsn):
        return
    cfg = alembic_config()
    cfg.attributes["rls"] = rls
    with _engine(dsn).connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


def _at_head(dsn: str) -> bool:
    import psycopg

    try:
        return current(dsn) == head()
    except psycopg.Error:  # no right to read the version table: let alembic decide
        return False


def downgrade(dsn: str, revision: str = "base") -> None:
    from alembic import command

    cfg = alembic_config()
    with _engine(dsn).connect() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, revision)


def current(dsn: str) -> str | None:
    """The revision the database is at, or None before the first migration."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        exists = conn.execute("SELECT to_regclass('memstate.alembic_version')").fetchone()
        if not exists or exists[0] is None:
            return None
        row = conn.execute("SELECT version_num FROM memstate.alembic_version").fetchone()
        return row[0] if row else None


def head() -> str:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config()).get_current_head()
