"""The two runners of the sans-IO core: the same requests performed with psycopg's sync
API (`run`) and its async API (`run_async`), side by side as psycopg keeps `wait` and
`wait_async`. These are the only sync/async twins in the package.

A runner borrows a pooled connection at the first request that needs one (or uses the
caller's `conn`), opens a transaction at `Begin` (a savepoint inside the caller's), runs
`Attempt` sub-operations in savepoints, and turns database errors, including those
raised by COMMIT as the block closes, into MemStateError (errors.translate).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool

from ..embedders import Embedder, aembed
from ..errors import MemStateError, translate
from .protocol import Attempt, Begin, Embed, Exec, ExecMany, Op, Outcome

T = TypeVar("T")


# --- sync ----------------------------------------------------------------------------


@dataclass
class _State:
    pool: ConnectionPool
    embedder: Embedder
    stack: contextlib.ExitStack
    caller: psycopg.Connection | None  # the caller's connection (conn=...)
    conn: psycopg.Connection | None = None
    in_tx: bool = False


def run(
    op: Op[T],
    *,
    pool: ConnectionPool,
    embedder: Embedder,
    conn: psycopg.Connection | None = None,
) -> T:
    """Perform the requests of `op` and return its value."""
    try:
        with contextlib.ExitStack() as stack:
            return _drive(op, _State(pool, embedder, stack, conn, conn))
    except (psycopg.Error, UnicodeEncodeError) as exc:  # a lone surrogate psycopg cannot send
        err = translate(exc)
        if err is exc:
            raise
        raise err from exc


def _drive(op: Op[T], st: _State) -> T:
    try:
        request = next(op)
        while True:
            result: Any
            if isinstance(request, Embed):
                result = (request.embedder or st.embedder).embed(request.texts)
            else:
                if st.conn is None:
                    st.conn = st.stack.enter_context(st.pool.connection())
                c = st.conn
                if isinstance(request, Begin):
                    if not st.in_tx:
                        st.stack.enter_context(c.transaction())
                        st.in_tx = True
                    result = None
                elif isinstance(request, Attempt):
                    result = _attempt(request, st, c)
                elif isinstance(request, Exec) and request.autonomous and (st.caller or st.in_tx):
                    with st.pool.connection() as own:
                        result = execute(own, request)
                else:
                    result = execute(c, request)
            request = op.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def _attempt(request: Attempt[Any], st: _State, c: psycopg.Connection) -> Outcome[Any]:
    try:
        with contextlib.ExitStack() as stack, c.transaction():
            value = _drive(request.op, _State(st.pool, st.embedder, stack, st.caller, c, True))
        return Outcome(value)
    except MemStateError as refused:
        return Outcome(error=refused)
    except psycopg.Error as exc:
        translated = translate(exc)
        if not isinstance(translated, MemStateError):
            raise
        return Outcome(error=translated)


def execute(conn: psycopg.Connection, request: Exec | ExecMany) -> Any:
    with conn.cursor(row_factory=dict_row) as cur:
        if isinstance(request, ExecMany):
            cur.executemany(request.query, request.params, returning=True)
            rows = []
            while True:
                rows.append(cur.fetchone())
                if not cur.nextset():
                    break
            return rows
        cur.execute(request.query, request.params)
        if request.fetch == "none":
            return None
        if request.fetch == "all":
            return cur.fetchall()
        return cur.fetchone()


# --- async ---------------------------------------------------------------------------


@dataclass
class _AsyncState:
    pool: AsyncConnectionPool
    embedder: Embedder
    stack: contextlib.AsyncExitStack
    caller: psycopg.AsyncConnection | None
    conn: psycopg.AsyncConnection | None = None
    in_tx: bool = False
    owns_pool: bool = False


async def run_async(
    op: Op[T],
    *,
    pool: AsyncConnectionPool,
    embedder: Embedder,
    conn: psycopg.AsyncConnection | None = None,
    open_pool: bool = False,
) -> T:
    """`run` with psycopg's async API; a sync embedder runs in a thread (`aembed`).
    `open_pool`: open the (store-owned) pool first if it is closed."""
    try:
        async with contextlib.AsyncExitStack() as stack:
            return await _adrive(
                op, _AsyncState(pool, embedder, stack, conn, conn, False, open_pool)
            )
    except (psycopg.Error, UnicodeEncodeError) as exc:
        err = translate(exc)
        if err is exc:
            raise
        raise err from exc


async def _adrive(op: Op[T], st: _AsyncState) -> T:
    try:
        request = next(op)
        while True:
            result: Any
            if isinstance(request, Embed):
                result = await aembed(request.embedder or st.embedder, request.texts)
            else:
                if st.conn is None:
                    if st.owns_pool and st.pool.closed:
                        await st.pool.open()
                    st.conn = await st.stack.enter_async_context(st.pool.connection())
                c = st.conn
                if isinstance(request, Begin):
                    if not st.in_tx:
                        await st.stack.enter_async_context(c.transaction())
                        st.in_tx = True
                    result = None
                elif isinstance(request, Attempt):
                    result = await _aattempt(request, st, c)
                elif isinstance(request, Exec) and request.autonomous and (st.caller or st.in_tx):
                    async with st.pool.connection() as own:
                        result = await aexecute(own, request)
                else:
                    result = await aexecute(c, request)
            request = op.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


async def _aattempt(
    request: Attempt[Any], st: _AsyncState, c: psycopg.AsyncConnection
) -> Outcome[Any]:
    try:
        async with contextlib.AsyncExitStack() as stack, c.transaction():
            sub = _AsyncState(st.pool, st.embedder, stack, st.caller, c, True)
            value = await _adrive(request.op, sub)
        return Outcome(value)
    except MemStateError as refused:
        return Outcome(error=refused)
    except psycopg.Error as exc:
        translated = translate(exc)
        if not isinstance(translated, MemStateError):
            raise
        return Outcome(error=translated)


async def aexecute(conn: psycopg.AsyncConnection, request: Exec | ExecMany) -> Any:
    async with conn.cursor(row_factory=dict_row) as cur:
        if isinstance(request, ExecMany):
            await cur.executemany(request.query, request.params, returning=True)
            rows = []
            while True:
                rows.append(await cur.fetchone())
                if not cur.nextset():
                    break
            return rows
        await cur.execute(request.query, request.params)
        if request.fetch == "none":
            return None
        if request.fetch == "all":
            return await cur.fetchall()
        return await cur.fetchone()


__all__ = ["aexecute", "execute", "run", "run_async"]
