"""Bring every database migrated by earlier memstate-pg to the SQL files of this release.

Revision ID: 0003_one_house
Revises: 0002_langgraph
Create Date: 2026-11-28

Applies the frozen sql/migrations/0003_one_house.sql: the DDL deltas of this release, then
every function, trigger and view of functions.sql and langgraph.sql again (databases
migrated before the migrations were frozen kept the functions of the code that first
migrated them).
"""

from __future__ import annotations

from typing import Any

from memstate_pg.migrations import revision_bind
from memstate_pg.sqlfiles import execute_migration_file

revision = "0003_one_house"
down_revision = "0002_langgraph"
branch_labels = None
depends_on = None


def upgrade(bind: Any = None) -> None:
    execute_migration_file(revision_bind(bind), "0003_one_house.sql")


def downgrade(bind: Any = None) -> None:
    """Only the recorded revision goes back: the functions of 0003 stay (0002's are not
    kept anywhere to restore, and 0003 re-applies idempotently on the next upgrade)."""
    revision_bind(bind)
