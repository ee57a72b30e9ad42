"""MemStateStore / AsyncMemStateStore: LangGraph long-term memory whose items are facts.

A drop-in ``BaseStore`` (what ``PostgresStore`` / ``AsyncPostgresStore`` are) built on
MemoryStore / AsyncMemoryStore: every item is a memstate fact, so besides LangGraph's
put/get/delete/search/list_namespaces you get its history, ``rollback``/``revert`` of
bad memories, mirrors to Chroma/Qdrant fed from the outbox, and pgvector search. The
operations themselves live once in store_core.py; the classes here only run them::

    mem = MemoryStore(dsn)
    store = MemStateStore(mem, index={"dims": 384, "embed": embed_fn, "fields": ["text"]})
    store.setup()
    graph = builder.compile(checkpointer=saver, store=store)
    ...
    store.history(("users", "42"), "prefs")    # every version of one item
    store.rollback(1)                            # undo the last batch of writes

TTL (``put(..., ttl=minutes)``, ``TTLConfig``) is supported: expiry clocks live in
``memstate.lg_ttl`` (a refresh on read is not a new version), and ``sweep_ttl()``
deletes expired items as one ordinary, undoable commit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from typing import Any
from uuid import UUID

import psycopg
from langgraph.store.base import BaseStore, IndexConfig, Op, Result, TTLConfig
from psycopg.rows import dict_row

from ..aio import AsyncMemoryStore
from ..embedders import Embedder
from ..errors import ConflictError, NotFound, translate
from ..models import Constraint, FactVersion
from ..store import MemoryStore
from .embeddings import index_embedder
from .store_core import (
    Atomic,
    Begin,
    CommitFact,
    CommitFacts,
    DeleteFact,
    EmbedDocuments,
    EmbedQueries,
    Read,
    StoreCore,
    StoreOp,
    Write,
)

__all__ = ["AsyncMemStateStore", "MemStateStore"]

logger = logging.getLogger(__name__)

_TYPE_SQL = "SELECT singleton_key FROM memstate.types WHERE type = %(type)s"


def _reraise(exc: psycopg.Error) -> None:
    err = translate(exc)
    if err is exc:
        raise exc
    raise err from exc


class MemStateStore(StoreCore, BaseStore):
    """LangGraph ``BaseStore`` over a MemoryStore (sync; ``abatch`` runs in a thread).

    ``namespace`` is the memstate namespace every item lives in (default: the
    MemoryStore's bound namespace, else ``"langgraph"``); rollback and history are scoped
    to it. ``index`` is LangGraph's index config (``dims``, ``embed``, ``fields``, and
    optionally ``model``, see embeddings.py); without it items are embedded with the
    MemoryStore's embedder over their JSON. ``ttl`` is LangGraph's ``TTLConfig``.
    """

    def __init__(
        self,
        memory: MemoryStore,
        *,
        index: IndexConfig | None = None,
        namespace: str | None = None,
        ttl: TTLConfig | None = None,
        actor: str | None = "langgraph",
    ) -> None:
        if not isinstance(memory, MemoryStore):
            raise TypeError(
                "MemStateStore takes a MemoryStore (use AsyncMemStateStore for AsyncMemoryStore)"
            )
        self._memory = memory
        self.index_config = index
        self._init_core(
            namespace=namespace or memory.namespace or "langgraph",
            embedder=index_embedder(index, memory.embedder),
            fields=(index or {}).get("fields"),
            ttl=ttl,
            actor=actor,
        )
        self._type_ready = False
        self._sweeper: threading.Thread | None = None
        self._stop = threading.Event()

    @property
    def memory(self) -> MemoryStore:
        """The MemoryStore holding the items: history, as_of, rollback, mirrors, status."""
        return self._memory

    @classmethod
    @contextlib.contextmanager
    def from_conn_string(
        cls,
        conn_string: str,
        *,
        index: IndexConfig | None = None,
        namespace: str | None = None,
        ttl: TTLConfig | None = None,
        embedder: Embedder | None = None,
        max_size: int = 10,
    ) -> Iterator[MemStateStore]:
        """A store on its own MemoryStore (connection pool), closed on exit."""
        with MemoryStore(conn_string, embedder=embedder, max_size=max_size) as memory:
            store = cls(memory, index=index, namespace=namespace, ttl=ttl)
            try:
                yield store
            finally:
                store.stop_ttl_sweeper()

    def setup(self) -> None:
        """Migrate schema memstate (alembic) and register the item fact type."""
        self._memory.migrate()
        self._type_ready = False
        self._ensure_type()

    def _ensure_type(self) -> None:
        if self._type_ready:
            return
        rows = self._run(_read_type(self.type_name))
        if not rows or rows[0]["singleton_key"] != "ns_key":
            self._memory.register_schema(
                self.type_name, None, constraint=Constraint(singleton_key="ns_key")
            )
        self._type_ready = True

    # -- BaseStore ---------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        self._ensure_type()
        return self._run(self._op_batch(ops))

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await asyncio.to_thread(self.batch, list(ops))

    # -- memstate extras ---------------------------------------------------------------

    def history(self, namespace: Sequence[str], key: str) -> list[FactVersion]:
        """Every version of an item, oldest first, across deletes and re-creations
        (``payload["value"]`` is the item's value; ``op`` is put/update/delete)."""
        return self._run(self._op_history(namespace, key))

    def fact_id(self, namespace: Sequence[str], key: str) -> UUID | None:
        """The id of the fact holding a live item."""
        return self._run(self._op_fact_id(namespace, key))

    def rollback(self, steps: int = 1, *, reason: str | None = None) -> int:
        """Undo the last `steps` commits of this store's namespace (a batch is one)."""
        return self._memory.rollback(
            steps, namespace=self.namespace, actor=self.actor, reason=reason
        )

    def revert(self, seq: int, *, reason: str | None = None) -> int:
        """Undo one commit (e.g. the one that wrote a bad memory); reverting a rollback is redo."""
        return self._memory.revert(seq, actor=self.actor, reason=reason)

    # -- TTL -----------------------------------------------------------------------------

    def sweep_ttl(self) -> int:
        """Delete the items whose TTL expired (one undoable commit); returns how many."""
        return self._run(self._op_sweep())

    def start_ttl_sweeper(
        self, sweep_interval_minutes: float | None = None
    ) -> concurrent.futures.Future[None]:
        """Sweep every `sweep_interval_minutes` (default: the TTLConfig's, else 5) in a
        daemon thread until stop_ttl_sweeper() or the Future is cancelled."""
        future: concurrent.futures.Future[None] = concurrent.futures.Future()
        if self._sweeper is not None and self._sweeper.is_alive():
            future.add_done_callback(lambda f: self._stop.set() if f.cancelled() else None)
            return future
        interval = 60.0 * float(
            sweep_interval_minutes or (self.ttl_config or {}).get("sweep_interval_minutes") or 5
        )
        self._stop.clear()

        def loop() -> None:
            while not self._stop.wait(interval):
                try:
                    if swept := self.sweep_ttl():
                        logger.info("swept %d expired items", swept)
                except Exception:  # keep sweeping: the next round may succeed
                    logger.exception("TTL sweep failed")
            if not future.done():
                future.set_result(None)

        self._sweeper = threading.Thread(target=loop, daemon=True, name="memstate-ttl-sweeper")
        self._sweeper.start()
        future.add_done_callback(lambda f: self._stop.set() if f.cancelled() else None)
        return future

    def stop_ttl_sweeper(self, timeout: float | None = None) -> bool:
        if self._sweeper is None or not self._sweeper.is_alive():
            return True
        self._stop.set()
        self._sweeper.join(timeout)
        stopped = not self._sweeper.is_alive()
        if stopped:
            self._sweeper = None
        return stopped

    # -- the runner ----------------------------------------------------------------------

    def _run(self, op: StoreOp) -> Any:
        """Perform the I/O an operation of store_core asks for, with the MemoryStore."""
        mem = self._memory
        with contextlib.ExitStack() as stack:
            conn: psycopg.Connection | None = None
            tx = None
            result: Any = None
            try:
                request = next(op)
                while True:
                    if isinstance(request, EmbedDocuments):
                        result = self.embedder.embed_documents(request.texts)
                    elif isinstance(request, EmbedQueries):
                        result = [self.embedder.embed_query(text) for text in request.texts]
                    else:
                        if conn is None:
                            conn = stack.enter_context(mem.pool.connection())
                        if isinstance(request, Read):
                            with conn.cursor(row_factory=dict_row) as cur:
                                result = cur.execute(request.query, request.params).fetchall()
                        elif isinstance(request, Write):
                            conn.execute(request.query, request.params)
                            result = None
                        elif isinstance(request, Begin):
                            tx = stack.enter_context(
                                mem.transaction(
                                    namespace=self.namespace, actor=self.actor, conn=conn
                                )
                            )
                            result = None
                        elif isinstance(request, Atomic):
                            stack.enter_context(conn.transaction())
                            result = None
                        elif isinstance(request, CommitFacts):
                            result = mem.commit_many(
                                request.facts, namespace=self.namespace, actor=self.actor, conn=conn
                            )
                        elif isinstance(request, CommitFact):
                            result = (
                                tx.commit(request.fact)
                                if tx is not None
                                else mem.commit(request.fact, actor=self.actor, conn=conn)
                            )
                        elif isinstance(request, DeleteFact):
                            result = self._delete(conn, tx, request)
                        else:
                            raise TypeError(f"unknown request {request!r}")
                    request = op.send(result)
            except StopIteration as stop:
                return stop.value
            except psycopg.Error as exc:
                _reraise(exc)

    def _delete(self, conn: psycopg.Connection, tx: Any, request: DeleteFact) -> bool:
        try:
            if tx is None:
                self._memory.delete(
                    request.fact_id,
                    expected_version=request.expected_version,
                    actor=self.actor,
                    conn=conn,
                )
            else:
                with conn.transaction():  # a savepoint: a lost race must not spoil the batch
                    tx.delete(request.fact_id, expected_version=request.expected_version)
            return True
        except (NotFound, ConflictError):
            return False


class AsyncMemStateStore(StoreCore, BaseStore):
    """LangGraph ``BaseStore`` over an AsyncMemoryStore (see MemStateStore).

    Its sync methods may be called from other threads (LangGraph's sync nodes do): they run
    on the event loop the store was first used on.
    """

    def __init__(
        self,
        memory: AsyncMemoryStore,
        *,
        index: IndexConfig | None = None,
        namespace: str | None = None,
        ttl: TTLConfig | None = None,
        actor: str | None = "langgraph",
    ) -> None:
        if not isinstance(memory, AsyncMemoryStore):
            raise TypeError(
                "AsyncMemStateStore takes an AsyncMemoryStore (use MemStateStore for MemoryStore)"
            )
        self._memory = memory
        self.index_config = index
        self._init_core(
            namespace=namespace or memory.namespace or "langgraph",
            embedder=index_embedder(index, memory.embedder),
            fields=(index or {}).get("fields"),
            ttl=ttl,
            actor=actor,
        )
        self._type_ready = False
        self._sweeper: asyncio.Task[None] | None = None
        try:
            self.loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        except RuntimeError:
            self.loop = None

    @property
    def memory(self) -> AsyncMemoryStore:
        """The AsyncMemoryStore holding the items: history, as_of, rollback, mirrors."""
        return self._memory

    @classmethod
    @contextlib.asynccontextmanager
    async def from_conn_string(
        cls,
        conn_string: str,
        *,
        index: IndexConfig | None = None,
        namespace: str | None = None,
        ttl: TTLConfig | None = None,
        embedder: Embedder | None = None,
        max_size: int = 10,
    ) -> AsyncIterator[AsyncMemStateStore]:
        """A store on its own AsyncMemoryStore (connection pool), closed on exit."""
        async with AsyncMemoryStore(conn_string, embedder=embedder, max_size=max_size) as memory:
            store = cls(memory, index=index, namespace=namespace, ttl=ttl)
            try:
                yield store
            finally:
                await store.stop_ttl_sweeper()

    async def setup(self) -> None:
        """Migrate schema memstate (alembic) and register the item fact type."""
        await self._memory.migrate()
        self._type_ready = False
        await self._ensure_type()

    async def _ensure_type(self) -> None:
        if self._type_ready:
            return
        rows = await self._arun(_read_type(self.type_name))
        if not rows or rows[0]["singleton_key"] != "ns_key":
            await self._memory.register_schema(
                self.type_name, None, constraint=Constraint(singleton_key="ns_key")
            )
        self._type_ready = True

    # -- BaseStore ---------------------------------------------------------------------

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        await self._ensure_type()
        return await self._arun(self._op_batch(ops))

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        ops = list(ops)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if self.loop is None or running is self.loop:
            raise asyncio.InvalidStateError(
                "Synchronous calls to AsyncMemStateStore run on its event loop and are only allowed "
                "from another thread once it has one (create or first use it in async code); on the "
                "loop itself use the async methods (aput, aget, asearch, ...)."
            )
        return asyncio.run_coroutine_threadsafe(self.abatch(ops), self.loop).result()

    # -- memstate extras ---------------------------------------------------------------

    async def history(self, namespace: Sequence[str], key: str) -> list[FactVersion]:
        return await self._arun(self._op_history(namespace, key))

    async def fact_id(self, namespace: Sequence[str], key: str) -> UUID | None:
        return await self._arun(self._op_fact_id(namespace, key))

    async def rollback(self, steps: int = 1, *, reason: str | None = None) -> int:
        return await self._memory.rollback(
            steps, namespace=self.namespace, actor=self.actor, reason=reason
        )

    async def revert(self, seq: int, *, reason: str | None = None) -> int:
        return await self._memory.revert(seq, actor=self.actor, reason=reason)

    # -- TTL -----------------------------------------------------------------------------

    async def sweep_ttl(self) -> int:
        return await self._arun(self._op_sweep())

    async def start_ttl_sweeper(
        self, sweep_interval_minutes: float | None = None
    ) -> asyncio.Task[None]:
        """Sweep every `sweep_interval_minutes` (default: the TTLConfig's, else 5) in a task."""
        if self._sweeper is not None and not self._sweeper.done():
            return self._sweeper
        interval = 60.0 * float(
            sweep_interval_minutes or (self.ttl_config or {}).get("sweep_interval_minutes") or 5
        )

        async def loop() -> None:
            while True:
                await asyncio.sleep(interval)
                try:
                    if swept := await self.sweep_ttl():
                        logger.info("swept %d expired items", swept)
                except Exception:  # keep sweeping: the next round may succeed
                    logger.exception("TTL sweep failed")

        self._sweeper = asyncio.create_task(loop(), name="memstate-ttl-sweeper")
        return self._sweeper

    async def stop_ttl_sweeper(self) -> bool:
        if self._sweeper is None or self._sweeper.done():
            return True
        self._sweeper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sweeper
        self._sweeper = None
        return True

    # -- the runner ----------------------------------------------------------------------

    async def _arun(self, op: StoreOp) -> Any:
        """Perform the I/O an operation of store_core asks for, with the AsyncMemoryStore."""
        mem = self._memory
        async with contextlib.AsyncExitStack() as stack:
            conn: psycopg.AsyncConnection | None = None
            tx = None
            result: Any = None
            try:
                request = next(op)
                while True:
                    if isinstance(request, EmbedDocuments):
                        result = await self.embedder.aembed_documents(request.texts)
                    elif isinstance(request, EmbedQueries):
                        result = list(
                            await asyncio.gather(
                                *(self.embedder.aembed_query(t) for t in request.texts)
                            )
                        )
                    else:
                        if conn is None:
                            await mem.open_pool()
                            conn = await stack.enter_async_context(mem.pool.connection())
                        if isinstance(request, Read):
                            async with conn.cursor(row_factory=dict_row) as cur:
                                await cur.execute(request.query, request.params)
                                result = await cur.fetchall()
                        elif isinstance(request, Write):
                            await conn.execute(request.query, request.params)
                            result = None
                        elif isinstance(request, Begin):
                            tx = await stack.enter_async_context(
                                mem.transaction(
                                    namespace=self.namespace, actor=self.actor, conn=conn
                                )
                            )
                            result = None
                        elif isinstance(request, Atomic):
                            await stack.enter_async_context(conn.transaction())
                            result = None
                        elif isinstance(request, CommitFacts):
                            result = await mem.commit_many(
                                request.facts, namespace=self.namespace, actor=self.actor, conn=conn
                            )
                        elif isinstance(request, CommitFact):
                            result = (
                                await tx.commit(request.fact)
                                if tx is not None
                                else await mem.commit(request.fact, actor=self.actor, conn=conn)
                            )
                        elif isinstance(request, DeleteFact):
                            result = await self._adelete(conn, tx, request)
                        else:
                            raise TypeError(f"unknown request {request!r}")
                    request = op.send(result)
            except StopIteration as stop:
                return stop.value
            except psycopg.Error as exc:
                _reraise(exc)

    async def _adelete(self, conn: psycopg.AsyncConnection, tx: Any, request: DeleteFact) -> bool:
        try:
            if tx is None:
                await self._memory.delete(
                    request.fact_id,
                    expected_version=request.expected_version,
                    actor=self.actor,
                    conn=conn,
                )
            else:
                async with conn.transaction():  # a savepoint: a lost race must not spoil the batch
                    await tx.delete(request.fact_id, expected_version=request.expected_version)
            return True
        except (NotFound, ConflictError):
            return False


def _read_type(type_name: str) -> StoreOp:
    rows = yield Read(_TYPE_SQL, {"type": type_name})
    return rows
