"""Core schema: commits, version log, current facts with pgvector, types, mirrors, outbox.

Revision ID: 0001_core
Revises:
Create Date: 2026-11-21

Built from the plain SQL files (sql/schema.sql, sql/functions.sql): one source of SQL.
"""

from alembic import op

from memstate_pg.sqlfiles import execute_sql_file

revision = "0001_core"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    execute_sql_file(op.get_bind(), "schema.sql")
    execute_sql_file(op.get_bind(), "functions.sql")


def downgrade() -> None:
    execute_sql_file(op.get_bind(), "drop.sql")
