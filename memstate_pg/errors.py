"""The MemStateError hierarchy: every refusal a caller can get from memstate-pg."""

from __future__ import annotations


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


class MirrorError(MemStateError):
    """A mirror refused or failed a write; the sync worker retries it."""


class Unavailable(MemStateError, ConnectionError):
    """The database could not be reached or dropped the connection (restart, failover,
    pg_terminate_backend). A write in flight may or may not have committed: retry it with
    an idempotency_key to make the retry safe."""


class PermissionDenied(MemStateError, PermissionError):
    """The database role may not touch this namespace or object."""
