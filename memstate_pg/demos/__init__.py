"""The demo of `memstate-pg demo`, and the drift experiment it shares with the benchmarks.

* story.py — an agent's memory told in tables (runs with the base install);
* mirrors.py — Chroma and Qdrant fed from the outbox under injected faults (needs the
  chroma and qdrant extras; skipped with one line saying what to install otherwise);
* consistency.py — naive dual write vs the outbox, compared by id and version
  (benchmarks/consistency.py runs it at full size).

The demo runs only in a database of its own (`prepare_database`): created for it and
marked so, on the embedded server or on the server of --dsn, never in the DSN's database.
"""

from __future__ import annotations

import importlib
from typing import Any

DEMO_DATABASE = "memstate_demo"
MARK = "memstate-pg demo database: created by `memstate-pg demo`, dropped and recreated each run"
MIRROR_EXTRAS = (("chromadb", "chroma"), ("qdrant_client", "qdrant"))


def missing_mirror_extras() -> list[tuple[str, str]]:
    """(module, extra) of the vector store clients the mirror part needs and cannot import."""
    missing = []
    for module, extra in MIRROR_EXTRAS:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append((module, extra))
    return missing


def run(mem: Any, console: Any = None, *, mirrors: bool = True) -> None:
    """Tell the story on `mem` (a migrated MemoryStore of the demo's own database), then the
    mirror part unless `mirrors` is false or its extras are missing."""
    from rich.console import Console

    from .story import story

    if console is None:
        console = Console()
        console.width = max(console.width, 120)  # the drift table has ten columns
    console.rule("[bold]memstate-pg demo: facts and embeddings in one Postgres transaction")
    story(mem, console)
    if mirrors:
        missing = missing_mirror_extras()
        if missing:
            modules = " and ".join(m for m, _ in missing)
            extras = ",".join(e for _, e in missing)
            console.print(
                f"mirror part skipped: {modules} not installed "
                f'(pip install "memstate-pg[{extras}]")',
                markup=False,
                highlight=False,
            )
        else:
            from .mirrors import mirror_story

            mirror_story(mem, console)
    console.rule("[bold]done")


def prepare_database(server_dsn: str, name: str = DEMO_DATABASE, *, reset: bool = False) -> str:
    """Create the demo's own database `name` on the server of `server_dsn` (with pgvector)
    and return its DSN. A database of that name the demo created before (it carries the
    demo's mark) is dropped and recreated; any other is refused unless `reset`.

    Raises DemoRefused (with a remedy) when it may not go ahead."""
    import psycopg
    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(server_dsn)
    admin = server_dsn
    if params.get("dbname") == name:  # never drop the database we are connected to
        admin = make_conninfo(server_dsn, dbname="postgres")
    ident = sql.Identifier(name)
    with psycopg.connect(admin, autocommit=True) as conn:
        row = conn.execute(
            "SELECT pg_catalog.shobj_description(oid, 'pg_database') FROM pg_catalog.pg_database "
            "WHERE datname = %s",
            (name,),
        ).fetchone()
        if row is not None:
            if row[0] != MARK and not reset:
                raise DemoRefused(
                    f'database "{name}" exists and was not created by memstate-pg demo; '
                    "the demo resets its database, so it left this one untouched",
                    f"pass --reset to let the demo drop and recreate {name}, or --database "
                    "OTHER_NAME",
                )
            conn.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(ident))
        try:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(ident))
        except psycopg.errors.InsufficientPrivilege:
            raise DemoRefused(
                "this role may not create databases, and the demo runs only in a database of "
                "its own (it never writes into the DSN's database)",
                "use a role with CREATEDB (ALTER ROLE ... CREATEDB), or run `memstate-pg demo` "
                "without --dsn to use the embedded server",
                permission=True,
            ) from None
        conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(ident, sql.Literal(MARK)))
    dsn = make_conninfo(server_dsn, dbname=name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    return dsn


class DemoRefused(Exception):
    """The demo will not touch a database it did not create (see prepare_database)."""

    def __init__(self, cause: str, remedy: str, *, permission: bool = False) -> None:
        super().__init__(cause)
        self.cause, self.remedy, self.permission = cause, remedy, permission
