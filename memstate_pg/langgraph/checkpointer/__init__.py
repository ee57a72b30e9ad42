"""MemStateCheckpointer: LangGraph's BaseCheckpointSaver on PostgreSQL, schema memstate.

A thin sync shell over ``base.py`` (SQL, parameters, row conversions). It takes a psycopg
``Connection`` (shared between threads under a lock, as PostgresSaver does), a
``ConnectionPool`` (one pooled connection per call), or a ``MemoryStore`` (its pool; its
migrations)::

    mem = MemoryStore(dsn)
    saver = MemStateCheckpointer(mem)      # or MemStateCheckpointer(memory=mem)

Like PostgresSaver it expects ``autocommit=True`` connections: each call is then its own
transaction, or part of the caller's when one is open on that connection
(``with conn.transaction(): ...``). Its ``a*`` methods run the sync ones in a worker
thread, so the same saver also serves ``graph.ainvoke``.

    with MemStateCheckpointer.from_conn_string(dsn) as saver:
        saver.setup()                      # alembic migrations of memstate-pg (idempotent)
        graph = builder.compile(checkpointer=saver)

See ``base`` for how a checkpoint and memory facts share one transaction.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
)
from langgraph.checkpoint.serde.base import SerializerProtocol
from psycopg import Connection
from psycopg.rows import DictRow, dict_row
from psycopg_pool import ConnectionPool

from ... import migrations
from ...store import MemoryStore
from .base import (
    BaseMemStateCheckpointer,
    conninfo_of,
    resolve_target,
    translate_delta_refusal,
)

__all__ = ["MemStateCheckpointer", "conninfo_of"]


class MemStateCheckpointer(BaseMemStateCheckpointer):
    """A complete LangGraph checkpointer stored in memstate-pg's schema."""

    def __init__(
        self,
        conn: Connection[Any] | ConnectionPool | MemoryStore | None = None,
        *,
        memory: MemoryStore | None = None,
        serde: SerializerProtocol | None = None,
    ) -> None:
        super().__init__(serde=serde)
        self.conn, self.memory = resolve_target(
            "MemStateCheckpointer",
            conn,
            memory,
            store_type=MemoryStore,
            conn_types=(Connection, ConnectionPool),
        )
        self.lock = threading.Lock()
        self._dsn: str | None = None

    @classmethod
    @contextmanager
    def from_conn_string(
        cls, conn_string: str, *, serde: SerializerProtocol | None = None
    ) -> Iterator[MemStateCheckpointer]:
        """A saver on its own autocommit connection, closed on exit."""
        with Connection.connect(conn_string, autocommit=True, prepare_threshold=0) as conn:
            saver = cls(conn, serde=serde)
            saver._dsn = conn_string
            yield saver

    def setup(self) -> None:
        """Create or upgrade schema memstate (alembic; checkpoint tables included)."""
        if self.memory is not None:
            self.memory.migrate()
        else:
            migrations.upgrade(self._dsn or conninfo_of(self.conn))

    @contextmanager
    def _cursor(self) -> Iterator[psycopg.Cursor[DictRow]]:
        if isinstance(self.conn, ConnectionPool):
            with (
                self.conn.connection() as conn,
                conn.cursor(binary=True, row_factory=dict_row) as cur,
            ):
                yield cur
        else:
            with self.lock, self.conn.cursor(binary=True, row_factory=dict_row) as cur:
                yield cur

    def _execute(self, query: str, params: dict[str, Any]) -> None:
        with self._cursor() as cur:
            try:
                cur.execute(query, params)
            except psycopg.Error as exc:
                err = translate_delta_refusal(exc)
                if err is exc:
                    raise
                raise err from exc

    # -- reads ---------------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """The checkpoint `config` names (by checkpoint_id), else the thread's latest."""
        query, params = self._get_statement(config)
        with self._cursor() as cur:
            row = cur.execute(query, params).fetchone()
        return self._load_tuple(row) if row else None

    def list(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> Iterator[CheckpointTuple]:
        """Checkpoints newest first; `filter` matches metadata by containment."""
        query, params = self._list_statement(config, filter, before, limit)
        with self._cursor() as cur:
            rows = cur.execute(query, params).fetchall()
        for row in rows:
            yield self._load_tuple(row)

    # -- writes --------------------------------------------------------------------------

    def put(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        """Save a checkpoint (its parent is `config`'s checkpoint_id) with the values of the
        channels in `new_versions`; returns the config that names it."""
        statement, next_config = self._put_statement(config, checkpoint, metadata, new_versions)
        self._execute(*statement)
        return next_config

    def put_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        """Save a task's pending writes against the checkpoint `config` names."""
        if writes:
            self._execute(*self._writes_statement(config, writes, task_id, task_path))

    def delete_thread(self, thread_id: str) -> None:
        self._execute(*self._delete_thread_statement(thread_id))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) that these runs wrote."""
        if statement := self._delete_for_runs_statement(run_ids):
            self._execute(*statement)

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy every checkpoint, blob and write of a thread (the whole parent chain)."""
        self._execute(*self._copy_thread_statement(source_thread_id, target_thread_id))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """`keep_latest`: only each namespace's latest checkpoint stays; `delete`: all goes.
        Raises NotImplementedError for keep_latest on threads that use a DeltaChannel."""
        if statement := self._prune_statement(thread_ids, strategy):
            self._execute(*statement)

    # -- async: the sync methods in a worker thread ---------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return await asyncio.to_thread(self.get_tuple, config)

    async def alist(
        self,
        config: RunnableConfig | None,
        *,
        filter: dict[str, Any] | None = None,
        before: RunnableConfig | None = None,
        limit: int | None = None,
    ) -> AsyncIterator[CheckpointTuple]:
        items = await asyncio.to_thread(
            lambda: list(self.list(config, filter=filter, before=before, limit=limit))
        )
        for item in items:
            yield item

    async def aput(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> RunnableConfig:
        return await asyncio.to_thread(self.put, config, checkpoint, metadata, new_versions)

    async def aput_writes(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str = "",
    ) -> None:
        await asyncio.to_thread(self.put_writes, config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        await asyncio.to_thread(self.delete_thread, thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        await asyncio.to_thread(self.delete_for_runs, run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        await asyncio.to_thread(self.copy_thread, source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        await asyncio.to_thread(self.prune, thread_ids, strategy=strategy)
