"""MemStateStore / AsyncMemStateStore: LangGraph long-term memory whose items are facts.

A drop-in ``BaseStore`` (what ``PostgresStore`` / ``AsyncPostgresStore`` are) built on
MemoryStore / AsyncMemoryStore: every item is a memstate fact, so besides LangGraph's
put/get/delete/search/list_namespaces you get its history, ``rollback``/``revert`` of
bad memories, mirrors to Chroma/Qdrant fed from the outbox, and pgvector search. The
operations live once in ``base.py``, on memstate-pg's one sans-IO protocol; this sync
shell and the async one in ``aio.py`` run them with the memory store's runner::

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
from collections.abc import Iterable, Iterator, Sequence
from uuid import UUID

from langgraph.store.base import BaseStore, IndexConfig, Op, Result, TTLConfig

from ...embedders import Embedder
from ...models import FactVersion
from ...store import MemoryStore
from .aio import AsyncMemStateStore  # the async shell (as langgraph's stores export both)
from .base import LG_TYPE, PoolConfig, StoreBase, memory_options

__all__ = ["LG_TYPE", "AsyncMemStateStore", "MemStateStore"]

logger = logging.getLogger(__name__)


class MemStateStore(StoreBase, BaseStore):
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
        self._init_base(memory, index=index, namespace=namespace, ttl=ttl, actor=actor)
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
        pipeline: bool = False,
        pool_config: PoolConfig | None = None,
    ) -> Iterator[MemStateStore]:
        """A store on its own MemoryStore (connection pool), closed on exit.

        As PostgresStore's: ``pool_config`` sizes the pool (``min_size``, ``max_size``; its
        ``kwargs`` are refused: the memory store sets its connections' options), and
        ``pipeline`` is accepted either way: a batch's writes are always pipelined."""
        options = memory_options(pool_config, pipeline)
        with MemoryStore(
            conn_string, embedder=embedder, **{"max_size": max_size, **options}
        ) as memory:
            store = cls(memory, index=index, namespace=namespace, ttl=ttl)
            try:
                yield store
            finally:
                store.stop_ttl_sweeper()

    def setup(self) -> None:
        """Migrate schema memstate (alembic) and register the item fact type."""
        self._memory.migrate()
        self._type_ready = False
        self._memory._run(self._op_ensure_type())

    # -- BaseStore ---------------------------------------------------------------------

    def batch(self, ops: Iterable[Op]) -> list[Result]:
        return self._memory._run(self._op_batch(ops))

    async def abatch(self, ops: Iterable[Op]) -> list[Result]:
        return await asyncio.to_thread(self.batch, list(ops))

    # -- memstate extras ---------------------------------------------------------------

    def history(self, namespace: Sequence[str], key: str) -> list[FactVersion]:
        """Every version of an item, oldest first, across deletes and re-creations
        (``payload`` is the item's value as written; ``op`` is put/update/delete; ``seq``
        names the commit, for ``revert``)."""
        return self._memory._run(self._op_history(namespace, key))

    def fact_id(self, namespace: Sequence[str], key: str) -> UUID | None:
        """The id of the fact holding a live item."""
        return self._memory._run(self._op_fact_id(namespace, key))

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
        return self._memory._run(self._op_sweep())

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
