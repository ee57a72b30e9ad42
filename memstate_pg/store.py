"""MemoryStore: the synchronous API over a DSN or a psycopg connection pool.

Every method is a one-line call of an operation in core.py, run by `_run` with psycopg's
sync API. A MemoryStore is safe to share between threads: each call borrows a pooled
connection (autocommit; a call that needs several statements opens a transaction).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from . import migrations
from .core import Begin, Embed, Exec, ExecMany, Op, StoreCore, TransactionBase, translate
from .embedders import Embedder
from .models import Constraint, Fact, FactVersion, Hit, MirrorStatus
from .sync.mirrors_api import MirrorsMixin
from .vectors import configure_connection


class MemoryStore(MirrorsMixin, StoreCore):
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
        **options: Any,
    ) -> None:
        """`ef_search`: pgvector's hnsw.ef_search for this store's connections (default
        40): higher finds more true neighbours and costs latency. `hnsw_m` and
        `hnsw_ef_construction` (16, 64) shape the index built for a new embedding model."""
        super().__init__(embedder=embedder, namespace=namespace, **options)
        if isinstance(dsn_or_pool, ConnectionPool):
            self._pool = dsn_or_pool
            self._owns_pool = False
            self.dsn = dsn_or_pool.conninfo
        elif isinstance(dsn_or_pool, str):
            self.dsn = dsn_or_pool
            self._pool = ConnectionPool(
                dsn_or_pool,
                min_size=min_size,
                max_size=max_size,
                kwargs=_connection_kwargs(ef_search),
                configure=self._configure_connection,
                check=_check_if_idle,  # no dead connection handed out after a restart
                reset=_mark_returned,
                open=True,
                name="memstate",
            )
            self._owns_pool = True
        else:
            raise TypeError("MemoryStore takes a DSN string or a psycopg_pool.ConnectionPool")
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

    def close(self) -> None:
        if self._owns_pool:
            self._pool.close()

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def pool(self) -> ConnectionPool:
        return self._pool

    # -- the runner ----------------------------------------------------------------------

    def _run(self, op: Op, conn: psycopg.Connection | None = None) -> Any:
        """Perform the I/O an operation asks for; see core.py. Database errors, including
        those raised by COMMIT when the block closes, come out as MemStateError."""
        try:
            with contextlib.ExitStack() as stack:
                c = conn
                in_tx = False
                try:
                    request = next(op)
                    while True:
                        if isinstance(request, Embed):
                            result = self.embedder.embed(request.texts)
                        else:
                            if c is None:
                                c = stack.enter_context(self._pool.connection())
                            if isinstance(request, Begin):
                                if not in_tx:
                                    stack.enter_context(c.transaction())
                                    in_tx = True
                                result = None
                            elif getattr(request, "autonomous", False) and (
                                conn is not None or in_tx
                            ):
                                with self._pool.connection() as own:
                                    result = _execute(own, request)
                            else:
                                result = _execute(c, request)
                        request = op.send(result)
                except StopIteration as stop:
                    value = stop.value
            return value
        except (psycopg.Error, UnicodeEncodeError) as exc:  # a lone surrogate psycopg cannot send
            err = translate(exc)
            if err is exc:
                raise
            raise err from exc

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
            with contextlib.ExitStack() as stack:
                c = conn if conn is not None else stack.enter_context(self._pool.connection())
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

    def get(self, fact_id: UUID | str) -> Fact | None:
        return self._run(self._op_get(fact_id))

    def query(
        self,
        type: str | None = None,
        filters: dict[str, Any] | None = None,
        *,
        namespace: str | None = None,
        session_id: str | None = None,
        limit: int | None = None,
    ) -> list[Fact]:
        """Live facts by type and equality filters on payload paths (GIN-indexed `@>`)."""
        return self._run(
            self._op_query(type, filters, namespace=namespace, session_id=session_id, limit=limit)
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
    ) -> list[Hit]:
        """Nearest live facts by cosine similarity (score: higher is closer)."""
        return self._run(
            self._op_search(
                query, k, namespace=namespace, type=type, filters=filters, session_id=session_id
            )
        )

    def history(
        self,
        fid: UUID | str | None = None,
        *,
        namespace: str | None = None,
        limit: int | None = None,
    ) -> list[FactVersion]:
        """Every version of one fact, or of a namespace, oldest first."""
        return self._run(self._op_history(fid, namespace=namespace, limit=limit))

    def as_of(self, point: int | datetime, *, namespace: str | None = None) -> list[Fact]:
        """The live facts as they stood right after commit `point` (or at that time)."""
        return self._run(self._op_as_of(point, namespace=namespace))

    def commits(self, *, namespace: str | None = None, limit: int = 20) -> list[dict[str, Any]]:
        """The latest commits of a namespace, newest first."""
        return self._run(self._op_commits(namespace=namespace, limit=limit))

    def status(self) -> dict[str, MirrorStatus]:
        """Per mirror: pending and dead outbox rows, lag, last sync and reconcile."""
        return self._run(self._op_status())


# A pooled connection that sat idle may have died with the server (restart, failover):
# check it before handing it out. One that was in use a moment ago is alive, and checking
# every checkout would cost a round trip per commit (~10% of single-commit throughput).
IDLE_CHECK_AFTER = 1.0  # seconds


def _mark_returned(conn: psycopg.Connection) -> None:
    conn._memstate_returned = time.monotonic()  # type: ignore[attr-defined]


def _check_if_idle(conn: psycopg.Connection) -> None:
    if time.monotonic() - getattr(conn, "_memstate_returned", 0.0) > IDLE_CHECK_AFTER:
        ConnectionPool.check_connection(conn)


def _connection_kwargs(ef_search: int | None) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"autocommit": True}
    if ef_search is not None:
        if not isinstance(ef_search, int) or not 1 <= ef_search <= 1000:
            raise ValueError("ef_search must be an int between 1 and 1000")
        kwargs["options"] = f"-c hnsw.ef_search={ef_search}"
    return kwargs


class Transaction(TransactionBase):
    """One open commit: every change made through it shares one commit seq;
    `connection` runs your own SQL in the same Postgres transaction."""

    _conn: psycopg.Connection

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


def _execute(conn: psycopg.Connection, request: Exec | ExecMany) -> Any:
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
