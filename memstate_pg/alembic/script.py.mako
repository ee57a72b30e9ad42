"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
Create Date: ${create_date}

Applies the frozen sql/migrations/${up_revision}.sql (CONTRIBUTING.md, "How to change SQL").
"""

from __future__ import annotations

from typing import Any

from memstate_pg.migrations import revision_bind
from memstate_pg.sqlfiles import execute_migration_file

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = ${repr(branch_labels)}
depends_on = ${repr(depends_on)}


def upgrade(bind: Any = None) -> None:
    execute_migration_file(revision_bind(bind), ${repr(up_revision + ".sql")})


def downgrade(bind: Any = None) -> None:
    revision_bind(bind)
