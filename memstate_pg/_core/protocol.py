"""The request vocabulary of memstate-pg's sans-IO core: one protocol for the whole package.

Every operation (``ops.py``, the mirror registry, the LangGraph store) is a generator that
*describes* its I/O instead of doing it. It yields a request and receives its result:

- ``Embed(texts)`` -> ``list[list[float]]`` (the store's embedder, or the request's own);
- ``Begin()`` -> ``None``: the statements that follow share one transaction (a savepoint
  inside a caller's transaction); it lasts until the operation ends;
- ``Exec(query, params, fetch)`` -> one row (dict or None), all rows, or None;
- ``ExecMany(query, params)`` -> the first row of each parameter set (pipelined);
- ``Attempt(op)`` -> ``Outcome``: run a sub-operation in a savepoint; a MemStateError it
  raises rolls the savepoint back and is handed back instead of propagating;
- ``Call(fn, args)`` -> ``fn(*args)``: blocking I/O outside the database (a mirror's query);
  the async runner runs it in a thread. It needs no connection, like ``Embed``.

The runners in ``runner.py`` perform them with psycopg's sync and async APIs; the tests in
tests/unit drive operations with scripted results, no database at all.
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, Literal, TypeVar, Union

if TYPE_CHECKING:
    from ..embedders import Embedder
    from ..errors import MemStateError

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Embed:
    """Vectors for `texts`, from `embedder` (default: the store's)."""

    texts: list[str]
    embedder: Embedder | None = None


@dataclass(frozen=True, slots=True)
class Begin:
    """The statements that follow run in one transaction (a savepoint inside the caller's)."""


@dataclass(frozen=True, slots=True)
class Exec:
    query: str
    params: dict[str, Any] | None = None
    fetch: Literal["one", "all", "none"] = "one"
    autonomous: bool = False  # run on its own pooled connection, outside any open transaction


@dataclass(frozen=True, slots=True)
class ExecMany:
    """One statement for many parameter sets (pipelined); returns the first row of each."""

    query: str
    params: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Outcome(Generic[T]):
    """What an `Attempt` gives back: the value, or the MemStateError the sub-operation raised."""

    value: T | None = None
    error: MemStateError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True, slots=True)
class Attempt(Generic[T]):
    """Run `op` in a savepoint of the current connection; its MemStateError is returned in
    the Outcome (the savepoint rolled back) instead of ending the whole operation."""

    op: Op[T]


@dataclass(frozen=True, slots=True)
class Call:
    """`fn(*args)`: a blocking call outside the database (e.g. a mirror's query). The sync
    runner calls it; the async runner runs it in a worker thread. Its exceptions propagate:
    an operation that wants to survive one wraps `fn` to return an Outcome instead."""

    fn: Callable[..., Any]
    args: tuple[Any, ...] = ()


Request = Union[Embed, Begin, Exec, ExecMany, Attempt[Any], Call]  # noqa: UP007 (runtime alias)

#: An operation returning T: yields requests, receives their results.
Op = Generator[Request, Any, T]
