"""LangGraph integration: checkpointer tables and the store's read functions.

Revision ID: 0002_langgraph
Revises: 0001_core
Create Date: 2026-11-21

Built from sql/langgraph.sql (one source of SQL): memstate.lg_checkpoints, lg_blobs,
lg_writes (MemStateCheckpointer), memstate.lg_ttl and the lg_* functions (MemStateStore,
whose items are ordinary memstate facts and need no table of their own).
"""

from alembic import op

from memstate_pg.sqlfiles import execute_sql_file

revision = "0002_langgraph"
down_revision = "0001_core"
branch_labels = None
depends_on = None

_FUNCTIONS = (
    "lg_collect_blobs(text[])",
    "lg_delete_thread(text)",
    "lg_copy_thread(text, text)",
    "lg_delete_for_runs(text[])",
    "lg_prune(text[], text)",
    "lg_get(text, text, text[], text[], boolean)",
    "lg_search(text, text, text, jsonb, jsonb, int, int, vector, text, boolean, boolean)",
    "lg_list_namespaces(text, text, jsonb, jsonb, int, int, int, boolean)",
    "lg_expired(text, text, int)",
    "lg_collect_ttl()",
)


def upgrade() -> None:
    execute_sql_file(op.get_bind(), "langgraph.sql")


def downgrade() -> None:
    bind = op.get_bind()
    for signature in _FUNCTIONS:
        bind.exec_driver_sql(f"DROP FUNCTION IF EXISTS memstate.{signature}")
    bind.exec_driver_sql(
        "DROP TABLE IF EXISTS memstate.lg_writes, memstate.lg_blobs, memstate.lg_checkpoints, memstate.lg_ttl"
    )
