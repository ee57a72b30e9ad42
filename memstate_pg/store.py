"""MemoryStore: the synchronous API over a DSN or a psycopg connection pool.

Every method is a one-line call of an operation of memstate_pg._core.ops, performed by the
sync runner (_core/runner.py). A MemoryStore is safe to share between threads: each call borrows a pooled
connection (autocommit; a call that needs several statements opens a transaction).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar
from uuid import UUID

import psycopg
from psycopg_pool import ConnectionPool

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
from ._core.runner import checkout, recorder, run, run_read
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
from .vectors import configure_connection

T = TypeVar("T")
C = TypeVar("C", bound=psycopg.Connection[Any])
AC = TypeVar("AC", bound=psycopg.AsyncConnection[Any])


class MemoryStore(StoreCore):
    """Transactional memory in PostgreSQL.

    `MemoryStore("postgresql://…")` owns a connection pool (closed by `close()` or `with`);
    `MemoryStore(pool)` uses yours and leaves it open. `MemoryStore.embedded()` starts the
    embedded PostgreSQL + pgvector server and migrates it.
    """

    def __init__(
        self,
        dsn_or_pool: str | ConnectionPool,
        *,
        embedder: Embedder | None = None,
        namespace: str | None = None,
        min_size: int = 1,
        max_size: int = 10,
        ef_search: int | None = None,
        connect_timeout: float = 5,
        strict_types: bool = False,
        replicas: Sequence[str | ConnectionPool] = (),
        replica_wait: float = 0.5,
        replica_max_lag: float = 10.0,
        **options: Any,
    ) -> None:
        """`ef_search`: pgvector's hnsw.ef_search for this store's connections (default
        40): higher finds more true neighbours and costs latency. `hnsw_m` and
        `hnsw_ef_construction` (16, 64) shape the index built for a new embedding model.
        `connect_timeout`: seconds one connection attempt may take (unless the DSN sets
        connect_timeout); a store that cannot reach its server says why within about that.
        `strict_types`: refuse fact types nobody registered (default: store them as given).
        `replicas`: DSNs (or pools) of streaming standbys of this server: reads go there,
        read-your-writes (a read waits up to `replica_wait` seconds for the standby to
        replay this store's latest write, or the `after=` token's, else reads the primary);
        a standby down or lagging more than `replica_max_lag` seconds is passed over
        (counted in `status().replicas`)."""
        super().__init__(
            embedder=embedder, namespace=namespace, strict_types=strict_types, **options
        )
        self._health = ConnectHealth(connect_timeout, watched=isinstance(dsn_or_pool, str))
        self._pool, self._owns_pool, self.dsn = make_pool(
            ConnectionPool,
            dsn_or_pool,
            owner="MemoryStore",
            health=self._health,
            configure=self._configure_connection,
            min_size=min_size,
            max_size=max_size,
            ef_search=ef_search,
            connect_timeout=connect_timeout,
            name="memstate",
        )
        self._replicas: ReplicaSet | None = None
        try:
            self._replicas = make_replicas(
                ConnectionPool,
                replicas,
                owner="MemoryStore",
                configure=self._configure_connection,
                min_size=min_size,
                max_size=max_size,
                ef_search=ef_search,
                connect_timeout=connect_timeout,
                wait=replica_wait,
                max_lag=replica_max_lag,
            )
        except BaseException:
            self.close()
            raise
        self._embedded_path: str | None = None

    def _configure_connection(self, conn: psycopg.Connection) -> None:
        """Pool hook: binary vectors, and a store bound to a namespace narrows the database
        side to it too (memstate.namespace, defence in depth under Row Level Security)."""
        configure_connection(conn)
        if self.namespace is not None:
            conn.execute("SELECT set_config('memstate.namespace', %s, false)", [self.namespace])

    # -- lifecycle -----------------------------------------------------------------------

    @classmethod
    def embedded(
        cls,
        path: str | None = None,
        *,
        database: str = "memstate",
        migrate: bool = True,
        **kwargs: Any,
    ) -> MemoryStore:
        """A store on the embedded PostgreSQL + pgvector server (started if needed) under
        `path` (default: see memstate_pg.embedded.default_data_dir), migrated and ready."""
        from . import embedded

        dsn = embedded.start(path, database=database)
        store = cls(dsn, **kwargs)
        store._embedded_path = path
        if migrate:
            store.migrate()
        return store

    def migrate(self) -> None:
        """Create or upgrade schema `memstate` (idempotent; alembic, own version table)."""
        migrations.upgrade(self.dsn)
        if self._owns_pool:  # connections opened before pgvector existed dump vectors as text
            self._pool.drain()
        for replica in self._replicas.replicas if self._replicas else ():
            if replica.owned:
                replica.pool.drain()

    def close(self) -> None:
        if self._owns_pool:
            self._pool.close()
        for replica in self._replicas.replicas if self._replicas else ():
            if replica.owned:
                replica.pool.close()

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pool(self) -> ConnectionPool:
        return self._pool

    @property
    def write_token(self) -> str | None:
        """The newest write of this store as a token (16 hex digits: safe in a cookie)
        that any store's reads take as `after=`, to see that write and everything before
        it; None before the first write, and on a store without replicas."""
        return self._replicas.token if self._replicas else None

    def fence(self) -> str:
        """Note the primary's WAL position now and return it as a write token: every later
        read of this store (and any read given the token as `after=`) sees all that was
        committed before this call, e.g. writes you committed on your own connection."""
        row = run(fence(), pool=self._pool, embedder=self.embedder, health=self._health)
        if self._replicas is not None:
            self._replicas.recorded(row)
        return format_token(commit_lsn(row))

    # -- the runner ----------------------------------------------------------------------

    def _run(self, op: Op[T], conn: psycopg.Connection[Any] | None = None) -> T:
        """Perform an operation's requests (see memstate_pg._core.runner)."""
        return run(
            op,
            pool=self._pool,
            embedder=self.embedder,
            conn=conn,
            health=self._health,
            record=self._replicas if conn is None else None,
        )

    def _read(self, make: Callable[[], Op[T]], after: str | None = None) -> T:
        """Run a read, once more if the connection turns out dead (a server restart); with
        replicas, on one that has replayed this store's writes and `after`."""
        if self._replicas is not None:
            return run_read(
                make,
                pool=self._pool,
                embedder=self.embedder,
                health=self._health,
                replicas=self._replicas,
                after=after,
            )
        if after is not None:
            parse_token(after)  # a malformed token is refused with or without replicas
        return run(make(), pool=self._pool, embedder=self.embedder, again=make, health=self._health)

    def _connection(self, stack: contextlib.ExitStack) -> psycopg.Connection[Any]:
        """A pooled connection for the rest of `stack` (Unavailable with the cause, soon,
        when the server cannot be reached)."""
        return checkout(stack, self._pool, self._health)

    # -- registration --------------------------------------------------------------------

    def register_schema(
        self,
        type: str,
        model: Any = None,
        *,
        constraint: Constraint | None = None,
        text_field: str | None = None,
    ) -> None:
        """Register a fact type: payloads are validated by `model` (a pydantic model) and, by
        shape, by the database; `constraint` is enforced by the database."""
        self._run(self._op_register_schema(type, model, constraint, text_field))

    # -- writes --------------------------------------------------------------------------

    def commit(
        self,
        fact: Fact,
        *,
        namespace: str | None = None,
        session_id: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
        expected_version: int | None = None,
        conn: psycopg.Connection | None = None,
    ) -> UUID:
        """Write one fact in one commit; returns its id. With a singleton key that matches a
        live fact, or `fact.id` of a live fact, this is an update of that fact."""
        return self._run(
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

    def commit_many(
        self,
        facts: Sequence[Fact],
        *,
        namespace: str | None = None,
        session_id: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
        conn: psycopg.Connection | None = None,
    ) -> list[UUID]:
        """Write many facts under one commit seq: one embedding call, one transaction."""
        return self._run(
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

    def update(
        self,
        fact_id: UUID | str,
        changes: dict[str, Any],
        *,
        expected_version: int | None = None,
        actor: str | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
        conn: psycopg.Connection | None = None,
    ) -> int:
        """Change a live fact (`payload`, `content`, `session_id`); returns the new version.
        `expected_version` makes it a compare-and-set: ConflictError on mismatch."""
        return self._run(
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

    def delete(
        self,
        fact_id: UUID | str,
        *,
        expected_version: int | None = None,
        actor: str | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
        conn: psycopg.Connection | None = None,
    ) -> int:
        """Delete a live fact (its history stays); returns the commit seq."""
        return self._run(
            self._op_delete(
                fact_id,
                expected_version=expected_version,
                actor=actor,
                reason=reason,
                idempotency_key=idempotency_key,
            ),
            conn,
        )

    @contextlib.contextmanager
    def transaction(
        self,
        namespace: str | None = None,
        *,
        session_id: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
        conn: psycopg.Connection | None = None,
    ) -> Iterator[Transaction]:
        """Many changes under one commit seq, in one Postgres transaction. `tx.connection`
        runs your own SQL in the same transaction. Leaving the block by an exception rolls
        everything back."""
        try:
            if conn is None:  # the model's registration needs a connection of its own
                self._run(self._op_model(self.embedder.model, self.embedder.dim))
            with contextlib.ExitStack() as stack:
                c = conn if conn is not None else self._connection(stack)
                if conn is None and self._replicas is not None:  # after COMMIT: its LSN
                    stack.push(recorder(c, self._replicas))
                stack.enter_context(c.transaction())
                ns, row = self._run(
                    self._op_open_commit(namespace, session_id, actor, reason, idempotency_key), c
                )
                yield Transaction(self, c, ns, row, session_id)
        except psycopg.Error as exc:  # e.g. raised by COMMIT as the block closes
            err = translate(exc)
            if err is exc:
                raise
            raise err from exc

    # -- undo ----------------------------------------------------------------------------

    def rollback(
        self,
        steps: int = 1,
        *,
        namespace: str | None = None,
        session_id: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> int:
        """Undo the last `steps` commits of the scope still in effect, as a new commit."""
        return self._run(
            self._op_rollback(
                steps, namespace=namespace, session_id=session_id, actor=actor, reason=reason
            )
        )

    def revert(self, seq: int, *, actor: str | None = None, reason: str | None = None) -> int:
        """Undo one commit (reverting a rollback is redo), as a new commit."""
        return self._run(self._op_revert(seq, actor=actor, reason=reason))

    def promote_session(
        self,
        session_id: str,
        *,
        namespace: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> int | None:
        """Make a session's working memory long-term (its facts lose the session_id)."""
        return self._run(
            self._op_session(
                "promote_session", session_id, namespace=namespace, actor=actor, reason=reason
            )
        )

    def discard_session(
        self,
        session_id: str,
        *,
        namespace: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> int | None:
        """Delete a session's working memory (history keeps it)."""
        return self._run(
            self._op_session(
                "discard_session", session_id, namespace=namespace, actor=actor, reason=reason
            )
        )

    # -- reads ---------------------------------------------------------------------------

    def get(self, fact_id: UUID | str, *, after: str | None = None) -> Fact | None:
        """The live fact `fact_id`, or None. `after`: a write token (see `write_token`) the
        read must see; every read method takes one."""
        return self._read(lambda: self._op_get(fact_id), after)

    def query(
        self,
        type: str | None = None,
        filters: dict[str, Any] | None = None,
        *,
        namespace: str | None = None,
        session_id: str | None = None,
        limit: int | None = None,
        after: str | None = None,
    ) -> list[Fact]:
        """Live facts by type and equality filters on payload paths (GIN-indexed `@>`)."""
        return self._read(
            lambda: self._op_query(
                type, filters, namespace=namespace, session_id=session_id, limit=limit
            ),
            after,
        )

    def search(
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
        """Nearest live facts by cosine similarity (score: higher is closer).

        `via`: the name of a registered mirror that can query (Chroma, Qdrant, memory): it
        proposes the candidates, Postgres checks each by (fact_id, version) and pgvector
        replaces the stale and deleted ones, so no ghost and no old version is returned
        while the sync worker lags. The result is then a JudgedHits (a list of Hit with the
        counts of what was corrected); a mirror that is down falls back to pgvector
        (`.fallback`). See memstate_pg/_core/judged.py."""
        if via is not None:
            return self._read(
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
        return self._read(
            lambda: self._op_search(
                query, k, namespace=namespace, type=type, filters=filters, session_id=session_id
            ),
            after,
        )

    def history(
        self,
        fid: UUID | str | None = None,
        *,
        namespace: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
        after: str | None = None,
    ) -> list[FactVersion]:
        """Every version of one fact, or of a namespace, oldest first (`newest_first`:
        the other way round; `limit` keeps the first `limit` in that order)."""
        return self._read(
            lambda: self._op_history(
                fid, namespace=namespace, limit=limit, newest_first=newest_first
            ),
            after,
        )

    def as_of(
        self, point: int | datetime, *, namespace: str | None = None, after: str | None = None
    ) -> list[Fact]:
        """The live facts as they stood right after commit `point` (or at that time)."""
        return self._read(lambda: self._op_as_of(point, namespace=namespace), after)

    def commits(
        self, *, namespace: str | None = None, limit: int = 20, after: str | None = None
    ) -> list[dict[str, Any]]:
        """The latest commits of a namespace, newest first."""
        return self._read(lambda: self._op_commits(namespace=namespace, limit=limit), after)

    def tools(self, **options: Any) -> ToolSet:
        """The registered types as tool definitions for a model (OpenAI and Anthropic
        shapes) and a dispatcher that validates and commits a tool call once per call id
        (see memstate_pg.tools)."""
        from .tools import tools

        return tools(self, **options)

    def status(self, *, after: str | None = None) -> StoreStatus:
        """Per mirror: pending and dead outbox rows, lag, last sync and reconcile (a dict
        by mirror name); with read replicas, `.replicas`: per replica the reads it served
        and the reads it passed to the primary by reason, and `.primary_reads`."""
        mirrors: dict[str, MirrorStatus] = self._read(lambda: self._op_status(), after)
        if self._replicas is None:
            return StoreStatus(mirrors)
        return self._replicas.status(mirrors)

    # -- the embedding-model lifecycle -------------------------------------------------

    def reembed(
        self,
        embedder: Embedder,
        *,
        namespace: str | None = None,
        batch_size: int = 256,
        progress: ProgressFn | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> ReembedReport:
        """Re-embed every live fact of `namespace` with `embedder` (a new embedding model)
        and switch the namespace to that model in one commit: batched (`batch_size` texts per
        embedding call, `progress(done, total)` after each batch), resumable (a killed run
        keeps the vectors it staged), never mixing models (after the switch, writes and
        searches of the namespace with another model are refused). Each fact gets a new
        version carrying the new model; history keeps the model of every version. Then this
        store embeds with `embedder`. A mirror holds one model: register a new one (model =
        the new embedder's) to carry the switched namespace. A rollback to before the switch
        is refused (it would bring the old model's vectors back): re-embed with the old
        embedder to go back."""
        return self._run(
            self._op_reembed(
                embedder,
                namespace=namespace,
                batch_size=batch_size,
                progress=progress,
                actor=actor,
                reason=reason,
            )
        )

    # -- retention -------------------------------------------------------------------------

    def compact(
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
        """Prune history older than `older_than` (a timedelta or '30d', '12h', ...) while
        keeping the current state, everything newer, the state at the window's start and at
        least `keep_versions` versions per fact; remove the commits left without versions.
        `namespace=None`: this store's namespace if it is bound to one, else every namespace.
        Batched (each batch its own short transaction, `progress(done, total)` after each),
        resumable, online. Afterwards as_of/rollback/revert before the namespace's horizon
        raise HistoryCompacted. `dry_run`: change nothing, report what would go. Owner only
        (see memstate_pg.compaction and README "Retention")."""
        from .compaction import compact

        return self._run(
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

    # -- mirrors -------------------------------------------------------------------------

    def add_mirror(
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
        """Register `mirror` as `name` (default: its kind) and keep it for this process.

        From now on every change of a fact in `namespaces` / `types` (None: all) is
        enqueued for it; `metadata_fields` are the payload fields its points carry (dotted
        paths reach into nested objects). The mirror holds one vector space: it takes the
        versions of `model` only (default: this store's embedder model), so a model switch
        (reembed) is a new mirror; `model="*"` takes every model (one vector store that
        accepts any dimension). Re-registering a name updates its settings. With
        `backfill`, the live facts already in scope are enqueued too (batched, resumable;
        `progress(scanned, total)`).
        """
        name = self._run(
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
            self.backfill_mirror(name, progress=progress)

    def backfill_mirror(
        self, name: str, *, progress: ProgressFn | None = None, page_size: int = ops.DEFAULT_PAGE
    ) -> int:
        """Enqueue the live facts in the mirror's scope that have no pending row yet;
        returns how many rows were enqueued."""
        return self._run(ops.backfill(name, page_size=page_size, progress=progress))

    def remove_mirror(self, name: str) -> None:
        """Unregister a mirror: its pending rows go too. The store behind it is untouched."""
        self._run(ops.remove_mirror(name))
        self._mirrors.pop(name, None)

    def mirror(self, name: str) -> Mirror:
        """The Mirror object registered as `name`, rebuilt from the registry's options when
        this process has none (a server URL or a path can be reached from anywhere)."""
        found = self._held_mirror(name)
        if found is None:
            found = self._mirrors[name] = ops.rebuild_mirror(
                name, self._run(ops.mirror_config(name))
            )
        return found

    def mirrors(self) -> dict[str, Mirror]:
        """The Mirror objects this process holds, by registered name."""
        return dict(self._mirrors)

    def use_mirror(self, name: str, mirror: Mirror) -> None:
        """Use `mirror` for `name`, registered earlier (maybe by another process), without
        touching its registry row: how a worker process gets its own client object."""
        self._run(ops.check_mirror_kind(name, mirror))
        self._mirrors[name] = mirror

    def reconcile(
        self,
        name: str,
        repair: bool = True,
        *,
        page_size: int = 1000,
        progress: ProgressFn | None = None,
    ) -> ReconcileReport:
        """Compare mirror `name` with Postgres by (fact_id, version) in bounded memory and,
        with `repair`, upsert missing and stale points and delete ghosts. The report is also
        stored for status(). See memstate_pg/sync/reconcile.py."""
        from .sync.reconcile import reconcile

        mirror = self.mirror(name)
        report = reconcile(
            self._pool.connection,
            name,
            mirror,
            repair=repair,
            page_size=page_size,
            progress=progress,
        )
        if self._replicas is not None:  # its stored report: visible to this store's status()
            self.fence()
        return report

    def requeue(self, name: str, *, dead_only: bool = True) -> int:
        """Give dead rows (and, with dead_only=False, rows in backoff) a fresh start;
        returns how many rows were requeued."""
        return self._run(ops.requeue(name, dead_only=dead_only))

    def dead_letters(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        """The dead rows of a mirror, oldest first, with their last error."""
        return self._run(ops.dead_rows(name, limit))


class Transaction(TransactionBase["MemoryStore", psycopg.Connection[Any]]):
    """One open commit: every change made through it shares one commit seq;
    `connection` runs your own SQL in the same Postgres transaction."""

    def commit(
        self, fact: Fact, *, session_id: str | None = None, expected_version: int | None = None
    ) -> UUID:
        if self.replayed:
            return self._replayed()
        return self._store._run(
            self._store._op_commit(
                fact,
                namespace=self.namespace,
                session_id=session_id or self.session_id,
                expected_version=expected_version,
            ),
            self._conn,
        )

    def update(
        self, fact_id: UUID | str, changes: dict[str, Any], *, expected_version: int | None = None
    ) -> int:
        if self.replayed:
            self._replayed()
            return 0
        return self._store._run(
            self._store._op_update(fact_id, changes, expected_version=expected_version), self._conn
        )

    def delete(self, fact_id: UUID | str, *, expected_version: int | None = None) -> int:
        if self.replayed:
            self._replayed()
            return self.seq
        return self._store._run(
            self._store._op_delete(fact_id, expected_version=expected_version), self._conn
        )
