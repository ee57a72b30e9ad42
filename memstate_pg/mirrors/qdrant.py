"""Qdrant adapter: one Qdrant collection holds one point per live fact.

Layout of a point
-----------------
* id: the fact UUID (Qdrant only accepts UUIDs or unsigned ints as ids, and returns
  UUIDs in canonical lowercase form; :meth:`QdrantMirror.get` keys its answer by the
  strings the caller passed).
* vector: the single unnamed vector of the collection. With ``Cosine`` distance Qdrant
  stores the vector *normalised to unit length*, so reading it back returns
  ``v / |v|``, not ``v``.
* payload: :func:`~memstate_pg.mirrors.base.build_payload` as is. Qdrant payloads are
  JSON, so nested dicts, lists and ``None`` survive unchanged; reserved keys
  (``fact_id, version, namespace, type, embedding_model, content``) win, colliding
  metadata keys become ``payload.<key>``.

Qdrant's upsert replaces the whole point (payload included), so overwrite semantics come
for free. Writes use ``wait=True``: when the call returns the point is durable and
visible, which is what the outbox needs before it marks an event delivered.

The collection is created lazily with the vector size of the first record written (or
eagerly when ``dim`` is given). Reads against a missing collection return nothing rather
than failing: an empty mirror is a valid state (before the first sync, after a reset).
Scanning follows Qdrant's ``scroll`` cursor (ordered by id), which, unlike offset
paging, does not skip points when others are deleted meanwhile.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, cast
from urllib.parse import urlsplit, urlunsplit

from memstate_pg.errors import MirrorError
from memstate_pg.mirrors.base import (
    Mirror,
    MirrorHit,
    MirrorPoint,
    MirrorRecord,
    build_payload,
    check_query,
    chunked,
    payload_filter,
    tag_of,
    version_of,
)

if TYPE_CHECKING:
    from qdrant_client import QdrantClient
    from qdrant_client.models import ExtendedPointId

__all__ = ["QdrantMirror"]

_SAFE_INIT_OPTIONS = ("location", "url", "host", "port", "path", "prefix", "https", "prefer_grpc")


def _strip_userinfo(url: str) -> str:
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url
    netloc = parts.hostname or ""
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _is_local(client: Any) -> bool:
    """True for qdrant-client's in-process local mode (no server)."""
    try:
        from qdrant_client.local.qdrant_local import QdrantLocal
    except ImportError:  # pragma: no cover - a client without local mode
        return False
    return isinstance(getattr(client, "_client", None), QdrantLocal)


class QdrantMirror(Mirror):
    """A mirror over a ``qdrant_client.QdrantClient`` (server, ``:memory:`` or local path)."""

    kind: ClassVar[str] = "qdrant"
    can_query: ClassVar[bool] = True

    def __init__(
        self,
        client: QdrantClient,
        collection: str = "memory",
        *,
        distance: str = "Cosine",
        batch_size: int = 256,
        dim: int | None = None,
        owns_client: bool = False,
    ) -> None:
        from qdrant_client import models

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        by_name = {d.value.lower(): d for d in models.Distance}
        if distance.lower() not in by_name:
            raise ValueError(f"distance must be one of {sorted(by_name)}, got {distance!r}")
        self.client = client
        self.collection_name = collection
        self.distance = by_name[distance.lower()]
        self.max_batch_size = batch_size
        self.dim = dim
        self._owns_client = owns_client
        self._ready = False  # the collection is known to exist
        self._lock = threading.Lock()
        # qdrant-client's local mode (":memory:" or a path) is not thread-safe: a query
        # racing an upsert of the sync worker's thread indexes arrays being resized. Calls
        # on a local client are serialised; a server client is left concurrent.
        self._io_lock: contextlib.AbstractContextManager[Any] = (
            threading.RLock() if _is_local(client) else contextlib.nullcontext()
        )
        if dim is not None:
            with self._translate("create_collection"):
                self._ensure_collection(dim)

    # -- construction helpers -------------------------------------------------------

    @classmethod
    def from_url(
        cls, url: str, collection: str = "memory", *, api_key: str | None = None, **kwargs: Any
    ) -> QdrantMirror:
        """Connect to a Qdrant server, e.g. ``http://127.0.0.1:6333``."""
        from qdrant_client import QdrantClient

        client = QdrantClient(url=url, api_key=api_key)
        return cls(client, collection, owns_client=True, **kwargs)

    @classmethod
    def from_location(
        cls, location: str, collection: str = "memory", **kwargs: Any
    ) -> QdrantMirror:
        """An embedded Qdrant: ``":memory:"`` or a directory path for on-disk local mode."""
        from qdrant_client import QdrantClient

        if location == ":memory:":
            client = QdrantClient(location=":memory:")
        else:
            client = QdrantClient(path=location)
        return cls(client, collection, owns_client=True, **kwargs)

    # -- plumbing -------------------------------------------------------------------

    @contextmanager
    def _translate(self, op: str) -> Iterator[None]:
        """Turn any client failure into MirrorError; re-check the collection next time."""
        try:
            with self._io_lock:
                yield
        except MirrorError:
            raise
        except Exception as exc:
            self._ready = False
            raise MirrorError(f"qdrant {op} on {self.collection_name!r} failed: {exc}") from exc

    def _exists(self) -> bool:
        if not self._ready:
            self._ready = bool(self.client.collection_exists(self.collection_name))
        return self._ready

    def _ensure_collection(self, dim: int) -> None:
        from qdrant_client import models

        with self._lock:
            if self._exists():
                return
            try:
                self.client.create_collection(
                    self.collection_name,
                    vectors_config=models.VectorParams(size=dim, distance=self.distance),
                )
            except Exception:
                # Lost a creation race with another writer? Then the collection is there.
                if not self.client.collection_exists(self.collection_name):
                    raise
            self._ready = True

    @staticmethod
    def _point_id(fact_id: str) -> str:
        return str(uuid.UUID(fact_id))

    # -- writes ---------------------------------------------------------------------

    def _upsert_batch(self, records: Sequence[MirrorRecord]) -> None:
        from qdrant_client import models

        points = [
            models.PointStruct(
                id=self._point_id(r.fact_id),
                vector=[float(x) for x in r.embedding],
                payload=build_payload(r),
            )
            for r in records
        ]
        with self._translate("upsert"):
            self._ensure_collection(self.dim or len(records[0].embedding))
            self.client.upsert(self.collection_name, points=points, wait=True)

    def _delete_batch(self, fact_ids: Sequence[str]) -> None:
        from qdrant_client import models

        ids: list[ExtendedPointId] = [self._point_id(fid) for fid in fact_ids]
        with self._translate("delete"):
            if not self._exists():
                return  # nothing was ever written: deleting is trivially done
            self.client.delete(
                self.collection_name, points_selector=models.PointIdsList(points=ids), wait=True
            )

    # -- reads ----------------------------------------------------------------------

    def get(self, fact_ids: Sequence[str], *, with_vectors: bool = False) -> dict[str, MirrorPoint]:
        wanted = {self._point_id(fid): fid for fid in fact_ids}
        points: dict[str, MirrorPoint] = {}
        for batch in chunked(list(wanted), self.max_batch_size):
            with self._translate("get"):
                if not self._exists():
                    return {}
                found = self.client.retrieve(
                    self.collection_name,
                    ids=list(batch),
                    with_payload=True,
                    with_vectors=with_vectors,
                )
            for rec in found:
                fid = wanted.get(str(rec.id), str(rec.id))
                vector = None
                if with_vectors and rec.vector is not None:
                    # the collection has one unnamed dense vector: it comes back as list[float]
                    vector = [float(x) for x in cast("list[float]", rec.vector)]
                payload = dict(rec.payload or {})
                points[fid] = MirrorPoint(
                    fact_id=fid, version=version_of(payload), embedding=vector, metadata=payload
                )
        return points

    def scan(self, page_size: int = 1000) -> Iterator[list[tuple[str, int]]]:
        for page in self.scan_tagged(page_size):
            yield [(fid, version) for fid, version, _ in page]

    def scan_tagged(self, page_size: int = 1000) -> Iterator[list[tuple[str, int, str | None]]]:
        """Points by their id (never by the ``fact_id`` their payload claims: a point planted
        under another id with a live fact's id in its payload is a ghost)."""
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        offset: Any = None
        while True:
            with self._translate("scan"):
                if not self._exists():
                    return
                records, offset = self.client.scroll(
                    self.collection_name,
                    limit=page_size,
                    offset=offset,
                    with_payload=["version", "mirror"],
                    with_vectors=False,
                )
            if records:
                yield [(str(r.id), version_of(r.payload), tag_of(r.payload)) for r in records]
            if offset is None:
                return

    def query(
        self,
        vector: Sequence[float],
        k: int,
        *,
        namespace: str | None = None,
        type: str | None = None,
        embedding_model: str | None = None,
    ) -> list[MirrorHit]:
        """``query_points`` with a payload filter (exact match on the reserved keys). Scores
        are Qdrant's, negated for the distances where lower is closer (Euclid, Manhattan)."""
        from qdrant_client import models

        q = check_query(vector, k)
        must: list[models.Condition] = [
            models.FieldCondition(key=key, match=models.MatchValue(value=value))
            for key, value in payload_filter(namespace, type, embedding_model).items()
        ]
        lower_is_closer = self.distance in (models.Distance.EUCLID, models.Distance.MANHATTAN)
        with self._translate("query"):
            if not self._exists():
                return []
            found = self.client.query_points(
                self.collection_name,
                query=q,
                limit=k,
                query_filter=models.Filter(must=must) if must else None,
                with_payload=["version"],
                with_vectors=False,
            ).points
        return [
            MirrorHit(
                str(p.id), version_of(p.payload), -p.score if lower_is_closer else float(p.score)
            )
            for p in found
        ]

    def count(self) -> int:
        with self._translate("count"):
            if not self._exists():
                return 0
            return int(self.client.count(self.collection_name, exact=True).count)

    # -- admin ----------------------------------------------------------------------

    def reset(self) -> None:
        """Drop the collection; it is re-created on the next write (or now, if ``dim`` is set).

        Qdrant addresses collections by name, so other handles stay valid.
        """
        with self._translate("reset"):
            self.client.delete_collection(self.collection_name)
            self._ready = False
            if self.dim is not None:
                self._ensure_collection(self.dim)

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "kind": self.kind,
            "collection": self.collection_name,
            "distance": self.distance.value,
            "batch_size": self.max_batch_size,
        }
        if self.dim is not None:
            info["dim"] = self.dim
        options = getattr(self.client, "init_options", None) or {}
        for key in _SAFE_INIT_OPTIONS:  # never api_key, headers, auth providers
            value = options.get(key)
            if value is None or value is False:
                continue
            if key == "port" and not options.get("host"):
                continue  # only meaningful with host=; a url carries its own port
            info[key] = _strip_userinfo(value) if key == "url" else value
        return info

    def close(self) -> None:
        """Close the client if this mirror created it (``from_url`` / ``from_location``)."""
        if self._owns_client:
            self.client.close()
