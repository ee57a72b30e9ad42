"""The two runners of the sans-IO core: the same requests performed with psycopg's sync
API (`run`) and its async API (`run_async`), side by side as psycopg keeps `wait` and
`wait_async`. These are the only sync/async twins in the package.

A runner borrows a pooled connection at the first request that needs one (or uses the
caller's `conn`), opens a transaction at `Begin` (a savepoint inside the caller's), runs
`Attempt` sub-operations in savepoints, and turns database errors, including those
raised by COMMIT as the block closes, into MemStateError (errors.translate).

With read replicas (see replicas.py), `run_read` / `arun_read` perform a read on a standby
that has replayed what the read must see, else on the primary; `run(..., record=...)`
notes the commit LSN of a write on its own connection, after COMMIT, before the
connection goes back to the pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout

from ..embedders import Embedder, aembed
from ..errors import MemStateError, Unavailable, translate
from .pools import ConnectHealth
from .protocol import Attempt, Begin, Call, Embed, Exec, ExecMany, Op, Outcome
from .replicas import PROBE, RECORD_LSN, Replica, ReplicaSet, conflict

T = TypeVar("T")


# --- sync ----------------------------------------------------------------------------


@dataclass
class _State:
    pool: ConnectionPool
    embedder: Embedder
    stack: contextlib.ExitStack
    caller: psycopg.Connection[Any] | None  # the caller's connection (conn=...)
    conn: psycopg.Connection[Any] | None = None
    in_tx: bool = False
    health: ConnectHealth | None = None  # how long to wait for a pooled connection
    record: ReplicaSet | None = None  # a write: note its commit LSN there


def run(
    op: Op[T],
    *,
    pool: ConnectionPool[Any],
    embedder: Embedder,
    conn: psycopg.Connection[Any] | None = None,
    again: Callable[[], Op[T]] | None = None,
    health: ConnectHealth | None = None,
    record: ReplicaSet | None = None,
) -> T:
    """Perform the requests of `op` and return its value.

    `again`: for an operation that is safe to repeat (a read), makes it anew; when the first
    run finds the connection dead (server restart, failover, terminated backend), the pool
    checks its idle connections and the operation runs once more, so a restart costs no
    failed call. `health`: the store's view of its server (see pools.ConnectHealth): while
    connection attempts fail, a call waits for a pooled connection only briefly, then says why.
    `record`: the store's replicas; the operation writes, and once it has committed on the
    connection it borrowed, the WAL position is noted there (read-your-writes).
    """
    try:
        return _run_once(op, pool, embedder, conn, health, record)
    except Unavailable as err:
        if again is None or conn is not None or not _lost(err):
            raise
        pool.check()  # drop every dead idle connection before trying again
        return _run_once(again(), pool, embedder, conn, health)


def _run_once(
    op: Op[T],
    pool: ConnectionPool[Any],
    embedder: Embedder,
    conn: psycopg.Connection[Any] | None,
    health: ConnectHealth | None,
    record: ReplicaSet | None = None,
) -> T:
    try:
        with contextlib.ExitStack() as stack:
            st = _State(pool, embedder, stack, conn, conn, health=health, record=record)
            return _drive(op, st)
    except (psycopg.Error, UnicodeEncodeError) as exc:  # a lone surrogate psycopg cannot send
        err = translate(exc)
        if err is exc:
            raise
        raise err from exc


def _lost(err: Unavailable) -> bool:
    """A connection that worked died under the call (not: no connection to be had)."""
    return not isinstance(err.__cause__, PoolTimeout)


PROBE_TIMEOUT = 4  # seconds for the one direct connection that finds out why


def _probe(pool: ConnectionPool[Any]) -> BaseException | None:
    """Why the pool has no connection to give: the error of one direct attempt, or None
    when the server answers (then every connection is in use)."""
    if not isinstance(pool.conninfo, str):
        return None
    try:
        kwargs = {**_kwargs(pool), "connect_timeout": min(_connect_timeout(pool), PROBE_TIMEOUT)}
        psycopg.connect(pool.conninfo, **kwargs).close()
    except psycopg.Error as exc:
        return exc
    return None


def _connect_timeout(pool: ConnectionPool[Any] | AsyncConnectionPool[Any]) -> int:
    from psycopg.conninfo import conninfo_to_dict

    given = _kwargs(pool).get("connect_timeout")
    if given is None and isinstance(pool.conninfo, str):
        given = conninfo_to_dict(pool.conninfo).get("connect_timeout")
    try:
        return max(1, int(given)) if given is not None else PROBE_TIMEOUT
    except (TypeError, ValueError):
        return PROBE_TIMEOUT


def _kwargs(pool: ConnectionPool[Any] | AsyncConnectionPool[Any]) -> dict[str, Any]:
    return pool.kwargs if isinstance(pool.kwargs, dict) else {}


def _pool_timeout(exc: PoolTimeout, cause: BaseException | None) -> Unavailable:
    if cause is None:
        return Unavailable(
            f"no free database connection: {exc} (every pooled connection is in use: "
            "raise max_size, or hold connections for shorter)"
        )
    reason = " ".join(str(cause).split()) or type(cause).__name__
    return Unavailable(f"database unavailable: {reason}")


SLICE = 1.0  # seconds: how often a waiting call looks again at the pool's connect health


def _wait_steps(pool: ConnectionPool[Any] | AsyncConnectionPool[Any], health: Any) -> Any:
    """(how long to wait this time, is it the last time) until the pool's timeout: in
    slices while the server answered last time, so a call already waiting notices when
    connection attempts start failing; briefly once they fail."""
    deadline = time.monotonic() + pool.timeout
    while True:
        remaining = deadline - time.monotonic()
        brief = health.wait_for() if health is not None else None
        if health is None:
            yield remaining, True
            return
        step = min(brief if brief is not None else SLICE, max(remaining, 0.0))
        last = brief is not None and health.failing or step >= remaining
        yield max(step, 0.01), last


def checkout(
    stack: contextlib.ExitStack, pool: ConnectionPool[Any], health: ConnectHealth | None
) -> psycopg.Connection[Any]:
    """A pooled connection for the rest of `stack`; Unavailable with the cause when the
    server cannot be reached (see _wait_steps), or when every connection stays in use."""
    for step, last in _wait_steps(pool, health):
        try:
            return stack.enter_context(pool.connection(step))
        except PoolTimeout as exc:
            if last or (health is not None and health.failing):
                raise _pool_timeout(exc, _probe(pool)) from exc
    raise AssertionError("unreachable")  # pragma: no cover


async def acheckout(
    stack: contextlib.AsyncExitStack,
    pool: AsyncConnectionPool[Any],
    health: ConnectHealth | None,
) -> psycopg.AsyncConnection[Any]:
    for step, last in _wait_steps(pool, health):
        try:
            return await stack.enter_async_context(pool.connection(step))
        except PoolTimeout as exc:
            if last or (health is not None and health.failing):
                raise _pool_timeout(exc, await _aprobe(pool)) from exc
    raise AssertionError("unreachable")  # pragma: no cover


def _drive(op: Op[T], st: _State) -> T:
    try:
        request = next(op)
        while True:
            result: Any
            if isinstance(request, Embed):
                result = (request.embedder or st.embedder).embed(request.texts)
            elif isinstance(request, Call):
                result = request.fn(*request.args)
            else:
                if st.conn is None:
                    st.conn = checkout(st.stack, st.pool, st.health)
                    if st.record is not None:  # runs after COMMIT, before the pool has it back
                        st.stack.push(recorder(st.conn, st.record))
                c = st.conn
                if isinstance(request, Begin):
                    if not st.in_tx:
                        st.stack.enter_context(c.transaction())
                        st.in_tx = True
                    result = None
                elif isinstance(request, Attempt):
                    result = _attempt(request, st, c)
                elif isinstance(request, Exec) and request.autonomous and (st.caller or st.in_tx):
                    with contextlib.ExitStack() as own_stack:
                        own = checkout(own_stack, st.pool, st.health)
                        result = execute(own, request)
                else:
                    result = execute(c, request)
            request = op.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def recorder(conn: psycopg.Connection[Any], replicas: ReplicaSet) -> Callable[..., bool]:
    """An exit callback for the stack that holds a write's connection and transaction: once
    the transaction has committed, the WAL position on that connection goes to `replicas`."""

    def exit_(exc_type: Any, *_: Any) -> bool:
        if exc_type is None:
            try:
                row = execute(conn, Exec(RECORD_LSN))
            except psycopg.Error:  # committed, but the position is unknown: primary reads
                row = None
            replicas.recorded(row)
        return False

    return exit_


def run_read(
    make: Callable[[], Op[T]],
    *,
    pool: ConnectionPool[Any],
    embedder: Embedder,
    health: ConnectHealth | None,
    replicas: ReplicaSet,
    after: str | None = None,
) -> T:
    """A read (safe to repeat) on a replica that has replayed what it must see (the store's
    newest write, `after`), else on the primary (see replicas.py)."""
    needed = replicas.needed(after)
    if needed is not None:
        deadline = time.monotonic() + replicas.wait
        for replica in replicas.order():
            if replicas.skipped(replica):
                continue
            served, value = _replica_read(make, replica, replicas, needed, deadline, embedder)
            if served:
                return value  # type: ignore[return-value]
    replicas.to_primary()
    return run(make(), pool=pool, embedder=embedder, again=make, health=health)


def _replica_read(
    make: Callable[[], Op[T]],
    replica: Replica,
    replicas: ReplicaSet,
    needed: int,
    deadline: float,
    embedder: Embedder,
) -> tuple[bool, T | None]:
    try:
        with contextlib.ExitStack() as stack:
            try:
                conn = stack.enter_context(replica.pool.connection(replica.pool.timeout))
            except PoolTimeout as exc:
                return _no_connection(replica, replicas, exc), None
            pause = 0.001
            while not replicas.fresh(replica, needed):
                reason = replicas.probed(replica, execute(conn, Exec(PROBE)), needed)
                if reason is None:
                    break
                if reason != "wait":
                    replicas.missed(replica, reason)
                    return False, None
                if time.monotonic() + pause > deadline:
                    replicas.missed(replica, "behind")
                    return False, None
                time.sleep(pause)
                pause = min(pause * 2, 0.02)
            value = _run_once(make(), replica.pool, embedder, conn, replica.health)
    except (psycopg.Error, MemStateError) as exc:
        if not _replica_miss(replica, replicas, exc):
            raise
        return False, None
    replicas.served(replica)
    return True, value


def _no_connection(replica: Replica, replicas: ReplicaSet, exc: PoolTimeout) -> bool:
    """No pooled connection to the replica in time: down when it cannot be reached, else
    busy (every connection in use)."""
    replicas.missed(replica, "down" if replica.health.failing else "busy", exc)
    return False


def _replica_miss(replica: Replica, replicas: ReplicaSet, exc: BaseException) -> bool:
    """Count a replica's failure to serve a read and say whether the primary should serve
    it instead (False: the read's own error, raised as the primary would raise it)."""
    if conflict(exc):
        replicas.missed(replica, "conflict", exc)
        return True
    if isinstance(exc, Unavailable | psycopg.OperationalError | psycopg.InterfaceError):
        replicas.missed(replica, "down", exc)
        return True
    return False


def _attempt(request: Attempt[Any], st: _State, c: psycopg.Connection[Any]) -> Outcome[Any]:
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


def execute(conn: psycopg.Connection[Any], request: Exec | ExecMany) -> Any:
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
    caller: psycopg.AsyncConnection[Any] | None
    conn: psycopg.AsyncConnection[Any] | None = None
    in_tx: bool = False
    owns_pool: bool = False
    health: ConnectHealth | None = None
    record: ReplicaSet | None = None


async def run_async(
    op: Op[T],
    *,
    pool: AsyncConnectionPool[Any],
    embedder: Embedder,
    conn: psycopg.AsyncConnection[Any] | None = None,
    open_pool: bool = False,
    again: Callable[[], Op[T]] | None = None,
    health: ConnectHealth | None = None,
    record: ReplicaSet | None = None,
) -> T:
    """`run` with psycopg's async API; a sync embedder runs in a thread (`aembed`).
    `open_pool`: open the (store-owned) pool first if it is closed."""
    try:
        return await _arun_once(op, pool, embedder, conn, open_pool, health, record)
    except Unavailable as err:
        if again is None or conn is not None or not _lost(err):
            raise
        await pool.check()
        return await _arun_once(again(), pool, embedder, conn, open_pool, health)


async def _arun_once(
    op: Op[T],
    pool: AsyncConnectionPool[Any],
    embedder: Embedder,
    conn: psycopg.AsyncConnection[Any] | None,
    open_pool: bool,
    health: ConnectHealth | None,
    record: ReplicaSet | None = None,
) -> T:
    try:
        async with contextlib.AsyncExitStack() as stack:
            st = _AsyncState(pool, embedder, stack, conn, conn, False, open_pool, health, record)
            return await _adrive(op, st)
    except (psycopg.Error, UnicodeEncodeError) as exc:
        err = translate(exc)
        if err is exc:
            raise
        raise err from exc


async def _aprobe(pool: AsyncConnectionPool[Any]) -> BaseException | None:
    if not isinstance(pool.conninfo, str):
        return None
    try:
        kwargs = {**_kwargs(pool), "connect_timeout": min(_connect_timeout(pool), PROBE_TIMEOUT)}
        await (await psycopg.AsyncConnection.connect(pool.conninfo, **kwargs)).close()
    except psycopg.Error as exc:
        return exc
    return None


async def _adrive(op: Op[T], st: _AsyncState) -> T:
    try:
        request = next(op)
        while True:
            result: Any
            if isinstance(request, Embed):
                result = await aembed(request.embedder or st.embedder, request.texts)
            elif isinstance(request, Call):
                result = await asyncio.to_thread(request.fn, *request.args)
            else:
                c = st.conn
                if c is None:
                    if st.owns_pool and st.pool.closed:
                        await st.pool.open()
                    c = await acheckout(st.stack, st.pool, st.health)
                    st.conn = c
                    if st.record is not None:
                        st.stack.push_async_exit(arecorder(c, st.record))
                assert c is not None
                if isinstance(request, Begin):
                    if not st.in_tx:
                        await st.stack.enter_async_context(c.transaction())
                        st.in_tx = True
                    result = None
                elif isinstance(request, Attempt):
                    result = await _aattempt(request, st, c)
                elif isinstance(request, Exec) and request.autonomous and (st.caller or st.in_tx):
                    async with contextlib.AsyncExitStack() as own_stack:
                        own = await acheckout(own_stack, st.pool, st.health)
                        result = await aexecute(own, request)
                else:
                    result = await aexecute(c, request)
            request = op.send(result)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]


def arecorder(conn: psycopg.AsyncConnection[Any], replicas: ReplicaSet) -> Callable[..., Any]:
    """`recorder` for an async connection."""

    async def exit_(exc_type: Any, *_: Any) -> bool:
        if exc_type is None:
            try:
                row = await aexecute(conn, Exec(RECORD_LSN))
            except psycopg.Error:
                row = None
            replicas.recorded(row)
        return False

    return exit_


async def arun_read(
    make: Callable[[], Op[T]],
    *,
    pool: AsyncConnectionPool[Any],
    embedder: Embedder,
    health: ConnectHealth | None,
    replicas: ReplicaSet,
    after: str | None = None,
    open_pool: bool = False,
) -> T:
    """`run_read` with psycopg's async API."""
    needed = replicas.needed(after)
    if needed is not None:
        deadline = time.monotonic() + replicas.wait
        for replica in replicas.order():
            if replicas.skipped(replica):
                continue
            served, value = await _areplica_read(
                make, replica, replicas, needed, deadline, embedder
            )
            if served:
                return value  # type: ignore[return-value]
    replicas.to_primary()
    return await run_async(
        make(), pool=pool, embedder=embedder, open_pool=open_pool, again=make, health=health
    )


async def _areplica_read(
    make: Callable[[], Op[T]],
    replica: Replica,
    replicas: ReplicaSet,
    needed: int,
    deadline: float,
    embedder: Embedder,
) -> tuple[bool, T | None]:
    try:
        async with contextlib.AsyncExitStack() as stack:
            if replica.owned and replica.pool.closed:
                await replica.pool.open()
            try:
                conn = await stack.enter_async_context(
                    replica.pool.connection(replica.pool.timeout)
                )
            except PoolTimeout as exc:
                return _no_connection(replica, replicas, exc), None
            pause = 0.001
            while not replicas.fresh(replica, needed):
                reason = replicas.probed(replica, await aexecute(conn, Exec(PROBE)), needed)
                if reason is None:
                    break
                if reason != "wait":
                    replicas.missed(replica, reason)
                    return False, None
                if time.monotonic() + pause > deadline:
                    replicas.missed(replica, "behind")
                    return False, None
                await asyncio.sleep(pause)
                pause = min(pause * 2, 0.02)
            value = await _arun_once(make(), replica.pool, embedder, conn, False, replica.health)
    except (psycopg.Error, MemStateError) as exc:
        if not _replica_miss(replica, replicas, exc):
            raise
        return False, None
    replicas.served(replica)
    return True, value


async def _aattempt(
    request: Attempt[Any], st: _AsyncState, c: psycopg.AsyncConnection[Any]
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


async def aexecute(conn: psycopg.AsyncConnection[Any], request: Exec | ExecMany) -> Any:
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


__all__ = ["aexecute", "arun_read", "execute", "run", "run_async", "run_read"]
