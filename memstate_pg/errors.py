"""The MemStateError hierarchy: every refusal a caller can get from memstate-pg."""

from __future__ import annotations

import psycopg


class MemStateError(Exception):
    """Base class of every error memstate-pg raises on purpose."""


class ValidationFailed(MemStateError, ValueError):
    """Bad input: unknown type, invalid payload, bad vector, NUL bytes, oversize, bad filter."""

    def __init__(self, message: str, errors: list | None = None):
        super().__init__(message)
        self.errors = errors or []


class ConflictError(MemStateError):
    """A write lost a race or broke a rule: version mismatch, singleton clash, immutable fact."""


class NotFound(MemStateError, LookupError):
    """An unknown fact id, commit seq or mirror name."""


class HistoryCompacted(NotFound):
    """The state asked for is older than the namespace's compaction horizon: `as_of` a point
    before it, or `rollback`/`revert` of a commit at or before it (SQLSTATE MSH01). The
    message names the horizon; older states are only in a backup (see README, Retention)."""


class MirrorError(MemStateError):
    """A mirror refused or failed a write; the sync worker retries it."""


class Unavailable(MemStateError, ConnectionError):
    """The database could not be reached or dropped the connection (restart, failover,
    pg_terminate_backend). A write in flight may or may not have committed: retry it with
    an idempotency_key to make the retry safe."""


class PermissionDenied(MemStateError, PermissionError):
    """The database role may not touch this namespace or object."""


class MigrationError(MemStateError):
    """A migration could not run: pgvector missing on the server, a database at a revision
    this memstate-pg does not know, a failed statement."""


class NotMigrated(MemStateError):
    """The database has no memstate schema, or an older one than this memstate-pg needs:
    run `memstate-pg migrate` (or MemoryStore.migrate())."""


# --- database errors -> MemStateError ------------------------------------------------

_BY_SQLSTATE: dict[str, type[MemStateError]] = {
    "MSV01": ValidationFailed,
    "MSC01": ConflictError,
    "MSN01": NotFound,
    "MSH01": HistoryCompacted,  # history older than the namespace's compaction horizon
    "23505": ConflictError,  # unique_violation: a singleton key held by another fact
    "23503": ValidationFailed,  # foreign_key_violation: unknown type/model in a raw write
    "23514": ValidationFailed,  # check_violation
    "22P02": ValidationFailed,  # invalid_text_representation (vector / uuid / json text)
    "22023": ValidationFailed,  # invalid_parameter_value
    "22000": ValidationFailed,  # data_exception (pgvector: NaN, inf, dimensions)
    "22003": ValidationFailed,  # numeric_value_out_of_range
    "22021": ValidationFailed,  # character_not_in_repertoire (NUL bytes)
    "22P05": ValidationFailed,  # untranslatable_character (\u0000 in jsonb)
    "54000": ValidationFailed,  # program_limit_exceeded (too large for an index row)
    "40001": ConflictError,  # serialization_failure
    "40P01": ConflictError,  # deadlock_detected
    "42501": PermissionDenied,  # insufficient_privilege, row level security
}


def translate(exc: BaseException) -> BaseException:
    """The MemStateError a database error stands for (or the error itself)."""
    if isinstance(exc, psycopg.DataError | psycopg.ProgrammingError) and not getattr(
        exc, "sqlstate", None
    ):
        # raised by psycopg before sending: NUL in a str parameter and the like
        return ValidationFailed(str(exc))
    if isinstance(
        exc, UnicodeEncodeError
    ):  # a lone surrogate in a parameter: psycopg cannot send it
        return ValidationFailed(
            f"text is not valid Unicode (lone surrogate): {exc.object[exc.start : exc.end]!r}"
        )
    if not isinstance(exc, psycopg.Error):
        return exc
    if isinstance(exc, psycopg.OperationalError) and (
        not exc.sqlstate or exc.sqlstate.startswith(("08", "57P"))
    ):
        return Unavailable(f"database unavailable: {str(exc).strip() or type(exc).__name__}")
    if exc.sqlstate in ("42P01", "3F000", "42883") and "memstate" in str(exc):
        # undefined table / schema / function of ours: the database was never migrated
        missing = NotMigrated(
            f"schema memstate is missing or incomplete ({exc.diag.message_primary or exc}): "
            "run memstate-pg migrate (or MemoryStore.migrate())"
        )
        missing.sqlstate = exc.sqlstate  # type: ignore[attr-defined]
        return missing
    cls = _BY_SQLSTATE.get(exc.sqlstate or "")
    if cls is None:
        return exc
    message = exc.diag.message_primary or str(exc)
    if exc.sqlstate == "23505" and exc.diag.constraint_name == "facts_singleton":
        message = f"singleton key clash: {exc.diag.message_detail or message}"
    elif exc.diag.message_detail:
        message = f"{message} ({exc.diag.message_detail})"
    err = cls(message)
    err.sqlstate = exc.sqlstate  # type: ignore[attr-defined]
    return err
