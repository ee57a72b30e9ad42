"""AsyncMemoryStore: the same API as MemoryStore, as coroutines over psycopg's async API.

Every method runs the same operation of core.py as the sync store; only the runner
differs. A sync embedder runs in a worker thread (never on the event loop); an embedder
with `aembed` is awaited.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

import psycopg
from psycopg_pool import AsyncConnectionPool

from . import migrations
from ._core import judged, ops
from ._core.ops import ProgressFn, StoreCore, TransactionBase
from ._core.pools import ConnectHealth, make_pool
from ._core.protocol import Op
from ._core.replicas import (
    ReplicaSet,
    StoreStatus,
    commit_lsn,
    fence,
    format_token,
    make_replicas,
    parse_token,
)
from ._core.runner import acheckout, arecorder, arun_read, run_async
from .embedders import Embedder
from .errors import translate
from .mirrors.base import Mirror
from .models import (
    Constraint,
    Fact,
    FactVersion,
    Hit,
    MirrorStatus,
    ReconcileReport,
    ReembedReport,
)

if TYPE_CHECKING:
    from datetime import timedelta

    from .compaction import CompactReport
    from .tools import ToolSet
from .vectors import aconfigure_connection

T = TypeVar("T")


class AsyncMemoryStore(StoreCore):
    """Transactional memory in PostgreSQL, for asyncio.

    Create with `await AsyncMemoryStore.open(dsn)` (or construct and `await store.open_pool()`),
    close with `await store.close()` or `async with`.
    """

    def __init__(
        self,
        dsn_or_pool: str | AsyncConnectionPool,
        *,
        embedder: Embedder | None = None,
        namespace: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        ef_search: int | None = None,
        connect_timeout: float = 5,
        strict_types: bool = False,
        replicas: Sequence[str | AsyncConnectionPool] = (),
        replica_wait: float = 0.5,
        replica_max_lag: float = 10.0,
        **options: Any,
    ) -> None:
        """The options of MemoryStore (`replicas`: streaming standbys for reads, with
        read-your-writes; see there)."""
        super().__init__(
            embedder=embedder, namespace=namespace, strict_types=strict_types, **options
        )
        self._health = ConnectHealth(connect_timeout, watched=isinstance(dsn_or_pool, str))
        self._pool, self._owns_pool, self.dsn = make_pool(
            AsyncConnectionPool,
            dsn_or_pool,
            owner="AsyncMemoryStore",
            health=self._health,
            configure=self._configure_connection,
            min_size=min_size,
            max_size=max_size,
            ef_search=ef_search,
            connect_timeout=connect_timeout,
            name="memstate-async",
        )
        self._replicas: ReplicaSet | None = make_replicas(
            AsyncConnectionPool,
            replicas,
            owner="AsyncMemoryStore",
            configure=self._configure_connection,
            min_size=min_size,
            max_size=max_size,
            ef_search=ef_search,
            connect_timeout=connect_timeout,
            wait=replica_wait,
            max_lag=replica_max_lag,
        )

    async def _configure_connection(self, conn: psycopg.AsyncConnection) -> None:
        """Pool hook: binary vectors, and the bound namespace (see MemoryStore)."""
        await aconfigure_connection(conn)
        if self.namespace is not None:
            await conn.execute(
                "SELECT set_config('memstate.namespace', %s, false)", [self.namespace]
            )

    @classmethod
    async def open(cls, dsn_or_pool: str | AsyncConnectionPool, **kwargs: Any) -> AsyncMemoryStore:
        store = cls(dsn_or_pool, **kwargs)
        await store.open_pool()
        return store

    @classmethod
    async def embedded(
        cls,
        path: str | None = None,
        *,
        database: str = "memstate",
        migrate: bool = True,
        **kwargs: Any,
    ) -> AsyncMemoryStore:
        from . import embedded

        dsn = await asyncio.to_thread(embedded.start, path, database=database)
        store = await cls.open(dsn, **kwargs)
        if migrate:
            await store.migrate()
        return store

    async def open_pool(self) -> None:
        if self._owns_pool and self._pool.closed:
            await self._pool.open()
        for replica in self._replicas.replicas if self._replicas else ():
            if replica.owned and replica.pool.closed:
                await replica.pool.open()

    async def migrate(self) -> None:
        await asyncio.to_thread(migrations.upgrade, self.dsn)
        if self._owns_pool and not self._pool.closed:
            await self._pool.drain()
        for replica in self._replicas.replicas if self._replicas else ():
            if replica.owned and not replica.pool.closed:
                await replica.pool.drain()

    async def close(self) -> None:
        if self._owns_pool:
            await self._pool.close()
        for replica in self._replicas.replicas if self._replicas else ():
            if replica.owned:
                await replica.pool.close()

    async def __aenter__(self) -> AsyncMemoryStore:
        await self.open_pool()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    @property
    def pool(self) -> AsyncConnectionPool:
        return self._pool

    @property
    def write_token(self) -> str | None:
        """The newest write of this store as a token for `after=` (see MemoryStore)."""
        return self._replicas.token if self._replicas else None

    async def fence(self) -> str:
        """Note the primary's WAL position now and return it as a write token: every later
        read of this store (and any read given the token as `after=`) sees all that was
        committed before this call, e.g. writes you committed on your own connection."""
        row = await run_async(
            fence(),
            pool=self._pool,
            embedder=self.embedder,
            open_pool=self._owns_pool,
            health=self._health,
        )
        if self._replicas is not None:
            self._replicas.recorded(row)
        return format_token(commit_lsn(row))

    async def _run(self, op: Op[T], conn: psycopg.AsyncConnection | None = None) -> T:
        """Perform an operation's requests (see memstate_pg._core.runner)."""
        return await run_async(
            op,
            pool=self._pool,
            embedder=self.embedder,
            conn=conn,
            open_pool=self._owns_pool,
            health=self._health,
            record=self._replicas if conn is None else None,
        )

    async def _read(self, make: Callable[[], Op[T]], after: str | None = None) -> T:
        if self._replicas is not None:
            return await arun_read(
                make,
                pool=self._pool,
                embedder=self.embedder,
                health=self._health,
                replicas=self._replicas,
                after=after,
                open_pool=self._owns_pool,
            )
        if after is not None:
            parse_token(after)  # a malformed token is refused with or without replicas
        return await run_async(
            make(),
            pool=self._pool,
            embedder=self.embedder,
            open_pool=self._owns_pool,
            again=make,
            health=self._health,
        )

    async def _connection(self, stack: contextlib.AsyncExitStack) -> psycopg.AsyncConnection[Any]:
        await self.open_pool()
        return await acheckout(stack, self._pool, self._health)

    async def register_schema(
        self,
        type: str,
        model: Any = None,
        *,
        constraint: Constraint | None = None,
        text_field: str | None = None,
    ) -> None:
        await self._run(self._op_register_schema(type, model, constraint, text_field))

    async def commit(
        self,
        fact: Fact,
        *,
        namespace: str | None = None,
        session_id: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
        expected_version: int | None = None,
        conn: psycopg.AsyncConnection | None = None,
    ) -> UUID:
        return await self._run(
            self._op_commit(
                fact,
                namespace=namespace,
                session_id=session_id,
                actor=actor,
                reason=reason,
                idempotency_key=idempotency_key,
                expected_version=expected_version,
            ),
            conn,
        )

    async def commit_many(
        self,
        facts: Sequence[Fact],
        *,
        namespace: str | None = None,
        session_id: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
        conn: psycopg.AsyncConnection | None = None,
    ) -> list[UUID]:
        return await self._run(
            self._op_commit_many(
                facts,
                namespace=namespace,
                session_id=session_id,
                actor=actor,
                reason=reason,
                idempotency_key=idempotency_key,
            ),
            conn,
        )

    async def update(
        self,
        fact_id: UUID | str,
        changes: dict[str, Any],
        *,
        expected_version: int | None = None,
        actor: str | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
        conn: psycopg.AsyncConnection | None = None,
    ) -> int:
        return await self._run(
            self._op_update(
                fact_id,
                changes,
                expected_version=expected_version,
                actor=actor,
                reason=reason,
                idempotency_key=idempotency_key,
            ),
            conn,
        )

    async def delete(
        self,
        fact_id: UUID | str,
        *,
        expected_version: int | None = None,
        actor: str | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
        conn: psycopg.AsyncConnection | None = None,
    ) -> int:
        return await self._run(
            self._op_delete(
                fact_id,
                expected_version=expected_version,
                actor=actor,
                reason=reason,
                idempotency_key=idempotency_key,
            ),
            conn,
        )

    @contextlib.asynccontextmanager
    async def transaction(
        self,
        namespace: str | None = None,
        *,
        session_id: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
        conn: psycopg.AsyncConnection | None = None,
    ) -> AsyncIterator[AsyncTransaction]:
        try:
            if conn is None:  # the model's registration needs a connection of its own
                await self._run(self._op_model(self.embedder.model, self.embedder.dim))
            async with contextlib.AsyncExitStack() as stack:
                c = conn if conn is not None else await self._connection(stack)
                if conn is None and self._replicas is not None:  # after COMMIT: its LSN
                    stack.push_async_exit(arecorder(c, self._replicas))
                await stack.enter_async_context(c.transaction())
                ns, row = await self._run(
                    self._op_open_commit(namespace, session_id, actor, reason, idempotency_key),
                    c,
                )
                yield AsyncTransaction(self, c, ns, row, session_id)
        except psycopg.Error as exc:  # e.g. raised by COMMIT as the block closes
            err = translate(exc)
            if err is exc:
                raise
            raise err from exc

    async def rollback(
        self,
        steps: int = 1,
        *,
        namespace: str | None = None,
        session_id: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> int:
        return await self._run(
            self._op_rollback(
                steps, namespace=namespace, session_id=session_id, actor=actor, reason=reason
            )
        )

    async def revert(self, seq: int, *, actor: str | None = None, reason: str | None = None) -> int:
        return await self._run(self._op_revert(seq, actor=actor, reason=reason))

    async def promote_session(
        self,
        session_id: str,
        *,
        namespace: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> int | None:
        return await self._run(
            self._op_session(
                "promote_session", session_id, namespace=namespace, actor=actor, reason=reason
            )
        )

    async def discard_session(
        self,
        session_id: str,
        *,
        namespace: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> int | None:
        return await self._run(
            self._op_session(
                "discard_session", session_id, namespace=namespace, actor=actor, reason=reason
            )
        )

    async def get(self, fact_id: UUID | str, *, after: str | None = None) -> Fact | None:
        return await self._read(lambda: self._op_get(fact_id), after)

    async def query(
        self,
        type: str | None = None,
        filters: dict[str, Any] | None = None,
        *,
        namespace: str | None = None,
        session_id: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> list[Fact]:
        return await self._read(
            lambda: self._op_query(
                type, filters, namespace=namespace, session_id=session_id, limit=limit
            ),
            after,
        )

    async def search(
        self,
        query: str | Sequence[float],
        k: int = 5,
        *,
        namespace: str | None = None,
        type: str | None = None,
        filters: dict[str, Any] | None = None,
        session_id: str | None = None,
        via: str | None = None,
        after: str | None = None,
    ) -> list[Hit]:
        """See MemoryStore.search (`via`: search served by a mirror, judged by Postgres)."""
        if via is not None:
            return await self._read(
                lambda: judged.search_via(
                    self,
                    via,
                    query,
                    k,
                    namespace=namespace,
                    type=type,
                    filters=filters,
                    session_id=session_id,
                ),
                after,
            )
        return await self._read(
            lambda: self._op_search(
                query, k, namespace=namespace, type=type, filters=filters, session_id=session_id
            ),
            after,
        )

    async def history(
        self,
        fid: UUID | str | None = None,
        *,
        namespace: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
        after: str | None = None,
    ) -> list[FactVersion]:
        return await self._read(
            lambda: self._op_history(
                fid, namespace=namespace, limit=limit, newest_first=newest_first
            ),
            after,
        )

    async def as_of(
        self, point: int | datetime, *, namespace: str | None = None, after: str | None = None
    ) -> list[Fact]:
        return await self._read(lambda: self._op_as_of(point, namespace=namespace), after)

    async def commits(
        self, *, namespace: str | None = None, limit: int = 20, after: str | None = None
    ) -> list[dict[str, Any]]:
        return await self._read(lambda: self._op_commits(namespace=namespace, limit=limit), after)

    async def tools(self, **options: Any) -> ToolSet:
        from .tools import atools

        return await atools(self, **options)

    async def status(self, *, after: str | None = None) -> StoreStatus:
        """See MemoryStore.status (`.replicas`: what each read replica did)."""
        mirrors: dict[str, MirrorStatus] = await self._read(lambda: self._op_status(), after)
        if self._replicas is None:
            return StoreStatus(mirrors)
        return self._replicas.status(mirrors)

    # -- the embedding-model lifecycle -------------------------------------------------

    async def reembed(
        self,
        embedder: Embedder,
        *,
        namespace: str | None = None,
        batch_size: int = 256,
        progress: ProgressFn | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> ReembedReport:
        return await self._run(
            self._op_reembed(
                embedder,
                namespace=namespace,
                batch_size=batch_size,
                progress=progress,
                actor=actor,
                reason=reason,
            )
        )

    # -- retention (see MemoryStore.compact) ------------------------------------------------

    async def compact(
        self,
        *,
        keep_versions: int,
        older_than: timedelta | str,
        namespace: str | None = None,
        batch_size: int = 2000,
        dry_run: bool = False,
        drop_dead_outbox: bool = False,
        progress: ProgressFn | None = None,
    ) -> CompactReport:
        from .compaction import compact

        return await self._run(
            compact(
                self,
                keep_versions=keep_versions,
                older_than=older_than,
                namespace=namespace,
                batch_size=batch_size,
                dry_run=dry_run,
                drop_dead_outbox=drop_dead_outbox,
                progress=progress,
            )
        )

    # -- mirrors (see MemoryStore) ----------------------------------------------------------

    async def add_mirror(
        self,
        mirror: Mirror,
        name: str | None = None,
        *,
        metadata_fields: Sequence[str] = (),
        namespaces: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        model: str | None = None,
        backfill: bool = True,
        progress: ProgressFn | None = None,
    ) -> None:
        name = await self._run(
            ops.register_mirror(
                mirror,
                name,
                metadata_fields=metadata_fields,
                namespaces=namespaces,
                types=types,
                model=self.embedder.model if model is None else model,
            )
        )
        self._mirrors[name] = mirror
        if backfill:
            await self.backfill_mirror(name, progress=progress)

    async def backfill_mirror(
        self, name: str, *, progress: ProgressFn | None = None, page_size: int = ops.DEFAULT_PAGE
    ) -> int:
        return await self._run(ops.backfill(name, page_size=page_size, progress=progress))

    async def remove_mirror(self, name: str) -> None:
        await self._run(ops.remove_mirror(name))
        self._mirrors.pop(name, None)

    async def mirror(self, name: str) -> Mirror:
        found = self._held_mirror(name)
        if found is None:
            config = await self._run(ops.mirror_config(name))
            found = self._mirrors[name] = await asyncio.to_thread(ops.rebuild_mirror, name, config)
        return found

    def mirrors(self) -> dict[str, Mirror]:
        return dict(self._mirrors)

    async def use_mirror(self, name: str, mirror: Mirror) -> None:
        await self._run(ops.check_mirror_kind(name, mirror))
        self._mirrors[name] = mirror

    async def reconcile(
        self,
        name: str,
        repair: bool = True,
        *,
        page_size: int = 1000,
        progress: ProgressFn | None = None,
    ) -> ReconcileReport:
        """Runs in a thread (mirror clients block) on connections of its own."""
        from .sync.reconcile import reconcile

        mirror = await self.mirror(name)
        report = await asyncio.to_thread(
            reconcile,
            lambda: psycopg.connect(self.dsn, autocommit=True),
            name,
            mirror,
            repair=repair,
            page_size=page_size,
            progress=progress,
        )
        if self._replicas is not None:  # its stored report: visible to this store's status()
            await self.fence()
        return report

    async def requeue(self, name: str, *, dead_only: bool = True) -> int:
        return await self._run(ops.requeue(name, dead_only=dead_only))

    async def dead_letters(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        return await self._run(ops.dead_rows(name, limit))


class AsyncTransaction(TransactionBase["AsyncMemoryStore", psycopg.AsyncConnection[Any]]):
    """One open commit of an AsyncMemoryStore (see store.Transaction)."""

    async def commit(
        self, fact: Fact, *, session_id: str | None = None, expected_version: int | None = None
    ) -> UUID:
        if self.replayed:
            return self._replayed()
        return await self._store._run(
            self._store._op_commit(
                fact,
                namespace=self.namespace,
                session_id=session_id or self.session_id,
                expected_version=expected_version,
            ),
            self._conn,
        )

    async def update(
        self, fact_id: UUID | str, changes: dict[str, Any], *, expected_version: int | None = None
    ) -> int:
        if self.replayed:
            self._replayed()
            return 0
        return await self._store._run(
            self._store._op_update(fact_id, changes, expected_version=expected_version), self._conn
        )

    async def delete(self, fact_id: UUID | str, *, expected_version: int | None = None) -> int:
        if self.replayed:
            self._replayed()
            return self.seq
        return await self._store._run(
            self._store._op_delete(fact_id, expected_version=expected_version), self._conn
        )
