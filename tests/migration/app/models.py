"""The application's models (APP_EXTRA_COLUMN=1 adds a column, for autogenerate)."""

import os

from sqlalchemy import Column, Integer, MetaData, Table, Text

metadata = MetaData()
items = Table(
    "app_items",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("name", Text),
    *([Column("note", Text)] if os.environ.get("APP_EXTRA_COLUMN") == "1" else []),
)
