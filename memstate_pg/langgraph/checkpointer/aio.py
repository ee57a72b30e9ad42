"""AsyncMemStateCheckpointer: the async shell of the memstate checkpointer.

The same statements and conversions (``base.py``), run with psycopg's async API over an
``AsyncConnection`` (serialised by an asyncio lock), an ``AsyncConnectionPool``, or an
``AsyncMemoryStore`` (its pool; its migrations): ``AsyncMemStateCheckpointer(mem)`` or
``AsyncMemStateCheckpointer(memory=mem)``. Its sync methods may be called from other
threads (LangGraph does for ``graph.invoke`` on an async saver): they run the coroutine
on the saver's event loop and wait.

    async with AsyncMemStateCheckpointer.from_conn_string(dsn) as saver:
        await saver.setup()
        graph = builder.compile(checkpointer=saver)
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Coroutine, Iterator, Sequence
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from psycopg import AsyncConnection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import AsyncConnectionPool

from ... import migrations
from ...aio import AsyncMemoryStore
from .base import (
    BaseMemStateCheckpointer,
    conninfo_of,
    resolve_target,
    translate_delta_refusal,
)

__all__ = ["AsyncMemStateCheckpointer"]

T = TypeVar("T")


class AsyncMemStateCheckpointer(BaseMemStateCheckpointer):
    """A complete asyncio LangGraph checkpointer stored in memstate-pg's schema."""

    def __init__(
        self,
        conn: AsyncConnection[Any] | AsyncConnectionPool | AsyncMemoryStore | None = None,
        *,
        memory: AsyncMemoryStore | None = None,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self.conn, self.memory = resolve_target(
            "AsyncMemStateCheckpointer",
            conn,
            memory,
            store_type=AsyncMemoryStore,
            conn_types=(AsyncConnection, AsyncConnectionPool),
        )
        self.lock = asyncio.Lock()
        # the loop its sync methods run on: the one it is made on, else the first it is used on
        self.loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):
            self.loop = asyncio.get_running_loop()
        self._dsn: str | None = None

    @classmethod
    @asynccontextmanager
    async def from_conn_string(
        cls, conn_string: str, *, serde: SerializerProtocol | None = None
    ) -> AsyncIterator[AsyncMemStateCheckpointer]:
        """A saver on its own autocommit connection, closed on exit."""
        async with await AsyncConnection.connect(
            conn_string, autocommit=True, prepare_threshold=0
        ) as conn:
            saver = cls(conn, serde=serde)
            saver._dsn = conn_string
            yield saver

    async def setup(self) -> None:
        """Create or upgrade schema memstate (alembic, in a worker thread)."""
        if self.memory is not None:
            await self.memory.migrate()
        else:
            await asyncio.to_thread(migrations.upgrade, self._dsn or conninfo_of(self.conn))

    @asynccontextmanager
    async def _cursor(self) -> AsyncIterator[psycopg.AsyncCursor[DictRow]]:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        if self.memory is not None:
            await self.memory.open_pool()
        if isinstance(self.conn, AsyncConnectionPool):
            async with (
                self.conn.connection() as conn,
                conn.cursor(binary=True, row_factory=dict_row) as cur,
            ):
                yield cur
        else:
            async with self.lock, self.conn.cursor(binary=True, row_factory=dict_row) as cur:
                yield cur

    async def _execute(self, query: str, params: dict[str, Any]) -> None:
        async with self._cursor() as cur:
            try:
                await cur.execute(query, params)
            except psycopg.Error as exc:
                err = translate_delta_refusal(exc)
                if err is exc:
                    raise
                raise err from exc

    # -- async API -----------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        query, params = self._get_statement(config)
        async with self._cursor() as cur:
            await cur.execute(query, params)
            row = await cur.fetchone()
        return self._load_tuple(row) if row else None

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        query, params = self._list_statement(config, filter, before, limit)
        async with self._cursor() as cur:
            await cur.execute(query, params)
            rows = await cur.fetchall()
        for row in rows:
            yield self._load_tuple(row)

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        statement, next_config = self._put_statement(config, checkpoint, metadata, new_versions)
        await self._execute(*statement)
        return next_config

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        if writes:
            await self._execute(*self._writes_statement(config, writes, task_id, task_path))

    async def adelete_thread(self, thread_id: str) -> None:
        await self._execute(*self._delete_thread_statement(thread_id))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        if statement := self._delete_for_runs_statement(run_ids):
            await self._execute(*statement)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await self._execute(*self._copy_thread_statement(source_thread_id, target_thread_id))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        if statement := self._prune_statement(thread_ids, strategy):
            await self._execute(*statement)

    # -- sync API: from other threads, on the saver's loop ---------------------------------

    def _sync(self, coro: Coroutine[Any, Any, T]) -> T:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if self.loop is None or running is self.loop:
            coro.close()
            raise asyncio.InvalidStateError(
                "Synchronous calls to AsyncMemStateCheckpointer are only allowed from a different "
                "thread, once the saver has an event loop (made or first used in async code). "
                "From the loop's thread, use the async interface (graph.ainvoke, aget_tuple, ...)."
            )
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self._sync(self.aget_tuple(config))

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        async def collect() -> list[CheckpointTuple]:
            return [t async for t in self.alist(config, filter=filter, before=before, limit=limit)]

        yield from self._sync(collect())

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return self._sync(self.aput(config, checkpoint, metadata, new_versions))

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        self._sync(self.aput_writes(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._sync(self.adelete_thread(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        self._sync(self.adelete_for_runs(run_ids))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self._sync(self.acopy_thread(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self._sync(self.aprune(thread_ids, strategy=strategy))
