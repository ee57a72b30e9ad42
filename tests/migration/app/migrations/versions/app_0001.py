"""The application's first table.

Revision ID: app_0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "app_0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "app_items",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.Text),
    )


def downgrade() -> None:
    op.drop_table("app_items")
