"""Chroma adapter: one Chroma collection holds one point per live fact.

Layout of a point
-----------------
* id: the fact UUID string.
* embedding: always passed explicitly. The collection is created with
  ``embedding_function=None`` so Chroma can never embed by itself (its default model
  downloads weights from the internet and would silently use a different vector space).
* document: the fact ``content``.
* metadata: the payload of :func:`~memstate_pg.mirrors.base.build_payload` minus
  ``content``, encoded for Chroma, whose metadata values must be scalars:

  - nested dicts are flattened to dotted keys: ``{"a": {"b": 1}}`` -> ``{"a.b": 1}``
    (an empty dict is stored as the JSON string ``"{}"``);
  - lists, and any other non-scalar value, are stored as JSON strings
    (``[1, 2]`` -> ``"[1, 2]"``); Chroma 1.x accepts some lists natively, but only
    non-empty homogeneous ones, so one uniform rule is simpler to read back;
  - ``None`` values are dropped (Chroma treats ``None`` in an upsert as "delete key");
  - ints outside the signed 64-bit range and non-finite floats become JSON strings
    (Chroma silently turns the former into floats and drops the latter);
  - keys Chroma rejects (empty, starting with ``#`` or ``$``, ``chroma:document``)
    get the ``payload.`` prefix; if flattening makes two keys equal, the first wins.

  Reserved keys (``fact_id, version, namespace, type, embedding_model``) always carry
  the record's own values; colliding metadata keys become ``payload.<key>``.

Overwrite semantics: Chroma's ``upsert`` *merges* metadata into an existing record
(keys absent from the new metadata survive, ``None`` removes a key). To make an upsert
replace the point, every metadata key the collection may hold that the new metadata lacks
is sent as ``None``. That set of keys (the collection's *key registry*) is kept in the
collection's own metadata, under ``memstate:metadata_keys`` (a JSON list), and in memory,
shared by every ChromaMirror of the process on that collection (by collection id):

* a batch that brings a key the registry lacks first writes the grown registry, then the
  points, so every point's keys are always in the registry;
* a collection that holds points but no registry (written before it existed) is scanned
  once, when the first batch is written, to build it;
* no read per batch: the mirror holds exactly the current state of each fact, never a
  union of past versions, and stale keys are removed without reading the points.

The registry is written read-modify-write, which is exact for a client private to one
process (embedded ``PersistentClient``, which Chroma supports in one process only, and
``EphemeralClient``). A client other processes share (``HttpClient``: several workers,
a repair run from another process) instead reads the existing keys of each batch's ids
before the upsert, as does any collection whose registry would exceed
``MAX_REGISTRY_KEYS`` keys (payloads with many distinct nested keys).

Scanning uses ``collection.get(limit=, offset=)``. Offset paging is not stable under
concurrent writes (a delete shifts later points to earlier offsets, so a point can be
missed, or seen twice after an insert). That is acceptable for reconciliation, which
re-checks every difference it finds against Postgres and runs again later.
"""

from __future__ import annotations

import json
import math
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast
from urllib.parse import urlsplit

from memstate_pg.errors import MirrorError, ValidationFailed
from memstate_pg.mirrors.base import (
    COLLISION_PREFIX,
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
    from chromadb.api import ClientAPI
    from chromadb.api.collection_configuration import CreateCollectionConfiguration
    from chromadb.api.models.Collection import Collection
    from chromadb.api.types import Include, Metadata, Space

__all__ = ["ChromaMirror", "encode_metadata"]

_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1
#: Collection metadata key holding the collection's key registry (a JSON list of keys).
REGISTRY_KEY = "memstate:metadata_keys"
REGISTRY_OVERFLOW = "*"  # the registry value once it would exceed MAX_REGISTRY_KEYS
#: Beyond this many distinct metadata keys in a collection, writes read the points' keys
#: instead (sending that many ``None`` values per point would cost more than the read).
MAX_REGISTRY_KEYS = 256
_CHROMA_RESERVED_KEYS = frozenset({"chroma:document"})
_DISTANCES = ("cosine", "l2", "ip")


def _scalar(value: Any) -> str | int | float | bool:
    """``value`` if Chroma stores it faithfully, else its JSON text."""
    if isinstance(value, bool | str):
        return value
    if isinstance(value, int):
        return value if _INT64_MIN <= value <= _INT64_MAX else json.dumps(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else json.dumps(value)
    return json.dumps(value, default=str, sort_keys=True)


def _flatten(prefix: str, value: Any, out: dict[str, Any]) -> None:
    if value is None:
        return
    if isinstance(value, Mapping) and value:
        for key, inner in value.items():
            _flatten(f"{prefix}.{key}", inner, out)
        return
    key = prefix
    if not key or key[0] in "#$" or key in _CHROMA_RESERVED_KEYS:
        key = COLLISION_PREFIX + key
    out.setdefault(key, _scalar(value))


def encode_metadata(record: MirrorRecord) -> dict[str, str | int | float | bool]:
    """The Chroma metadata of one record (see the module docstring for the rules)."""
    payload = build_payload(record)
    del payload["content"]  # stored as the document
    out: dict[str, Any] = {}
    for key, value in payload.items():
        _flatten(str(key), value, out)
    return out


class ChromaMirror(Mirror):
    """A mirror over any chromadb 1.x client (Ephemeral, Persistent or Http).

    The collection is opened lazily and re-opened after an error, so a mirror object
    survives a Chroma server restart and can be built while the server is down.
    """

    kind: ClassVar[str] = "chroma"
    can_query: ClassVar[bool] = True

    def __init__(
        self,
        client: ClientAPI,
        collection: str = "memory",
        *,
        distance: str = "cosine",
        batch_size: int | None = None,
        url: str | None = None,
    ) -> None:
        if distance not in _DISTANCES:
            raise ValueError(f"distance must be one of {_DISTANCES}, got {distance!r}")
        if batch_size is not None and batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.client = client
        self.collection_name = check_collection_name(collection)
        self.distance = distance
        self._batch_size = batch_size
        self._native_batch: int | None = None
        self._url = url
        self._collection: Collection | None = None
        self._lock = threading.Lock()

    # -- construction helpers -------------------------------------------------------

    @classmethod
    def from_url(
        cls,
        url: str,
        collection: str = "memory",
        *,
        distance: str = "cosine",
        batch_size: int | None = None,
        headers: dict[str, str] | None = None,
    ) -> ChromaMirror:
        """Connect to a Chroma server, e.g. ``http://127.0.0.1:8000``.

        Credentials belong in ``headers`` (never in the URL): :meth:`describe` records
        the URL in the registry.
        """
        import chromadb
        from chromadb.config import Settings

        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"expected an http(s)://host[:port] URL, got {url!r}")
        ssl = parts.scheme == "https"
        port = parts.port or (443 if ssl else 8000)
        client = chromadb.HttpClient(
            host=parts.hostname,
            port=port,
            ssl=ssl,
            headers=headers,
            settings=Settings(anonymized_telemetry=False),
        )
        clean_url = f"{parts.scheme}://{parts.hostname}:{port}"
        return cls(client, collection, distance=distance, batch_size=batch_size, url=clean_url)

    @classmethod
    def from_path(
        cls,
        path: str | Path,
        collection: str = "memory",
        *,
        distance: str = "cosine",
        batch_size: int | None = None,
    ) -> ChromaMirror:
        """Open (or create) an embedded, on-disk Chroma database at ``path``."""
        import chromadb
        from chromadb.config import Settings

        client = chromadb.PersistentClient(
            path=str(path), settings=Settings(anonymized_telemetry=False)
        )
        return cls(client, collection, distance=distance, batch_size=batch_size)

    # -- plumbing -------------------------------------------------------------------

    @classmethod
    def in_memory(cls, collection: str = "memory", **kwargs: Any) -> ChromaMirror:
        """An in-process ephemeral Chroma (demos, tests). Chroma keeps one ephemeral
        system per process and refuses a second with other settings, so every ephemeral
        client of memstate-pg is made here, with the same settings."""
        return cls(ephemeral_client(), collection, **kwargs)

    @property
    def collection(self) -> Collection:
        """The Chroma collection, created on first use (never with an embedding function)."""
        with self._lock:
            if self._collection is None:
                # __init__ checked that distance is one of _DISTANCES, Chroma's Space literals
                configuration: CreateCollectionConfiguration = {
                    "hnsw": {"space": cast("Space", self.distance)}
                }
                self._collection = self.client.get_or_create_collection(
                    self.collection_name,
                    embedding_function=None,
                    configuration=configuration,
                )
            return self._collection

    @property
    def max_batch_size(self) -> int:  # type: ignore[override]
        """The native limit (``client.get_max_batch_size()``), capped by ``batch_size``."""
        if self._native_batch is None:
            with self._translate("get_max_batch_size"):
                self._native_batch = int(self.client.get_max_batch_size())
        if self._batch_size is None:
            return self._native_batch
        return min(self._batch_size, self._native_batch)

    @contextmanager
    def _translate(self, op: str) -> Iterator[None]:
        """Turn any client failure into MirrorError, and forget the collection handle.

        Forgetting the handle makes the next call re-open the collection, which heals a
        handle made stale by a server restart or a collection dropped elsewhere.
        """
        try:
            yield
        except MirrorError:
            raise
        except Exception as exc:
            with self._lock:
                self._collection = None
            raise MirrorError(f"chroma {op} on {self.collection_name!r} failed: {exc}") from exc

    # -- writes ---------------------------------------------------------------------

    def _upsert_batch(self, records: Sequence[MirrorRecord]) -> None:
        import numpy as np  # a dependency of chromadb

        ids = [r.fact_id for r in records]
        metadatas: list[dict[str, Any]] = [encode_metadata(r) for r in records]
        with self._translate("upsert"):
            coll = self.collection
            known = self._registered_keys(coll, metadatas)
            if known is None:  # shared client, or too many keys: read the points' keys
                existing = coll.get(ids=ids, include=["metadatas"])
                old_keys = {
                    fid: set(meta or ())
                    for fid, meta in zip(existing["ids"], existing["metadatas"] or [], strict=False)
                }
                for fid, meta in zip(ids, metadatas, strict=True):
                    for stale in old_keys.get(fid, set()) - meta.keys():
                        meta[stale] = None  # Chroma: None in an upsert removes the key
            else:
                for meta in metadatas:
                    for stale in known - meta.keys():
                        meta[stale] = None  # absent keys included: a no-op for Chroma
            # one float32 matrix, as Chroma stores it (and converts lists to, slowly)
            embeddings = np.asarray([r.embedding for r in records], dtype=np.float32)
            sent: list[Metadata] = list(metadatas)
            coll.upsert(
                ids=ids,
                embeddings=embeddings,
                metadatas=sent,
                documents=[r.content for r in records],
            )

    def _registered_keys(
        self, coll: Collection, metadatas: Sequence[Mapping[str, Any]]
    ) -> frozenset[str] | None:
        """The collection's key registry, grown (and written) to cover `metadatas`; None
        when this client must read the existing keys instead (see the module docstring)."""
        if self._shared_client():
            return None
        registry = _registry_for(str(coll.id))
        with registry.lock:
            if registry.keys is None and not registry.overflow:
                registry.keys = self._load_registry(coll)
                registry.overflow = registry.keys is None
            if registry.overflow or registry.keys is None:
                return None
            wanted = set().union(*(m.keys() for m in metadatas)) if metadatas else set()
            if wanted <= registry.keys:
                return registry.keys
            grown = registry.keys | wanted
            if len(grown) > MAX_REGISTRY_KEYS:
                self._save_registry(coll, None)  # from now on, every writer reads
                registry.overflow, registry.keys = True, None
                return None
            self._save_registry(coll, grown)  # before any point carries the new keys
            registry.keys = grown
            return grown

    def _shared_client(self) -> bool:
        """Whether other processes may write the collection through this client (a server)."""
        if self._url is not None:
            return True
        try:
            settings = self.client.get_settings()
        except Exception:  # cannot tell: be exact
            return True
        return bool(getattr(settings, "chroma_server_host", None)) or (
            getattr(settings, "chroma_api_impl", "") or ""
        ).endswith("FastAPI")

    def _load_registry(self, coll: Collection) -> frozenset[str] | None:
        """The registry stored in the collection (read fresh, not from a cached handle);
        built by one scan when the collection has points but no registry. None: overflow."""
        meta = self._fresh_metadata() or {}
        stored = meta.get(REGISTRY_KEY)
        if isinstance(stored, str):
            if stored == REGISTRY_OVERFLOW:
                return None
            try:
                keys = json.loads(stored)
            except ValueError:
                keys = None
            if isinstance(keys, list) and all(isinstance(k, str) for k in keys):
                return frozenset(keys)
        found: set[str] = set()  # no (readable) registry: learn the keys of every point
        offset, page = 0, self.max_batch_size
        while True:
            res = coll.get(include=["metadatas"], limit=page, offset=offset)
            for m in res["metadatas"] or []:
                found.update(m or ())
            if len(res["ids"]) < page:
                break
            offset += len(res["ids"])
        if len(found) > MAX_REGISTRY_KEYS:
            self._save_registry(coll, None)
            return None
        self._save_registry(coll, frozenset(found))
        return frozenset(found)

    def _fresh_metadata(self) -> dict[str, Any]:
        """The collection's metadata as stored now (a handle caches what it was)."""
        fresh = self.client.get_collection(self.collection_name, embedding_function=None)
        return dict(fresh.metadata or {})

    def _save_registry(self, coll: Collection, keys: frozenset[str] | set[str] | None) -> None:
        """Write the registry (None: overflow) into the collection metadata, keeping the
        other keys of that metadata."""
        current = dict(self._fresh_metadata() or {})
        current = {k: v for k, v in current.items() if not k.startswith("hnsw:")}
        current[REGISTRY_KEY] = (
            REGISTRY_OVERFLOW if keys is None else json.dumps(sorted(keys), separators=(",", ":"))
        )
        coll.modify(metadata=current)

    def _delete_batch(self, fact_ids: Sequence[str]) -> None:
        with self._translate("delete"):
            self.collection.delete(ids=list(fact_ids))

    # -- reads ----------------------------------------------------------------------

    def get(self, fact_ids: Sequence[str], *, with_vectors: bool = False) -> dict[str, MirrorPoint]:
        unique = list(dict.fromkeys(fact_ids))
        include: Include = ["metadatas", "documents"]
        if with_vectors:
            include.append("embeddings")
        points: dict[str, MirrorPoint] = {}
        for batch in chunked(unique, self.max_batch_size):
            with self._translate("get"):
                res = self.collection.get(ids=list(batch), include=include)
            metadatas: Sequence[Metadata | None] = res["metadatas"] or [None] * len(res["ids"])
            documents: Sequence[str | None] = res["documents"] or [None] * len(res["ids"])
            embeddings = res["embeddings"] if with_vectors else None
            for i, fid in enumerate(res["ids"]):
                meta = dict(metadatas[i] or {})
                if documents[i] is not None:
                    meta["content"] = documents[i]
                vector = None
                if embeddings is not None:
                    vector = [float(x) for x in embeddings[i]]
                points[fid] = MirrorPoint(
                    fact_id=fid, version=version_of(meta), embedding=vector, metadata=meta
                )
        return points

    def scan(self, page_size: int = 1000) -> Iterator[list[tuple[str, int]]]:
        for page in self.scan_tagged(page_size):
            yield [(fid, version) for fid, version, _ in page]

    def scan_tagged(self, page_size: int = 1000) -> Iterator[list[tuple[str, int, str | None]]]:
        if page_size < 1:
            raise ValueError(f"page_size must be >= 1, got {page_size}")
        offset = 0
        while True:
            with self._translate("scan"):
                res = self.collection.get(include=["metadatas"], limit=page_size, offset=offset)
            ids = res["ids"]
            if not ids:
                return
            metadatas: Sequence[Metadata | None] = res["metadatas"] or [None] * len(ids)
            page: list[tuple[str, int, str | None]] = []
            for fid, meta in zip(ids, metadatas, strict=True):
                payload = dict(meta or {})
                page.append((fid, version_of(payload), tag_of(payload)))
            yield page
            if len(ids) < page_size:
                return
            offset += len(ids)

    def query(
        self,
        vector: Sequence[float],
        k: int,
        *,
        namespace: str | None = None,
        type: str | None = None,
        embedding_model: str | None = None,
    ) -> list[MirrorHit]:
        """``collection.query`` with a ``where`` on the reserved metadata keys. Chroma
        answers distances (lower is closer); the score is ``1 - distance`` for cosine and
        ip (the similarity), ``-distance`` for l2."""
        q = check_query(vector, k)
        conditions = [
            {key: value} for key, value in payload_filter(namespace, type, embedding_model).items()
        ]
        where: Any = None
        if len(conditions) == 1:
            where = conditions[0]
        elif conditions:
            where = {"$and": conditions}
        with self._translate("query"):
            res = self.collection.query(
                query_embeddings=cast(Any, [q]),
                n_results=k,
                where=where,
                include=["metadatas", "distances"],
            )
        ids = res["ids"][0] if res["ids"] else []
        distances = (res["distances"] or [[]])[0]
        found: Any = res["metadatas"]
        metadatas: Sequence[Any] = found[0] if found else [None] * len(ids)
        similarity = self.distance != "l2"
        return [
            MirrorHit(
                fid, version_of(dict(meta or {})), 1.0 - float(d) if similarity else -float(d)
            )
            for fid, d, meta in zip(ids, distances, metadatas, strict=True)
        ]

    def count(self) -> int:
        with self._translate("count"):
            return int(self.collection.count())

    # -- admin ----------------------------------------------------------------------

    def reset(self) -> None:
        """Delete every point, page by page, keeping the collection (and its id).

        Dropping the collection would be faster but would leave every other handle to
        it (another process's mirror, the sync worker) pointing at a dead id.
        """
        page = self.max_batch_size
        while True:
            with self._translate("reset"):
                ids = self.collection.get(include=[], limit=page)["ids"]
                if not ids:
                    return
                self.collection.delete(ids=ids)

    def describe(self) -> dict[str, Any]:
        info: dict[str, Any] = {
            "kind": self.kind,
            "collection": self.collection_name,
            "distance": self.distance,
            "client": type(self.client).__name__,
        }
        if self._batch_size is not None:
            info["batch_size"] = self._batch_size
        if self._url is not None:
            info["url"] = self._url
        else:
            try:
                settings = self.client.get_settings()
            except Exception:  # describe must never fail; the settings are only a hint
                settings = None
            if settings is not None:
                if getattr(settings, "chroma_server_host", None):
                    scheme = "https" if settings.chroma_server_ssl_enabled else "http"
                    info["url"] = (
                        f"{scheme}://{settings.chroma_server_host}:"
                        f"{settings.chroma_server_http_port}"
                    )
                elif getattr(settings, "is_persistent", False):
                    info["path"] = str(settings.persist_directory)
        return info


class _Registry:
    """The key registry of one collection, shared by the mirrors of this process."""

    __slots__ = ("keys", "lock", "overflow")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.keys: frozenset[str] | None = None  # None: not loaded yet (or overflow)
        self.overflow = False


_registries: dict[str, _Registry] = {}
_registries_lock = threading.Lock()


def _registry_for(collection_id: str) -> _Registry:
    with _registries_lock:
        return _registries.setdefault(collection_id, _Registry())


def ephemeral_client() -> Any:
    """The process's in-memory Chroma client, with the settings every caller shares."""
    import chromadb
    from chromadb.config import Settings

    return chromadb.EphemeralClient(settings=Settings(anonymized_telemetry=False))


_COLLECTION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{1,510}[A-Za-z0-9]$")


def check_collection_name(name: str) -> str:
    """Chroma's rule for collection names (3-512 of A-Z a-z 0-9 . _ -, starting and ending
    with a letter or digit, no '..'), checked here so that a bad name is refused when the
    mirror is made, not as dead rows at every write."""
    if not isinstance(name, str) or not _COLLECTION.fullmatch(name) or ".." in name:
        raise ValidationFailed(
            f"{name!r} is not a Chroma collection name (3-512 of A-Z a-z 0-9 . _ -, starting "
            "and ending with a letter or digit): name the collection, e.g. "
            "NAME=chroma:LOCATION?collection=memory"
        )
    return name
