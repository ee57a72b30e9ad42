"""The embedding-model lifecycle: re-embed a namespace and switch its model atomically.

Revision ID: 0004_reembed
Revises: 0003_one_house
Create Date: 2026-11-28

Applies the frozen sql/migrations/0004_reembed.sql: tables memstate.namespace_models (a
namespace's active model) and memstate.reembed_vectors (a re-embed's staging), column
memstate.mirrors.model (a mirror bound to one model), then the functions added or changed
for them (memstate.reembed_apply, memstate._active_model, memstate._facts_rules,
memstate._enqueue_versions, memstate.search).
"""

from __future__ import annotations

from typing import Any

from memstate_pg.migrations import revision_bind
from memstate_pg.sqlfiles import execute_migration_file

revision = "0004_reembed"
down_revision = "0003_one_house"
branch_labels = None
depends_on = None


def upgrade(bind: Any = None) -> None:
    execute_migration_file(revision_bind(bind), "0004_reembed.sql")


def downgrade(bind: Any = None) -> None:
    """Only the recorded revision goes back: the tables of 0004 keep which model each
    switched namespace uses (nothing a user wrote is dropped), and 0004 re-applies
    idempotently on the next upgrade."""
    revision_bind(bind)
