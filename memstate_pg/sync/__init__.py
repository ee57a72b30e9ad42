"""Feeding mirrors from the transactional outbox: the sync worker, reconciliation, and the
mirror registration API of the stores.

* :class:`SyncWorker` (worker.py) claims outbox rows (``FOR UPDATE SKIP LOCKED`` plus a
  per-fact row lock in memstate.sync_slots, which tenants cannot take), coalesces them per fact, writes the mirrors and acknowledges.
* :func:`reconcile` (reconcile.py) compares a mirror with Postgres by (fact_id, version)
  in bounded memory and repairs drift.

The stores' mirror methods (``add_mirror``, ``remove_mirror``, ``mirror``, ``reconcile``,
``requeue`` …) are plain methods of MemoryStore / AsyncMemoryStore over the registry
operations of memstate_pg._core.ops.

The SQL lives in sql/sync_queries.sql; the outbox rows are written by the trigger
``memstate._enqueue_versions`` of sql/functions.sql.
"""

from .reconcile import reconcile
from .specs import mirror_from_options, parse_mirror_spec
from .worker import BatchStats, SyncWorker

__all__ = [
    "BatchStats",
    "SyncWorker",
    "mirror_from_options",
    "parse_mirror_spec",
    "reconcile",
]
