"""The outbox and the mirror registry, as the sync path sees them: thin functions over the
named queries of sql/sync_queries.sql, each taking a psycopg connection.

Nothing here decides anything; the worker (worker.py), reconciliation (reconcile.py) and the
registration API (mirrors_api.py) call these in the transactions they need. The claiming
protocol itself is described at the top of sql/sync_queries.sql.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from .. import queries

__all__ = [
    "ClaimedRow",
    "FailResult",
    "MirrorConfig",
    "Pending",
    "ack",
    "claim",
    "fact_sizes",
    "fail",
    "load_config",
    "load_configs",
    "lock_facts",
    "park",
    "pending",
    "q",
]

NIL_UUID = UUID(int=0)
MAX_ERROR_CHARS = 2000
MAX_BATCH_BYTES = 32 << 20  # a worker batch reads facts up to this many bytes (fact_sizes)
MAX_RECORD_BYTES = 8 << 20  # a larger fact is never read: its rows are parked dead


@cache
def _sync_queries() -> dict[str, str]:
    return queries.load("sync_queries.sql")


def q(name: str) -> str:
    """The text of named query `name` of sql/sync_queries.sql."""
    return _sync_queries()[name]


@dataclass(frozen=True, slots=True)
class MirrorConfig:
    """One row of memstate.mirrors: what a mirror takes and which payload fields it carries."""

    name: str
    kind: str
    enabled: bool
    namespaces: tuple[str, ...] | None
    types: tuple[str, ...] | None
    metadata_fields: tuple[str, ...]
    options: dict[str, Any]
    reconciled_ago: float | None = None  # seconds since the last reconciliation
    model: str | None = None  # the embedding model it takes (None: every model)

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> MirrorConfig:
        return cls(
            name=row["name"],
            kind=row["kind"],
            enabled=row["enabled"],
            namespaces=tuple(row["namespaces"]) if row["namespaces"] is not None else None,
            types=tuple(row["types"]) if row["types"] is not None else None,
            metadata_fields=tuple(row["metadata_fields"] or ()),
            options=row["options"] or {},
            reconciled_ago=row.get("reconciled_ago"),
            model=row.get("model"),
        )

    def in_scope(self, namespace: str, type: str, model: str | None = None) -> bool:
        """Whether a fact of this namespace, type and embedding model belongs in the mirror
        (the same rule as the outbox trigger memstate._enqueue_versions)."""
        return (
            (self.namespaces is None or namespace in self.namespaces)
            and (self.types is None or type in self.types)
            and (self.model is None or model is None or model == self.model)
        )

    def scope_params(self) -> dict[str, Any]:
        return {
            "namespaces": list(self.namespaces) if self.namespaces is not None else None,
            "types": list(self.types) if self.types is not None else None,
            "model": self.model,
        }


@dataclass(frozen=True, slots=True)
class ClaimedRow:
    id: int
    fact_id: UUID
    seq: int
    attempts: int


@dataclass(frozen=True, slots=True)
class FailResult:
    dead: int  # rows parked as dead by this failure
    min_delay: float  # seconds until the first failed row (not dead) is ready again


@dataclass(frozen=True, slots=True)
class Pending:
    pending: int  # rows not dead (ready or in backoff)
    ready: int  # rows claimable now
    next_in: float | None  # seconds until the next row in backoff is ready


def _rows(
    conn: psycopg.Connection, name: str, params: dict[str, Any] | None
) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(q(name), params)
        return cur.fetchall() if cur.description is not None else []


def load_config(conn: psycopg.Connection, name: str) -> MirrorConfig | None:
    rows = _rows(conn, "mirror_config", {"name": name})
    return MirrorConfig.from_row(rows[0]) if rows else None


def load_configs(conn: psycopg.Connection) -> dict[str, MirrorConfig]:
    return {r["name"]: MirrorConfig.from_row(r) for r in _rows(conn, "mirror_configs", None)}


def claim(
    conn: psycopg.Connection, mirror: str, limit: int, skip: Sequence[UUID] = ()
) -> list[ClaimedRow]:
    """Claim up to `limit` ready rows of `mirror` in the caller's open transaction, leaving
    out the rows of the facts in `skip`."""
    rows = _rows(conn, "claim", {"mirror": mirror, "limit": limit, "skip": list(skip)})
    return [ClaimedRow(r["id"], r["fact_id"], r["seq"], r["attempts"]) for r in rows]


def lock_facts(conn: psycopg.Connection, mirror: str, fact_ids: Sequence[UUID]) -> set[UUID]:
    """Try the per-fact locks of `mirror` (held until the transaction ends); returns the
    facts now held. Facts another worker or a repair holds are left out."""
    if not fact_ids:
        return set()
    rows = _rows(conn, "lock_facts", {"mirror": mirror, "ids": list(fact_ids)})
    return {r["fact_id"] for r in rows}


def fact_sizes(conn: psycopg.Connection, fact_ids: Sequence[UUID]) -> dict[UUID, int]:
    """Bytes the worker would read for each live fact among `fact_ids` (absent: deleted)."""
    if not fact_ids:
        return {}
    return {r["fact_id"]: r["bytes"] for r in _rows(conn, "fact_sizes", {"ids": list(fact_ids)})}


def park(conn: psycopg.Connection, ids: Sequence[int], reason: str) -> None:
    """Park rows as dead right away, with `reason` as their last error."""
    if ids:
        conn.execute(q("park"), {"ids": list(ids), "error": reason[:MAX_ERROR_CHARS]})


def ack(conn: psycopg.Connection, mirror: str, ids: Sequence[int]) -> None:
    """Delete rows the mirror acknowledged and advance the mirror's last_synced_seq/at."""
    if ids:
        conn.execute(q("ack"), {"mirror": mirror, "ids": list(ids)})


def fail(
    conn: psycopg.Connection,
    failures: dict[int, str],
    *,
    max_attempts: int,
    backoff_base: float,
    backoff_max: float,
) -> FailResult:
    """Record a failed attempt for each row id -> error text (backoff, or dead)."""
    if not failures:
        return FailResult(0, 0.0)
    ids = list(failures)
    rows = _rows(
        conn,
        "fail",
        {
            "ids": ids,
            "errors": [failures[i][:MAX_ERROR_CHARS] for i in ids],
            "max_attempts": max_attempts,
            "backoff_base": backoff_base,
            "backoff_max": backoff_max,
        },
    )
    delays = [r["delay"] for r in rows if not r["dead"]]
    return FailResult(sum(1 for r in rows if r["dead"]), max(0.0, min(delays)) if delays else 0.0)


def pending(conn: psycopg.Connection, mirrors: Sequence[str]) -> Pending:
    row = _rows(conn, "pending", {"mirrors": list(mirrors)})[0]
    return Pending(row["pending"], row["ready"], row["next_in"])


def notify(conn: psycopg.Connection) -> None:
    """Wake the workers (the outbox trigger does this for ordinary commits)."""
    conn.execute(q("notify"))
