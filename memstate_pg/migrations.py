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

    return create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(dsn), poolclass=pool.NullPool)


def upgrade(dsn: str, revision: str = "head") -> None:
    """Bring the memstate schema to `revision` (idempotent; safe from many processes at once)."""
    from alembic import command

    cfg = alembic_config()
    with _engine(dsn).connect() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)


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
