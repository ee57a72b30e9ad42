"""A connection going back to a store's pool is marked with the time in the caller's thread
(task), not by a pool `reset` function: psycopg_pool sends every connection returned to a
pool with a reset function through its worker, and the next checkout waits for it. The
mark still drives the idle check (pools.IDLE_CHECK_AFTER): a connection used a moment ago
is handed out without a round trip, one idle longer is checked first."""

from __future__ import annotations

import time

from memstate_pg import AsyncMemoryStore, HashingEmbedder, MemoryStore
from memstate_pg._core import pools
from tests.support.loop import on


def test_a_returned_connection_is_marked_at_once_without_a_reset_worker(dsn: str) -> None:
    with MemoryStore(dsn, embedder=HashingEmbedder(dim=8), min_size=1, max_size=1) as store:
        store.migrate()
        assert store.pool._reset is None
        before = time.monotonic()
        store.commits(limit=1)
        with store.pool.connection() as conn:  # the same connection, back in the pool
            assert before <= conn._memstate_returned <= time.monotonic()
        checked = []
        original = pools.ConnectionPool.check_connection
        pools.ConnectionPool.check_connection = staticmethod(  # type: ignore[method-assign]
            lambda c: checked.append(c) or original(c)
        )
        try:
            store.commits(limit=1)  # used a moment ago: no check
            assert checked == []
            (idle,) = store.pool._pool  # the pooled connection, idle for a while
            idle._memstate_returned -= pools.IDLE_CHECK_AFTER + 1
            store.commits(limit=1)
            assert len(checked) == 1
        finally:
            pools.ConnectionPool.check_connection = original  # type: ignore[method-assign]


def test_the_async_pool_marks_returned_connections_too(dsn: str, loop) -> None:
    async def scenario() -> None:
        store = AsyncMemoryStore(dsn, embedder=HashingEmbedder(dim=8), min_size=1, max_size=1)
        try:
            await store.migrate()
            assert store.pool._reset is None
            before = time.monotonic()
            await store.commits(limit=1)
            async with store.pool.connection() as conn:
                assert before <= conn._memstate_returned <= time.monotonic()
        finally:
            await store.close()

    on(loop, scenario())
