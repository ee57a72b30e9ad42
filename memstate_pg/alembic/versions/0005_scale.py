"""Beyond one server and performance round 2 (issues 14 and 15).

Revision ID: 0005_scale
Revises: 0004_reembed
Create Date: 2026-11-28

Applies the frozen sql/migrations/0005_scale.sql: table memstate.compactions (each
namespace's compaction horizon), index memstate.commits_undone_by, the version log that
stores a vector only when it changed, then every function, trigger and view of
sql/functions.sql and sql/langgraph.sql of this release.
"""

from __future__ import annotations

from typing import Any

from memstate_pg.migrations import revision_bind
from memstate_pg.sqlfiles import execute_migration_file

revision = "0005_scale"
down_revision = "0004_reembed"
branch_labels = None
depends_on = None


def upgrade(bind: Any = None) -> None:
    execute_migration_file(revision_bind(bind), "0005_scale.sql")


def downgrade(bind: Any = None) -> None:
    """Only the recorded revision goes back: memstate.compactions keeps the horizons (what
    compaction already removed cannot come back), and 0005 re-applies idempotently."""
    revision_bind(bind)
