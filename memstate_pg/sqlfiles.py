"""The SQL files shipped inside the package.

- ``memstate_pg/sql/*.sql``: the CURRENT definitions (what a fresh install gets; edit these).
- ``memstate_pg/sql/migrations/000N_*.sql``: the FROZEN migrations, one per alembic revision,
  never edited after a release (see CONTRIBUTING.md, "How to change SQL").
"""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from typing import LiteralString  # Python 3.11+; only for type checkers

SQL_DIR = Path(__file__).resolve().parent / "sql"
MIGRATIONS_DIR = SQL_DIR / "migrations"

# The current files in the order that builds a fresh schema, for installing without alembic:
#   psql "$DSN" -v ON_ERROR_STOP=1 -1 -f sql/schema.sql -f sql/functions.sql -f sql/langgraph.sql
# (tests/migration checks that the frozen migrations build the same schema as this list).
INSTALL_ORDER = ("schema.sql", "functions.sql", "langgraph.sql")


@cache
def read_sql(name: str) -> LiteralString:
    """A current SQL file (sql/<name>): package text, never user input."""
    text = (SQL_DIR / name).read_text(encoding="utf-8")
    return cast("LiteralString", text)  # type: ignore[redundant-cast]  # mypy: LiteralString is str


@cache
def read_migration(name: str) -> LiteralString:
    """A frozen migration file (sql/migrations/<name>)."""
    text = (MIGRATIONS_DIR / name).read_text(encoding="utf-8")
    return cast("LiteralString", text)  # type: ignore[redundant-cast]  # mypy: LiteralString is str


def execute_sql_file(bind: Any, name: str) -> None:
    """Run a current SQL file in the caller's transaction (see `execute_script`)."""
    execute_script(bind, read_sql(name))


def execute_migration_file(bind: Any, name: str) -> None:
    """Run a frozen migration file (e.g. "0003_one_house.sql") in the caller's transaction."""
    execute_script(bind, read_migration(name))


def execute_script(bind: Any, sql: str) -> None:
    """Run a whole SQL script through the raw driver (no bind-parameter parsing, several
    statements at once), in the caller's transaction. `bind` is a SQLAlchemy Connection, a
    psycopg Connection, or another DB-API connection (psycopg2)."""
    if hasattr(bind, "exec_driver_sql"):  # SQLAlchemy: go below it to the driver, where a
        bind = bind.connection.driver_connection  # query without parameters is sent as is
    if hasattr(bind, "execute"):  # psycopg 3
        bind.execute(sql)
        return
    cur = bind.cursor()  # DB-API (psycopg2): no parameters, so no %-interpolation
    try:
        cur.execute(sql)
    finally:
        cur.close()
