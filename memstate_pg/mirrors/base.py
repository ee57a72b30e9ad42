"""The mirror contract: what the sync worker sends to an external vector store, and what it reads back.

Postgres is the source of truth; a mirror is a disposable copy that the outbox keeps
*eventually* equal to the live facts. That shapes every rule here:

* Writes are idempotent and keyed by the fact UUID, so the worker can retry a batch
  any number of times (at-least-once delivery) without creating duplicates.
* Every point carries the fact ``version``, so reconciliation can compare the mirror
  with Postgres cheaply (:meth:`Mirror.scan` / :meth:`Mirror.versions`) and repair drift.
* Adapters split writes into chunks of :attr:`Mirror.max_batch_size` themselves, so the
  worker never needs to know a store's native limit.

Payload layout (shared by all adapters, see :func:`build_payload`): the reserved keys
``fact_id, version, namespace, type, embedding_model, content`` (and ``mirror``) always
hold the record's own values; a key of ``record.metadata`` that collides with one of them
is stored as ``"payload.<key>"`` instead, so user data can never forge a version or an id.

Every point the sync worker writes is tagged with the name of the registered mirror it
belongs to (``mirror``): reconciliation only ever deletes points of its own mirror (or
untagged ones, written before tags existed), never those of another mirror that shares
the collection.

Adapters that can answer a nearest-neighbour query (:attr:`Mirror.can_query`) implement
:meth:`Mirror.query`: candidates as ``(fact_id, version, score)``, filtered in the store
by the reserved payload keys ``namespace``, ``type`` and ``embedding_model``. A candidate
is only a hint: ``MemoryStore.search(q, via=name)`` checks every one against Postgres by
(fact_id, version) before it is returned (memstate_pg/_core/judged.py).
"""

from __future__ import annotations

import abc
import os
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from memstate_pg.errors import MirrorError

__all__ = [
    "RESERVED_KEYS",
    "UNKNOWN_VERSION",
    "Mirror",
    "MirrorError",
    "MirrorHit",
    "MirrorPoint",
    "MirrorRecord",
    "MirrorTimeout",
    "build_payload",
    "chunked",
]

#: Payload keys owned by memstate-pg; record metadata can never overwrite them.
RESERVED_KEYS: tuple[str, ...] = (
    "fact_id",
    "version",
    "namespace",
    "type",
    "embedding_model",
    "content",
    "mirror",
)

#: Version reported for a point that has no readable ``version`` field (written by a
#: foreign tool, or corrupted). Lower than any real version, so reconciliation rewrites it.
UNKNOWN_VERSION = -1

#: Prefix given to a metadata key that collides with a reserved key.
COLLISION_PREFIX = "payload."


class MirrorTimeout(MirrorError, TimeoutError):
    """A mirror call timed out: the write may or may not have landed, so retry it.

    It is both a :class:`MirrorError` (the sync worker's retry path) and a
    :class:`TimeoutError` (what generic timeout handling expects).
    """


@dataclass(frozen=True, slots=True)
class MirrorRecord:
    """The current state of one live fact, as the sync worker sends it to a mirror."""

    fact_id: str
    version: int
    namespace: str
    type: str
    embedding: list[float]
    embedding_model: str
    content: str
    metadata: dict[str, Any]
    mirror: str | None = None  # the registered mirror it is written for (its tag)


@dataclass(frozen=True, slots=True)
class MirrorPoint:
    """What a mirror holds for one fact id.

    ``metadata`` is the stored payload as the store returns it (reserved keys included,
    ``content`` folded in for stores that keep it elsewhere); ``embedding`` is only
    filled when the caller asked for vectors.
    """

    fact_id: str
    version: int
    embedding: list[float] | None
    metadata: dict[str, Any]


@dataclass(frozen=True, slots=True)
class MirrorHit:
    """One candidate of :meth:`Mirror.query`: the point's id, the ``version`` its payload
    carries (:data:`UNKNOWN_VERSION` if unreadable) and the store's similarity to the query
    (higher is closer; only comparable within one query's answer)."""

    fact_id: str
    version: int
    score: float


def chunked(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """Yield consecutive slices of at most ``size`` items."""
    if size < 1:
        raise ValueError(f"batch size must be >= 1, got {size}")
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _free_key(key: str, taken: Iterable[str]) -> str:
    """``key`` itself, or ``payload.<key>`` (repeated) until it clashes with nothing."""
    taken = set(taken)
    candidate = key
    while candidate in RESERVED_KEYS or candidate in taken:
        candidate = COLLISION_PREFIX + candidate
    return candidate


def build_payload(record: MirrorRecord) -> dict[str, Any]:
    """The full payload of one point: reserved fields first, then the record metadata.

    Metadata values are kept as they are (nested dicts, lists, ``None``); adapters whose
    store is stricter (Chroma) encode this dict further. Colliding metadata keys are
    renamed to ``payload.<key>`` (again if that is taken too), so the reserved keys
    always describe the record itself.
    """
    payload: dict[str, Any] = {
        "fact_id": record.fact_id,
        "version": record.version,
        "namespace": record.namespace,
        "type": record.type,
        "embedding_model": record.embedding_model,
        "content": record.content,
    }
    if record.mirror is not None:
        payload["mirror"] = record.mirror
    plain = [k for k in record.metadata if k not in RESERVED_KEYS]
    payload.update((k, record.metadata[k]) for k in plain)
    for key, value in record.metadata.items():
        if key in RESERVED_KEYS:
            payload[_free_key(key, payload)] = value
    return payload


def latest_per_id(records: Sequence[MirrorRecord]) -> list[MirrorRecord]:
    """One record per fact id, the highest version winning (the later one on a tie).

    Stores reject (Chroma) or arbitrarily order (Qdrant) duplicate ids within one call;
    sending only the newest state is what the worker means anyway.
    """
    best: dict[str, MirrorRecord] = {}
    for record in records:
        current = best.get(record.fact_id)
        if current is None or record.version >= current.version:
            best[record.fact_id] = record
    return list(best.values())


class Mirror(abc.ABC):
    """An external vector store kept in sync with the live facts.

    Subclasses implement the native calls (:meth:`_upsert_batch`, :meth:`_delete_batch`
    and the reads); this base class de-duplicates and splits writes into
    ``max_batch_size`` chunks. Every failure of the store surfaces as
    :class:`~memstate_pg.errors.MirrorError`, which the sync worker retries.

    A batch split into several chunks is not atomic: a failure after the first chunk
    leaves some points written. That is safe because writes are idempotent and the
    worker retries the whole batch.
    """

    kind: ClassVar[str]
    max_batch_size: int
    #: True when the adapter answers :meth:`query` (search ``via=`` the mirror).
    can_query: ClassVar[bool] = False

    def upsert(self, records: Sequence[MirrorRecord]) -> None:
        """Write the current state of ``records``; an existing point with the same id is replaced."""
        unique = latest_per_id(records)
        for batch in chunked(unique, self.max_batch_size):
            self._upsert_batch(batch)

    def delete(self, fact_ids: Sequence[str]) -> None:
        """Remove the points with these ids; ids that are absent are ignored."""
        unique = list(dict.fromkeys(fact_ids))
        for batch in chunked(unique, self.max_batch_size):
            self._delete_batch(batch)

    @abc.abstractmethod
    def _upsert_batch(self, records: Sequence[MirrorRecord]) -> None:
        """One native upsert of at most ``max_batch_size`` records with distinct ids."""

    @abc.abstractmethod
    def _delete_batch(self, fact_ids: Sequence[str]) -> None:
        """One native delete of at most ``max_batch_size`` distinct ids."""

    @abc.abstractmethod
    def get(self, fact_ids: Sequence[str], *, with_vectors: bool = False) -> dict[str, MirrorPoint]:
        """The points present among ``fact_ids``, keyed by id; absent ids are left out."""

    @abc.abstractmethod
    def scan(self, page_size: int = 1000) -> Iterator[list[tuple[str, int]]]:
        """Every ``(fact_id, version)`` in the mirror, one page at a time (bounded memory)."""

    def scan_tagged(self, page_size: int = 1000) -> Iterator[list[tuple[str, int, str | None]]]:
        """Like :meth:`scan`, with the ``mirror`` tag of each point (None: untagged).

        Reconciliation uses it to leave alone the points of another mirror sharing the
        store. This default cannot read tags: it reports every point untagged."""
        for page in self.scan(page_size):
            yield [(fid, version, None) for fid, version in page]

    def store_key(self) -> str | None:
        """``"kind|location|collection"``: which collection of which store the points go
        to, from :meth:`describe` (a server URL, a host or a path). None for a store private
        to this process. The registry refuses a second mirror on one store."""
        info = self.describe()
        where = info.get("url") or info.get("path") or info.get("host")
        if not where:
            return None
        where = str(where).rstrip("/")
        if info.get("path") and not info.get("url"):
            where = "path:" + os.path.normpath(os.path.abspath(where))
        elif info.get("host") and info.get("port"):
            where = f"{where}:{info['port']}"
        return (
            f"{self.kind}|{where.lower() if '://' in where else where}|{info.get('collection', '')}"
        )

    @abc.abstractmethod
    def count(self) -> int:
        """The number of points in the mirror."""

    @abc.abstractmethod
    def describe(self) -> dict[str, Any]:
        """JSON-able configuration for the mirror registry row; never includes secrets."""

    @abc.abstractmethod
    def reset(self) -> None:
        """Delete every point (tests, benchmarks, backfill from scratch)."""

    def close(self) -> None:  # noqa: B027 - deliberately a no-op default
        """Release resources the mirror owns; the default owns none."""

    def query(
        self,
        vector: Sequence[float],
        k: int,
        *,
        namespace: str | None = None,
        type: str | None = None,
        embedding_model: str | None = None,
    ) -> list[MirrorHit]:
        """The ``k`` points nearest to ``vector``, closest first, among those whose payload
        has this ``namespace`` / ``type`` / ``embedding_model`` (None: any). Points are
        identified by their id in the store, never by the ``fact_id`` their payload claims.
        Only adapters with :attr:`can_query` implement it; failures are MirrorError."""
        raise NotImplementedError(f"{self.__class__.__name__} cannot answer queries")

    def versions(self, fact_ids: Sequence[str]) -> dict[str, int]:
        """``{fact_id: version}`` for the ids present in the mirror."""
        return {fid: point.version for fid, point in self.get(fact_ids).items()}

    def __enter__(self) -> Mirror:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()!r}>"


def check_query(vector: Sequence[float], k: int) -> list[float]:
    """The query vector as floats, after the checks every adapter shares."""
    if not isinstance(k, int) or isinstance(k, bool) or k < 1:
        raise ValueError(f"k must be an int >= 1, got {k!r}")
    values = [float(x) for x in vector]
    if not values:
        raise ValueError("the query vector is empty")
    return values


def payload_filter(
    namespace: str | None, type: str | None, embedding_model: str | None
) -> dict[str, str]:
    """The equality conditions of a query on reserved payload keys (None values left out)."""
    wanted = {"namespace": namespace, "type": type, "embedding_model": embedding_model}
    return {key: value for key, value in wanted.items() if value is not None}


def tag_of(payload: dict[str, Any] | None) -> str | None:
    """The ``mirror`` tag stored in a payload, or None."""
    value = (payload or {}).get("mirror")
    return value if isinstance(value, str) else None


def version_of(payload: dict[str, Any] | None) -> int:
    """The ``version`` stored in a payload, or :data:`UNKNOWN_VERSION` if unreadable."""
    if not payload:
        return UNKNOWN_VERSION
    value = payload.get("version")
    if isinstance(value, bool):
        return UNKNOWN_VERSION
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return UNKNOWN_VERSION
