"""Core schema: commits, version log, current facts with pgvector, types, mirrors, outbox.

Revision ID: 0001_core
Revises:
Create Date: 2026-11-21

Applies the frozen sql/migrations/0001_core.sql (schema.sql + functions.sql as released).
"""

from __future__ import annotations

from typing import Any

from memstate_pg.migrations import revision_bind
from memstate_pg.sqlfiles import execute_migration_file, execute_script

revision = "0001_core"
down_revision = None
branch_labels = None
depends_on = None


def upgrade(bind: Any = None) -> None:
    execute_migration_file(revision_bind(bind), "0001_core.sql")


def downgrade(bind: Any = None) -> None:
    """Drop every view, table and function in schema memstate except our version table (the
    pgvector extension stays: other schemas may use it). Whatever later revisions added is in
    schema memstate too, so this stays right without a frozen list."""
    execute_script(
        revision_bind(bind),
        """
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT c.oid::regclass AS name, c.relkind FROM pg_catalog.pg_class c
             WHERE c.relnamespace = 'memstate'::regnamespace AND c.relkind IN ('v', 'm')
    LOOP
        EXECUTE format(CASE r.relkind WHEN 'v' THEN 'DROP VIEW IF EXISTS %s CASCADE'
                       ELSE 'DROP MATERIALIZED VIEW IF EXISTS %s CASCADE' END, r.name);
    END LOOP;
    FOR r IN SELECT c.oid::regclass AS name FROM pg_catalog.pg_class c
             WHERE c.relnamespace = 'memstate'::regnamespace AND c.relkind IN ('r', 'p')
               AND c.relname <> 'alembic_version' AND NOT c.relispartition
    LOOP
        EXECUTE format('DROP TABLE IF EXISTS %s CASCADE', r.name);
    END LOOP;
    FOR r IN SELECT p.oid::regprocedure AS name FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = 'memstate'::regnamespace
    LOOP
        EXECUTE format('DROP ROUTINE IF EXISTS %s CASCADE', r.name);
    END LOOP;
END $$""",
    )
