"""The mirror methods of MemoryStore and AsyncMemoryStore, as mixins.

``class MemoryStore(MirrorsMixin, StoreCore)`` gains ``add_mirror``, ``remove_mirror``,
``mirror``, ``mirrors``, ``use_mirror``, ``backfill_mirror``, ``reconcile``, ``requeue`` and
``dead_letters``; ``AsyncMirrorsMixin`` gives AsyncMemoryStore the same names as
coroutines. Registry and backfill statements are core-style operations (backfill.py) run
by the store's own ``_run``; reconciliation talks to a mirror client, which is blocking,
so the async store runs it in a thread on a connection of its own.

Mirror objects live in the process (``self._mirrors``, by registered name); the registry
row in memstate.mirrors is what the outbox trigger and every other process see. A process
that did not register a mirror itself can still get it by name when its store is
reachable from anywhere (a server URL or a path): ``mirror(name)`` rebuilds it from the
options ``Mirror.describe()`` stored at registration.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import psycopg
from psycopg_pool import ConnectionPool

from ..errors import NotFound, ValidationFailed
from ..mirrors.base import Mirror
from ..models import ReconcileReport
from . import backfill as ops
from .reconcile import reconcile as _reconcile
from .specs import mirror_from_options

__all__ = ["AsyncMirrorsMixin", "MirrorsMixin"]

ProgressFn = Callable[[int, "int | None"], None]


def _registry(store: Any) -> dict[str, Mirror]:
    found = store.__dict__.get("_mirrors")
    if found is None:
        found = store.__dict__["_mirrors"] = {}
    return found


def _rebuild(name: str, config: Any) -> Mirror:
    mirror = mirror_from_options(config.kind, config.options)
    if mirror is None:
        raise NotFound(
            f"mirror {name!r} ({config.kind}) has no Mirror object in this process and cannot be "
            "rebuilt from its options: add_mirror(mirror, name) here, or pass it to SyncWorker"
        )
    return mirror


def _check_kind(name: str, config: Any, mirror: Mirror) -> None:
    if not isinstance(mirror, Mirror):
        raise ValidationFailed(f"use_mirror() takes a Mirror, not {type(mirror).__name__}")
    if config.kind != mirror.kind:
        raise ValidationFailed(f"mirror {name!r} is registered as {config.kind}, not {mirror.kind}")


@contextlib.contextmanager
def _dsn_connection(dsn: str) -> Iterator[psycopg.Connection]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        yield conn


class MirrorsMixin:
    """Mirror registration, backfill, reconciliation and requeueing (sync store)."""

    dsn: str
    _run: Callable[..., Any]

    def add_mirror(
        self,
        mirror: Mirror,
        name: str | None = None,
        *,
        metadata_fields: Sequence[str] = (),
        namespaces: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        backfill: bool = True,
        progress: ProgressFn | None = None,
    ) -> None:
        """Register `mirror` as `name` (default: its kind) and keep it for this process.

        From now on every change of a fact in `namespaces` / `types` (None: all) is
        enqueued for it; `metadata_fields` are the payload fields its points carry (dotted
        paths reach into nested objects). Re-registering a name updates its settings. With
        `backfill`, the live facts already in scope are enqueued too (batched, resumable;
        `progress(scanned, total)`).
        """
        name = mirror.kind if name is None else name
        self._run(
            ops.op_register_mirror(
                mirror, name, metadata_fields=metadata_fields, namespaces=namespaces, types=types
            )
        )
        _registry(self)[name] = mirror
        if backfill:
            self.backfill_mirror(name, progress=progress)

    def backfill_mirror(
        self, name: str, *, progress: ProgressFn | None = None, page_size: int = ops.DEFAULT_PAGE
    ) -> int:
        """Enqueue the live facts in the mirror's scope that have no pending row yet;
        returns how many rows were enqueued."""
        return self._run(ops.op_backfill(name, page_size=page_size, progress=progress))

    def remove_mirror(self, name: str) -> None:
        """Unregister a mirror: its pending rows go too. The store behind it is untouched."""
        self._run(ops.op_remove_mirror(name))
        _registry(self).pop(name, None)

    def mirror(self, name: str) -> Mirror:
        """The Mirror object registered as `name` (rebuilt from the registry if possible)."""
        found = _registry(self).get(ops.check_mirror_name(name))
        if found is None:
            found = _registry(self)[name] = _rebuild(name, self._run(ops.op_mirror_config(name)))
        return found

    def mirrors(self) -> dict[str, Mirror]:
        """The Mirror objects this process holds, by registered name."""
        return dict(_registry(self))

    def use_mirror(self, name: str, mirror: Mirror) -> None:
        """Use `mirror` for `name`, registered earlier (maybe by another process), without
        touching its registry row: how a worker process gets its own client object."""
        config = self._run(ops.op_mirror_config(name))
        _check_kind(name, config, mirror)
        _registry(self)[name] = mirror

    def _sync_connection(self) -> contextlib.AbstractContextManager[psycopg.Connection]:
        pool = getattr(self, "pool", None)
        if isinstance(pool, ConnectionPool):
            return pool.connection()
        return _dsn_connection(self.dsn)

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
        return _reconcile(
            self._sync_connection,
            name,
            self.mirror(name),
            repair=repair,
            page_size=page_size,
            progress=progress,
        )

    def requeue(self, name: str, *, dead_only: bool = True) -> int:
        """Give dead rows (and, with dead_only=False, rows in backoff) a fresh start;
        returns how many rows were requeued."""
        return self._run(ops.op_requeue(name, dead_only=dead_only))

    def dead_letters(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        """The dead rows of a mirror, oldest first, with their last error."""
        return self._run(ops.op_dead_rows(name, limit))


class AsyncMirrorsMixin:
    """The same methods for AsyncMemoryStore, as coroutines (``mirror``/``mirrors`` stay
    plain methods: they do no I/O when the mirror was added in this process)."""

    dsn: str
    _run: Callable[..., Any]

    async def add_mirror(
        self,
        mirror: Mirror,
        name: str | None = None,
        *,
        metadata_fields: Sequence[str] = (),
        namespaces: Sequence[str] | None = None,
        types: Sequence[str] | None = None,
        backfill: bool = True,
        progress: ProgressFn | None = None,
    ) -> None:
        name = mirror.kind if name is None else name
        await self._run(
            ops.op_register_mirror(
                mirror, name, metadata_fields=metadata_fields, namespaces=namespaces, types=types
            )
        )
        _registry(self)[name] = mirror
        if backfill:
            await self.backfill_mirror(name, progress=progress)

    async def backfill_mirror(
        self, name: str, *, progress: ProgressFn | None = None, page_size: int = ops.DEFAULT_PAGE
    ) -> int:
        return await self._run(ops.op_backfill(name, page_size=page_size, progress=progress))

    async def remove_mirror(self, name: str) -> None:
        await self._run(ops.op_remove_mirror(name))
        _registry(self).pop(name, None)

    def mirror(self, name: str) -> Mirror:
        found = _registry(self).get(ops.check_mirror_name(name))
        if found is None:
            raise NotFound(
                f"no mirror {name!r} in this process: await load_mirror({name!r}) or add_mirror()"
            )
        return found

    async def load_mirror(self, name: str) -> Mirror:
        """`mirror(name)`, rebuilding it from the registry when this process lacks it."""
        found = _registry(self).get(name)
        if found is None:
            config = await self._run(ops.op_mirror_config(name))
            found = _registry(self)[name] = await asyncio.to_thread(_rebuild, name, config)
        return found

    def mirrors(self) -> dict[str, Mirror]:
        return dict(_registry(self))

    async def use_mirror(self, name: str, mirror: Mirror) -> None:
        config = await self._run(ops.op_mirror_config(name))
        _check_kind(name, config, mirror)
        _registry(self)[name] = mirror

    async def reconcile(
        self,
        name: str,
        repair: bool = True,
        *,
        page_size: int = 1000,
        progress: ProgressFn | None = None,
    ) -> ReconcileReport:
        mirror = await self.load_mirror(name)
        return await asyncio.to_thread(
            _reconcile,
            lambda: _dsn_connection(self.dsn),
            name,
            mirror,
            repair=repair,
            page_size=page_size,
            progress=progress,
        )

    async def requeue(self, name: str, *, dead_only: bool = True) -> int:
        return await self._run(ops.op_requeue(name, dead_only=dead_only))

    async def dead_letters(self, name: str, limit: int = 50) -> list[dict[str, Any]]:
        return await self._run(ops.op_dead_rows(name, limit))
