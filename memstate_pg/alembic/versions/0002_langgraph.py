"""LangGraph integration: checkpointer tables and the store's read functions.

Revision ID: 0002_langgraph
Revises: 0001_core
Create Date: 2026-11-21

Applies the frozen sql/migrations/0002_langgraph.sql (langgraph.sql as released):
memstate.lg_checkpoints, lg_blobs, lg_writes (MemStateCheckpointer), memstate.lg_ttl and the
lg_* functions (MemStateStore, whose items are ordinary memstate facts).
"""

from __future__ import annotations

from typing import Any

from memstate_pg.migrations import revision_bind
from memstate_pg.sqlfiles import execute_migration_file, execute_script

revision = "0002_langgraph"
down_revision = "0001_core"
branch_labels = None
depends_on = None


def upgrade(bind: Any = None) -> None:
    execute_migration_file(revision_bind(bind), "0002_langgraph.sql")


def downgrade(bind: Any = None) -> None:
    """Drop the lg_* functions (whatever their signature by now) and the lg_* tables."""
    execute_script(
        revision_bind(bind),
        """
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT p.oid::regprocedure AS name FROM pg_catalog.pg_proc p
             WHERE p.pronamespace = 'memstate'::regnamespace AND p.proname LIKE 'lg\\_%'
    LOOP
        EXECUTE format('DROP ROUTINE IF EXISTS %s CASCADE', r.name);
    END LOOP;
END $$;
DROP TABLE IF EXISTS memstate.lg_writes, memstate.lg_blobs, memstate.lg_checkpoints,
    memstate.lg_ttl""",
    )
