"""The SQL files under sql/ (shipped inside the package as memstate_pg/sql)."""

from __future__ import annotations

from functools import cache
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parent / "sql"

# What the alembic revisions apply, in order: for installing without alembic,
#   psql "$DSN" -v ON_ERROR_STOP=1 -f sql/schema.sql -f sql/functions.sql -f …
# (tests/test_migrations.py checks that this list builds the same schema as alembic).
INSTALL_ORDER = ("schema.sql", "functions.sql", "langgraph.sql")


@cache
def read_sql(name: str) -> str:
    return (SQL_DIR / name).read_text(encoding="utf-8")


def execute_sql_file(bind, name: str) -> None:
    """Run a whole SQL file through the raw driver (no bind-parameter parsing), in the
    caller's transaction. `bind` is a SQLAlchemy Connection or a psycopg Connection."""
    sql = read_sql(name)
    if hasattr(bind, "exec_driver_sql"):  # SQLAlchemy: go below it to psycopg, where a
        bind = bind.connection.driver_connection  # query without parameters is sent as is
    bind.execute(sql)
