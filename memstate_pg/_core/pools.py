"""The stores' connection pools: psycopg_pool settings shared by MemoryStore and
AsyncMemoryStore (the I/O side of the core, beside the runners)."""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any, TypeVar

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from ..dsn import libpq_dsn

C = TypeVar("C", bound=psycopg.Connection[Any])
AC = TypeVar("AC", bound=psycopg.AsyncConnection[Any])
P = TypeVar("P", ConnectionPool[Any], AsyncConnectionPool[Any])

# A pooled connection that sat idle may have died with the server (restart, failover):
# check it before handing it out. One that was in use a moment ago is alive, and checking
# every checkout would cost a round trip per commit (~10% of single-commit throughput).
IDLE_CHECK_AFTER = 1.0  # seconds


def _mark_returned(conn: psycopg.Connection) -> None:
    conn._memstate_returned = time.monotonic()  # type: ignore[attr-defined]


# The time a connection came back is marked in putconn, in the caller's thread (task), not
# with psycopg_pool's `reset=`: a pool with a reset function hands every returned
# connection to its worker thread, and the next call's checkout waits for that thread
# (about 75 us a call on a loaded 2-core machine, measured with a search: 0.525 vs 0.451 ms).
class _MarkingPool(ConnectionPool[Any]):
    def putconn(self, conn: Any) -> None:
        _mark_returned(conn)
        super().putconn(conn)


class _AsyncMarkingPool(AsyncConnectionPool[Any]):
    async def putconn(self, conn: Any) -> None:
        _mark_returned(conn)
        await super().putconn(conn)


def _check_if_idle(conn: psycopg.Connection) -> None:
    if time.monotonic() - getattr(conn, "_memstate_returned", 0.0) > IDLE_CHECK_AFTER:
        ConnectionPool.check_connection(conn)


def connection_kwargs(
    ef_search: int | None, dsn: str = "", connect_timeout: float = 5
) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"autocommit": True}
    if ef_search is not None:
        if not isinstance(ef_search, int) or not 1 <= ef_search <= 1000:
            raise ValueError("ef_search must be an int between 1 and 1000")
        kwargs["options"] = f"-c hnsw.ef_search={ef_search}"
    if "connect_timeout" not in conninfo_to_dict(dsn):
        if not isinstance(connect_timeout, int | float) or not 0 < connect_timeout <= 3600:
            raise ValueError("connect_timeout must be a number of seconds in (0, 3600]")
        kwargs["connect_timeout"] = max(1, math.ceil(connect_timeout))  # libpq: whole seconds
    return kwargs


class ConnectHealth:
    """Whether the pool's latest attempt to open a connection failed (the server is down or
    the DSN wrong): then a call waits for a pooled connection only about as long as one
    attempt takes, and the runner says why, instead of waiting out the pool's timeout."""

    def __init__(self, connect_timeout: float, *, watched: bool = True) -> None:
        self.connect_timeout = connect_timeout
        # "unknown" until a first attempt ends; a pool the caller made is not watched
        self.state = "unknown" if watched else "unwatched"

    @property
    def failing(self) -> bool:
        return self.state == "failing"

    @failing.setter
    def failing(self, value: bool) -> None:
        self.state = "failing" if value else "ok"

    def wait_for(self) -> float | None:
        if self.state == "unknown":  # the first connection may still be on its way
            return float(self.connect_timeout) + 1
        if self.state == "failing":  # the last attempt failed: say why soon
            return 1.0
        return None

    def connection_class(self, base: type[C]) -> type[C]:
        """`base` recording each attempt's outcome here (the pool's connection_class)."""
        health = self

        class Watched(base):  # type: ignore[valid-type,misc]
            @classmethod
            def connect(cls, *args: Any, **kwargs: Any) -> Any:
                try:
                    conn = super().connect(*args, **kwargs)
                except psycopg.OperationalError:
                    health.failing = True
                    raise
                health.failing = False
                return conn

        return Watched

    def async_connection_class(self, base: type[AC]) -> type[AC]:
        health = self

        class Watched(base):  # type: ignore[valid-type,misc]
            @classmethod
            async def connect(cls, *args: Any, **kwargs: Any) -> Any:
                try:
                    conn = await super().connect(*args, **kwargs)
                except psycopg.OperationalError:
                    health.failing = True
                    raise
                health.failing = False
                return conn

        return Watched


async def _acheck_if_idle(conn: psycopg.AsyncConnection[Any]) -> None:
    if time.monotonic() - getattr(conn, "_memstate_returned", 0.0) > IDLE_CHECK_AFTER:
        await AsyncConnectionPool.check_connection(conn)


def make_pool(
    pool_type: type[P],
    dsn_or_pool: Any,
    *,
    owner: str,
    health: ConnectHealth,
    configure: Callable[..., Any],
    min_size: int,
    max_size: int,
    ef_search: int | None,
    connect_timeout: float,
    name: str,
    timeout: float = 30.0,
) -> tuple[P, bool, str]:
    """(pool, owned, dsn): the caller's pool as it is, or a new one for a DSN, with our
    settings: autocommit, connect_timeout, ef_search, the connect-health watch, the idle
    check after a restart. A new sync pool opens at once, an async one on first use.
    `timeout`: how long a checkout may wait for a connection (a read replica's is short)."""
    if isinstance(dsn_or_pool, pool_type):
        conninfo = dsn_or_pool.conninfo
        return dsn_or_pool, False, conninfo if isinstance(conninfo, str) else ""
    if not isinstance(dsn_or_pool, str):
        raise TypeError(f"{owner} takes a DSN string or a psycopg_pool.{pool_type.__name__}")
    dsn = libpq_dsn(dsn_or_pool)
    kwargs = connection_kwargs(ef_search, dsn, connect_timeout)
    if issubclass(pool_type, AsyncConnectionPool):
        return (
            _AsyncMarkingPool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                kwargs=kwargs,
                connection_class=health.async_connection_class(psycopg.AsyncConnection),
                configure=configure,
                check=_acheck_if_idle,  # no dead connection handed out after a restart
                open=False,  # opened on first use, inside the caller's event loop
                name=name,
                timeout=timeout,
            ),
            True,
            dsn,
        )
    else:
        return (
            _MarkingPool(
                dsn,
                min_size=min_size,
                max_size=max_size,
                kwargs=kwargs,
                connection_class=health.connection_class(psycopg.Connection),
                configure=configure,
                check=_check_if_idle,
                open=True,
                name=name,
                timeout=timeout,
            ),
            True,
            dsn,
        )
