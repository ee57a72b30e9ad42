"""AsyncMemStateStore: the asyncio shell of MemStateStore (see ``__init__.py``).

The same operations (``base.py``), run by the AsyncMemoryStore's runner: psycopg's async
API, LangGraph's async embeddings (``aembed_documents`` / ``aembed_query``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Iterable, Sequence
from uuid import UUID

from langgraph.store.base import BaseStore, IndexConfig, Op, Result, TTLConfig

from ...aio import AsyncMemoryStore
from ...embedders import Embedder
from ...models import FactVersion
from .base import PoolConfig, StoreBase, memory_options

__all__ = ["AsyncMemStateStore"]

logger = logging.getLogger(__name__)


class AsyncMemStateStore(StoreBase, BaseStore):
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
        self._init_base(memory, index=index, namespace=namespace, ttl=ttl, actor=actor)
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
        pipeline: bool = False,
        pool_config: PoolConfig | None = None,
    ) -> AsyncIterator[AsyncMemStateStore]:
        """A store on its own AsyncMemoryStore (connection pool), closed on exit;
        ``pool_config`` and ``pipeline`` as in MemStateStore.from_conn_string."""
        options = memory_options(pool_config, pipeline)
        async with AsyncMemoryStore(
            conn_string, embedder=embedder, **{"max_size": max_size, **options}
        ) as memory:
            store = cls(memory, index=index, namespace=namespace, ttl=ttl)
            try:
                yield store
            finally:
                await store.stop_ttl_sweeper()

    async def setup(self) -> None:
        """Migrate schema memstate (alembic) and register the item fact type."""
        await self._memory.migrate()
        self._type_ready = False
        await self._memory._run(self._op_ensure_type())

    # -- BaseStore ---------------------------------------------------------------------

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        if self.loop is None:
            self.loop = asyncio.get_running_loop()
        return await self._memory._run(self._op_batch(ops))

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
        return await self._memory._run(self._op_history(namespace, key))

    async def fact_id(self, namespace: Sequence[str], key: str) -> UUID | None:
        return await self._memory._run(self._op_fact_id(namespace, key))

    async def rollback(self, steps: int = 1, *, reason: str | None = None) -> int:
        return await self._memory.rollback(
            steps, namespace=self.namespace, actor=self.actor, reason=reason
        )

    async def revert(self, seq: int, *, reason: str | None = None) -> int:
        return await self._memory.revert(seq, actor=self.actor, reason=reason)

    # -- TTL -----------------------------------------------------------------------------

    async def sweep_ttl(self) -> int:
        return await self._memory._run(self._op_sweep())

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
