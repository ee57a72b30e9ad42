"""The values memstate-pg hands in and out: facts, versions, hits, constraints, reports."""

from __future__ import annotations

from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator


class Constraint(BaseModel):
    """Rules the database enforces for a fact type, across every process.

    `singleton_key="field"`: at most one live fact per (namespace, type, payload[field]); a
    commit with the same key updates that fact. `immutable=True`: a fact's payload, content
    and vector never change after it is written (it can still be deleted).
    """

    model_config = ConfigDict(frozen=True)

    singleton_key: str | None = None
    immutable: bool = False


class Fact(BaseModel):
    """A typed memory item. Only `type` and `payload` are needed to commit one."""

    model_config = ConfigDict(validate_assignment=False)

    id: UUID | None = None
    type: str
    payload: dict[str, Any]
    namespace: str | None = None  # None: the call's namespace, else the store's, else "default"
    session_id: str | None = None
    content: str | None = None
    embedding: list[float] | None = Field(default=None, repr=False)
    embedding_model: str | None = None
    version: int | None = None
    commit_seq: int | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None

    @field_validator("payload", mode="before")
    @classmethod
    def _payload_from_model(cls, value: Any) -> Any:
        if isinstance(value, BaseModel):
            return value.model_dump(mode="json")
        return value


class Hit(BaseModel):
    """A search result: the fact and its cosine similarity to the query (higher is closer)."""

    fact: Fact
    score: float


class FactVersion(BaseModel):
    """One row of the append-only history: the state a commit gave a fact."""

    fact_id: UUID
    version: int
    seq: int
    op: str  # put | update | delete
    kind: str  # commit | promote | discard | rollback | revert
    namespace: str
    type: str
    session_id: str | None = None
    payload: dict[str, Any] | None = None
    content: str | None = None
    embedding_model: str | None = None
    actor: str | None = None
    reason: str | None = None
    created_at: datetime


class ReconcileReport(BaseModel):
    """What reconciliation found in a mirror, compared with Postgres by (fact_id, version)."""

    mirror: str
    checked: int = 0
    missing: int = 0
    stale: int = 0
    ghosts: int = 0
    repaired: int = 0
    seconds: float = 0.0
    stopped: str | None = None  # why a run ended before comparing everything (budget, stop)

    @property
    def drift(self) -> int:
        return self.missing + self.stale + self.ghosts


class ReembedReport(BaseModel):
    """What a re-embed did: `staged` vectors computed with the new `model` in this run, and
    `switched` facts moved to it in the one commit that made it the namespace's model."""

    namespace: str
    model: str
    staged: int = 0
    switched: int = 0
    seconds: float = 0.0


class MirrorStatus(BaseModel):
    """The sync state of one mirror (see `MemoryStore.status()`)."""

    name: str
    kind: str
    enabled: bool
    pending: int
    dead: int
    oldest_pending_age: float | None  # seconds
    last_synced_seq: int | None
    last_synced_at: datetime | None
    last_reconciled_at: datetime | None
    last_reconcile: dict[str, Any] | None = None
    max_pending: int | None = None  # the backlog above which status raises backlog_alert
    backlog_alert: bool = False  # more rows pending than max_pending: the worker falls behind
