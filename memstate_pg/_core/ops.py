"""The operations of MemoryStore and AsyncMemoryStore, written once.

Each operation is a generator of the request vocabulary in protocol.py: it yields
`Embed(texts)` when it needs vectors, `Begin()` when the next statements must share one
transaction, and `Exec(query, params)` for SQL, and receives the result of each. The
runners in runner.py perform them with psycopg's sync or async API; store.py and aio.py
are thin public classes over them. So each query, check and rule exists in one place,
and the two stores cannot drift apart.

Rules of the write path live in SQL (sql/functions.sql); Python validates first (pydantic
models, NUL bytes, vector shape) so a bad input fails fast with a clear error and before
any embedding work, and the database checks again for SQL callers.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any, Generic, TypeVar
from uuid import UUID

from pydantic import TypeAdapter

from .. import queries
from ..embedders import Embedder, HashingEmbedder, check_vectors, validate_dim
from ..errors import ConflictError, NotFound, PermissionDenied, ValidationFailed
from ..mirrors.base import Mirror
from ..models import Constraint, Fact, FactVersion, Hit, MirrorStatus, ReembedReport
from ..sync.outbox import NIL_UUID, MirrorConfig, q
from ..types import FactType, check_json, check_name, check_text, filter_document, make_type
from ..vectors import Vec, VecList
from .checks import (
    INT4_MAX,
    check_directed,
    check_int,
    check_limit,
    check_meta,
    check_mirror_name,
    plain_vectors,
    to_uuid,
)
from .protocol import Attempt, Begin, Embed, Exec, ExecMany, Op
from .search_sql import SearchModel, statement

Q = queries.get
logger = logging.getLogger("memstate_pg")
_warned_default_embedder = False


def _warn_default_embedder() -> None:
    """Once per process: a store made without an embedder does not search by meaning."""
    global _warned_default_embedder
    if not _warned_default_embedder:
        _warned_default_embedder = True
        logger.warning(
            "no embedder given: using HashingEmbedder, a deterministic test embedder that "
            "matches words, not meaning; pass embedder=SentenceTransformerEmbedder(...) or "
            "OpenAIEmbedder(...) for semantic search (or HashingEmbedder() to silence this)"
        )


StoreT = TypeVar("StoreT")
ConnT = TypeVar("ConnT")
ProgressFn = Callable[[int, "int | None"], None]


# --- row -> model helpers ---------------------------------------------------------------


def fact_from_row(row: dict[str, Any]) -> Fact:
    return Fact(
        id=row["fact_id"],
        type=row["type"],
        payload=row["payload"],
        namespace=row["namespace"],
        session_id=row["session_id"],
        content=row["content"],
        embedding_model=row["embedding_model"],
        version=row["version"],
        commit_seq=row["commit_seq"],
        created_at=row["created_at"],
        updated_at=row.get("updated_at"),
    )


_HITS: TypeAdapter[list[Hit]] = TypeAdapter(list[Hit])


def hits_from_rows(rows: list[dict[str, Any]], namespace: str) -> list[Hit]:
    """Search rows as Hits, validated in one call (a third less than one Hit and one Fact
    at a time: a search builds k of each)."""
    return _HITS.validate_python(
        [
            {
                "fact": {
                    "id": r["fact_id"],
                    "type": r["type"],
                    "payload": r["payload"],
                    "namespace": namespace,
                    "session_id": r["session_id"],
                    "content": r["content"],
                    "embedding_model": r["embedding_model"],
                    "version": r["version"],
                    "commit_seq": r["commit_seq"],
                    "created_at": r["created_at"],
                    "updated_at": r["updated_at"],
                },
                "score": r["score"],
            }
            for r in rows
        ]
    )


def _dt_or_none(value: Any) -> datetime | None:
    return value if isinstance(value, datetime) else None


# --- the shared core -------------------------------------------------------------------


def check_search(
    k: int, type: str | None, session_id: str | None, filters: dict[str, Any] | None
) -> dict[str, Any] | None:
    """A search's arguments (every search: pgvector's and the judged one): the filter
    document, or None."""
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= 1000:
        raise ValidationFailed("k must be an int between 1 and 1000")
    if type is not None:
        check_name("type", type)
    check_name("session_id", session_id, optional=True)
    return filter_document(filters)


class StoreCore:
    """State and operations shared by MemoryStore and AsyncMemoryStore."""

    def __init__(
        self,
        *,
        embedder: Embedder | None = None,
        namespace: str | None = None,
        max_payload_bytes: int = 1 << 20,
        hnsw_m: int = 16,
        hnsw_ef_construction: int = 64,
        strict_types: bool = False,
    ) -> None:
        if embedder is None:
            _warn_default_embedder()
            embedder = HashingEmbedder(dim=384)
        self.embedder: Embedder = embedder
        if namespace is not None:
            check_name("namespace", namespace)
        self.namespace = namespace  # a store bound to one namespace refuses every other
        self.max_payload_bytes = max_payload_bytes
        self.hnsw_m = hnsw_m
        self.hnsw_ef_construction = hnsw_ef_construction
        # schemaless by default: a type nobody registered is stored as given; strict_types
        # refuses it (as the database does for SQL callers with config strict_types)
        self.strict_types = strict_types
        self._types: dict[str, FactType] = {}
        self._models_ready: set[str] = set()
        self._search_models: dict[str, SearchModel] = {}  # see _core/search_sql.py
        # (model, namespace, type) searches with more than 'search_exact_max' candidates,
        # searched with HNSW first: the searches left until the cap is probed again
        self._search_large: dict[tuple[str, str, str | None], int] = {}
        self._mirrors: dict[str, Mirror] = {}  # Mirror objects of this process, by name

    # -- scope ---------------------------------------------------------------------------

    def _ns(self, namespace: str | None, fact: Fact | None = None) -> str:
        ns = next(
            (
                n
                for n in (namespace, fact.namespace if fact is not None else None, self.namespace)
                if n is not None
            ),
            "default",
        )
        check_name("namespace", ns)
        if self.namespace is not None and ns != self.namespace:
            raise PermissionDenied(
                f"this store is bound to namespace {self.namespace!r}, not {ns!r}"
            )
        return ns

    def _held_mirror(self, name: str) -> Mirror | None:
        return self._mirrors.get(check_mirror_name(name))

    # -- registration --------------------------------------------------------------------

    def _op_register_schema(
        self, type_name: str, model: Any, constraint: Constraint | None, text_field: str | None
    ) -> Op[FactType]:
        ftype = make_type(type_name, model, constraint, text_field)
        yield from self._op_model(self.embedder.model, self.embedder.dim)
        row = yield Exec(Q("get_type"), {"type": ftype.name})
        same = row is not None and (
            row["json_schema"],
            row["singleton_key"],
            row["immutable"],
            row["text_field"],
        ) == (
            ftype.json_schema,
            ftype.constraint.singleton_key,
            ftype.constraint.immutable,
            ftype.text_field,
        )
        if same:  # already registered as is: no write (app roles may not write types)
            self._types[ftype.name] = ftype
            return ftype
        yield Exec(
            Q("register_type"),
            {
                "type": ftype.name,
                "json_schema": json.dumps(ftype.json_schema)
                if ftype.json_schema is not None
                else None,
                "singleton_key": ftype.constraint.singleton_key,
                "immutable": ftype.constraint.immutable,
                "text_field": ftype.text_field,
            },
        )
        self._types[ftype.name] = ftype
        return ftype

    def _op_type(self, type_name: str) -> Op[FactType]:
        """The type as this process knows it, else as registered in the database."""
        check_name("type", type_name)
        ftype = self._types.get(type_name)
        if ftype is not None:
            return ftype
        row = yield Exec(Q("get_type"), {"type": type_name})
        if row is None:
            if self.strict_types:
                raise ValidationFailed(
                    f"unknown fact type {type_name!r}: register it with register_schema() "
                    "(this store was made with strict_types=True)"
                )
            ftype = FactType.schemaless(type_name)
            self._types[type_name] = ftype
            return ftype
        ftype = FactType(
            row["type"],
            None,
            Constraint(singleton_key=row["singleton_key"], immutable=row["immutable"]),
            row["text_field"],
            row["json_schema"],
        )
        self._types[type_name] = ftype
        return ftype

    def _op_model(self, model: str, dim: int) -> Op[None]:
        """Registers the embedding model (and builds its HNSW index) once per store, on a
        connection of its own: a caller's transaction that rolls back must not take the
        registration with it while this store believes it done."""
        if model not in self._models_ready:
            yield Exec(
                Q("register_model"),
                {
                    "model": model,
                    "dim": dim,
                    "m": self.hnsw_m,
                    "ef_construction": self.hnsw_ef_construction,
                },
                autonomous=True,
            )
            self._models_ready.add(model)

    # -- writes --------------------------------------------------------------------------

    def _prepare_write(self, ftype: FactType, payload: Any, content: str | None) -> tuple[str, str]:
        clean = ftype.validate(payload)
        payload_text = check_json("payload", clean, max_bytes=self.max_payload_bytes)
        text = content if content is not None else ftype.content_of(clean)
        if not isinstance(text, str):
            raise ValidationFailed("content must be a string")
        check_text("content", text)
        return payload_text, text

    def _op_vectors(
        self, texts: list[str], given: list[Any] | None = None, model: str | None = None
    ) -> Op[tuple[list[list[float]], str, int]]:
        """Vectors for `texts` (one Embed request for all), or the caller's own vectors."""
        if given is not None:
            dim = len(given[0]) if given and hasattr(given[0], "__len__") else 0
            if model is None or model == self.embedder.model:
                model, dim = self.embedder.model, self.embedder.dim
            check_name("embedding_model", model, limit=100)
            if validate_dim(dim) and plain_vectors(given, dim):
                return [list(v) for v in given], model, dim  # lists of floats already
            check_vectors(given, dim)
            vectors = [list(map(float, v)) for v in given]
            check_directed(vectors)
            return vectors, model, dim
        vectors = yield Embed(texts)
        if not plain_vectors(vectors, self.embedder.dim):
            check_vectors(vectors, self.embedder.dim)
            check_directed(vectors)
        return vectors, self.embedder.model, self.embedder.dim

    def _write_params(
        self,
        *,
        ns: str,
        ftype: FactType,
        payload_text: str,
        content: str,
        vec: list[float],
        model: str,
        session_id: str | None,
        fact_id: UUID | str | None,
        expected_version: int | None,
        actor: str | None,
        reason: str | None,
        idempotency_key: str | None,
        mode: str,
    ) -> dict[str, Any]:
        for label, value in (
            ("session_id", session_id),
            ("actor", actor),
            ("idempotency_key", idempotency_key),
        ):
            check_name(label, value, optional=True)
        if reason is not None:
            check_name("reason", reason, limit=2000)
        return {
            "namespace": ns,
            "type": ftype.name,
            "payload": payload_text,
            "content": content,
            "embedding": Vec(vec),
            "model": model,
            "session_id": session_id,
            "fact_id": str(fact_id) if fact_id is not None else None,
            "expected_version": expected_version,
            "actor": actor,
            "reason": reason,
            "idempotency_key": idempotency_key,
            "mode": mode,
        }

    def _op_commit(
        self,
        fact: Fact,
        *,
        namespace: str | None = None,
        session_id: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
        expected_version: int | None = None,
    ) -> Op[UUID]:
        if not isinstance(fact, Fact):
            raise ValidationFailed("commit() takes a Fact")
        ns = self._ns(namespace, fact)
        ftype = yield from self._op_type(fact.type)
        payload_text, content = self._prepare_write(ftype, fact.payload, fact.content)
        given = [fact.embedding] if fact.embedding is not None else None
        vectors, model, dim = yield from self._op_vectors([content], given, fact.embedding_model)
        yield from self._op_model(model, dim)
        row = yield Exec(
            Q("write_fact"),
            self._write_params(
                ns=ns,
                ftype=ftype,
                payload_text=payload_text,
                content=content,
                vec=vectors[0],
                model=model,
                session_id=session_id if session_id is not None else fact.session_id,
                fact_id=fact.id,
                expected_version=expected_version,
                actor=actor,
                reason=reason,
                idempotency_key=idempotency_key,
                mode="put",
            ),
        )
        fact_id: UUID = row["fact_id"]
        return fact_id

    def _op_commit_many(
        self,
        facts: Sequence[Fact],
        *,
        namespace: str | None = None,
        session_id: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> Op[list[UUID]]:
        """Many facts, one embedding call, one commit seq, one statement."""
        facts = list(facts)
        if not all(isinstance(f, Fact) for f in facts):
            raise ValidationFailed("commit_many() takes Facts")
        if not facts:
            return []
        ns = self._ns(namespace, facts[0])
        prepared = []
        own = [f.embedding is not None for f in facts]
        if any(own) and not all(own):
            raise ValidationFailed("commit_many(): give a vector for every fact or for none")
        for fact in facts:
            if self._ns(namespace, fact) != ns:
                raise ValidationFailed("commit_many() writes one namespace at a time")
            ftype = yield from self._op_type(fact.type)
            prepared.append((fact, ftype, *self._prepare_write(ftype, fact.payload, fact.content)))
        check_meta(session_id=session_id, actor=actor, reason=reason)
        check_name("idempotency_key", idempotency_key, optional=True)
        sessions = [session_id if session_id is not None else f.session_id for f in facts]
        for sid in sessions:
            check_name("session_id", sid, optional=True)
        given = [f.embedding for f in facts] if all(own) else None
        vectors, model, dim = yield from self._op_vectors(
            [p[3] for p in prepared], given, facts[0].embedding_model
        )
        yield from self._op_model(model, dim)
        # one statement, so one round trip and (outside a caller's transaction) its own
        # transaction: memstate.write_facts opens the commit (or replays an idempotent one,
        # or joins the one open in the caller's transaction) and writes the new facts, the
        # singleton holders' new versions and all version rows set-based
        rows = yield Exec(
            Q("write_facts"),
            {
                "namespace": ns,
                "types": [p[1].name for p in prepared],
                "payloads": [p[2] for p in prepared],
                "contents": [p[3] for p in prepared],
                "embeddings": VecList(vectors),
                "model": model,
                "session_ids": sessions if any(s is not None for s in sessions) else None,
                "fact_ids": [str(f.id) if f.id is not None else None for f in facts]
                if any(f.id is not None for f in facts)
                else None,
                "actor": actor,
                "reason": reason,
                "idempotency_key": idempotency_key,
                "session_id": session_id,
            },
            "all",
        )
        return [r["fact_id"] for r in rows]

    def _op_update(
        self,
        fact_id: UUID | str,
        changes: dict[str, Any],
        *,
        expected_version: int | None = None,
        actor: str | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> Op[int]:
        if not isinstance(changes, dict):
            raise ValidationFailed("update() takes a dict of changes: payload, content, session_id")
        unknown = set(changes) - {"payload", "content", "session_id"}
        if unknown:
            raise ValidationFailed(
                f"update() cannot change {sorted(unknown, key=repr)}: only payload, content, session_id"
            )
        fid = to_uuid(fact_id)
        row = yield Exec(Q("get_fact"), {"fact_id": str(fid), "namespace": self.namespace})
        if row is None:
            raise NotFound(f"no live fact {fid}")
        current = fact_from_row(row)
        ftype = yield from self._op_type(current.type)
        payload = changes.get("payload", current.payload)
        content = changes.get("content")
        if content is None and "payload" not in changes:
            content = current.content
        payload_text, content = self._prepare_write(ftype, payload, content)
        vectors, model, dim = yield from self._op_vectors([content])
        yield from self._op_model(model, dim)
        row = yield Exec(
            Q("write_fact"),
            self._write_params(
                ns=row["namespace"],
                ftype=ftype,
                payload_text=payload_text,
                content=content,
                vec=vectors[0],
                model=model,
                session_id=changes.get("session_id", current.session_id),
                fact_id=fid,
                expected_version=expected_version,
                actor=actor,
                reason=reason,
                idempotency_key=idempotency_key,
                mode="update",
            ),
        )
        version: int = row["version"]
        return version

    def _op_delete(
        self,
        fact_id: UUID | str,
        *,
        expected_version: int | None = None,
        actor: str | None = None,
        reason: str | None = None,
        idempotency_key: str | None = None,
    ) -> Op[int]:
        fid = to_uuid(fact_id)
        check_meta(actor=actor, reason=reason)
        check_name("idempotency_key", idempotency_key, optional=True)
        if self.namespace is not None:
            row = yield Exec(Q("get_fact"), {"fact_id": str(fid), "namespace": self.namespace})
            if row is None:
                raise NotFound(f"no live fact {fid} in namespace {self.namespace!r}")
        row = yield Exec(
            Q("delete_fact"),
            {
                "fact_id": str(fid),
                "expected_version": expected_version,
                "actor": actor,
                "reason": reason,
                "idempotency_key": idempotency_key,
            },
        )
        seq: int = row["seq"]
        return seq

    def _op_open_commit(
        self,
        namespace: str | None,
        session_id: str | None,
        actor: str | None,
        reason: str | None,
        idempotency_key: str | None,
    ) -> Op[tuple[str, dict[str, Any]]]:
        ns = self._ns(namespace)
        for label, value in (
            ("session_id", session_id),
            ("actor", actor),
            ("idempotency_key", idempotency_key),
        ):
            check_name(label, value, optional=True)
        check_meta(reason=reason)
        row = yield Exec(
            Q("open_commit"),
            {
                "namespace": ns,
                "session_id": session_id,
                "actor": actor,
                "reason": reason,
                "idempotency_key": idempotency_key,
            },
        )
        return ns, row

    def _op_rollback(
        self,
        steps: int = 1,
        *,
        namespace: str | None = None,
        session_id: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> Op[int]:
        check_int("steps", steps, 1, INT4_MAX)
        check_meta(session_id=session_id, actor=actor, reason=reason)
        row = yield Exec(
            Q("rollback"),
            {
                "namespace": self._ns(namespace),
                "steps": steps,
                "session_id": session_id,
                "actor": actor,
                "reason": reason,
            },
        )
        seq: int = row["seq"]
        return seq

    def _op_revert(
        self, seq: int, *, actor: str | None = None, reason: str | None = None
    ) -> Op[int]:
        check_int("seq", seq)
        check_meta(actor=actor, reason=reason)
        if self.namespace is not None:
            row = yield Exec(Q("commit_in_namespace"), {"seq": seq, "namespace": self.namespace})
            if not row["found"]:
                raise NotFound(f"no commit {seq} in namespace {self.namespace!r}")
        row = yield Exec(Q("revert"), {"seq": seq, "actor": actor, "reason": reason})
        done: int = row["seq"]
        return done

    def _op_session(
        self,
        which: str,
        session_id: str,
        *,
        namespace: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> Op[int | None]:
        check_name("session_id", session_id)
        check_meta(actor=actor, reason=reason)
        row = yield Exec(
            Q(which),
            {
                "namespace": self._ns(namespace),
                "session_id": session_id,
                "actor": actor,
                "reason": reason,
            },
        )
        seq: int | None = row["seq"]
        return seq

    # -- reads ---------------------------------------------------------------------------

    def _op_get(self, fact_id: UUID | str) -> Op[Fact | None]:
        row = yield Exec(
            Q("get_fact"), {"fact_id": str(to_uuid(fact_id)), "namespace": self.namespace}
        )
        return fact_from_row(row) if row else None

    def _op_query(
        self,
        type: str | None = None,
        filters: dict[str, Any] | None = None,
        *,
        namespace: str | None = None,
        session_id: str | None = None,
        limit: int | None = None,
    ) -> Op[list[Fact]]:
        if type is not None:
            check_name("type", type)
        check_name("session_id", session_id, optional=True)
        check_limit(limit)
        doc = filter_document(filters)
        rows = yield Exec(
            Q("query_facts"),
            {
                "namespace": self._ns(namespace),
                "type": type,
                "filter": json.dumps(doc) if doc is not None else None,
                "session_id": session_id,
                "limit": limit,
            },
            "all",
        )
        return [fact_from_row(r) for r in rows]

    def _op_query_vector(self, query: str | Sequence[float]) -> Op[tuple[list[list[float]], str]]:
        """A search's query as ([vector], model): a text embedded with the store's embedder,
        or a vector checked and taken as the embedder's model."""
        if isinstance(query, str):
            check_text("query", query)
            vectors, model, _ = yield from self._op_vectors([query])
        else:
            vectors, model, _ = yield from self._op_vectors([], [query], self.embedder.model)
        return vectors, model

    def _op_search(
        self,
        query: str | Sequence[float],
        k: int = 5,
        *,
        namespace: str | None = None,
        type: str | None = None,
        filters: dict[str, Any] | None = None,
        session_id: str | None = None,
    ) -> Op[list[Hit]]:
        doc = check_search(k, type, session_id, filters)
        ns = self._ns(namespace)
        vectors, model = yield from self._op_query_vector(query)
        shape = self._search_models.get(model)
        if shape is None:
            # nothing was ever written with this model: no fact to find (and no DDL on a read)
            row = yield Exec(Q("search_model"), {"model": model})
            if row is None:
                return []
            shape = SearchModel(row["dim"], row["index_name"] is not None, row["vector_schema"])
            self._search_models[model] = shape
            self._models_ready.add(model)  # registered: writes need not register it again
        if len(vectors[0]) != shape.dim:
            raise ValidationFailed(
                f"query has {len(vectors[0])} dimensions, model {model!r} has {shape.dim}"
            )
        params = {
            "namespace": ns,
            "query": Vec(vectors[0]),
            "k": k,
            "filter": json.dumps(doc) if doc is not None else None,
            "type": type,
            "model": model,
            "session_id": session_id,
        }
        # the statement of memstate.search run directly; when it may have stopped short,
        # memstate.search itself answers (see _core/search_sql.py)
        if doc is not None or session_id is not None:
            query, _ = statement(
                shape,
                model=model,
                namespace=ns,
                k=k,
                payload_filter=doc is not None,
                fact_type=type is not None,
                session=session_id is not None,
            )
            rows = yield Exec(query, params, "all")
            if not rows:
                rows = yield Exec(Q("search"), params, "all")
        else:
            rows = yield from self._op_search_namespace(shape, model, ns, k, type, params)
        return hits_from_rows(rows, ns)

    def _op_search_namespace(
        self,
        shape: SearchModel,
        model: str,
        ns: str,
        k: int,
        type: str | None,
        params: dict[str, Any],
    ) -> Op[list[dict[str, Any]]]:
        """An unfiltered search (the type may be given): exact over a namespace's candidates
        while they are at most 'search_exact_max' (one prepared statement for every
        namespace), else HNSW, as memstate.search decides. A namespace found over the cap is
        remembered, and searched with HNSW first for its next SEARCH_LARGE_RECHECK searches."""
        key = (model, ns, type)
        left = self._search_large.get(key)
        if left is None:
            query, _ = statement(
                shape,
                model=model,
                namespace=None,
                k=k,
                payload_filter=False,
                fact_type=type is not None,
                session=False,
            )
            exact: list[dict[str, Any]] = yield Exec(query, params, "all")
            if exact:
                return exact  # at most the cap: exact
        elif left > 1:
            self._search_large[key] = left - 1
        else:
            del self._search_large[key]  # probe the cap again next time
        # over the cap (or none at all): the HNSW plan of memstate.search
        query, _ = statement(
            shape,
            model=model,
            namespace=ns,
            k=k,
            payload_filter=False,
            fact_type=type is not None,
            session=False,
        )
        rows: list[dict[str, Any]] = yield Exec(query, params, "all")
        if len(rows) < k:
            rows = yield Exec(Q("search"), params, "all")
        if rows and left is None:
            # the exact statement gave no row, HNSW did: more candidates than the cap
            if len(self._search_large) >= SEARCH_LARGE_MAX:
                self._search_large.clear()
            self._search_large[key] = SEARCH_LARGE_RECHECK
        return rows

    def _op_history(
        self,
        fact_id: UUID | str | None = None,
        *,
        namespace: str | None = None,
        limit: int | None = None,
        newest_first: bool = False,
    ) -> Op[list[FactVersion]]:
        check_limit(limit)
        if fact_id is not None:
            rows = yield Exec(
                Q("history_fact"),
                {"fact_id": str(to_uuid(fact_id)), "namespace": self.namespace},
                "all",
            )
            rows = rows[::-1] if newest_first else rows
            rows = rows if limit is None else rows[:limit]
        else:
            query = Q("history_namespace_newest" if newest_first else "history_namespace")
            rows = yield Exec(query, {"namespace": self._ns(namespace), "limit": limit}, "all")
        return [FactVersion(**r) for r in rows]

    def _op_as_of(self, point: int | datetime, *, namespace: str | None = None) -> Op[list[Fact]]:
        ns = self._ns(namespace)
        if isinstance(point, datetime):
            row = yield Exec(Q("seq_at"), {"namespace": ns, "at": point})
            seq = row["seq"]
            if seq is None:
                return []
        elif isinstance(point, int) and not isinstance(point, bool):
            seq = check_int("seq", point)
        else:
            raise ValidationFailed("as_of() takes a commit seq (int) or a datetime")
        rows = yield Exec(Q("as_of"), {"namespace": ns, "seq": seq}, "all")
        return [fact_from_row(r) for r in rows]

    def _op_commits(
        self, *, namespace: str | None = None, limit: int | None = 20
    ) -> Op[list[dict[str, Any]]]:
        check_limit(limit)
        rows = yield Exec(Q("commits"), {"namespace": self._ns(namespace), "limit": limit}, "all")
        commits: list[dict[str, Any]] = rows
        return commits

    def _op_status(self) -> Op[dict[str, MirrorStatus]]:
        rows = yield Exec(Q("mirror_status"), None, "all")
        return {r["name"]: MirrorStatus(**r) for r in rows}

    # -- the embedding-model lifecycle ---------------------------------------------------

    def _op_reembed(
        self,
        embedder: Embedder,
        *,
        namespace: str | None = None,
        batch_size: int = 256,
        progress: ProgressFn | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> Op[ReembedReport]:
        """Move every live fact of a namespace to `embedder`'s model.

        Stage: the facts without a vector of the new model for their current version are
        embedded batch by batch, each batch written beside the current vectors in its own
        short transaction (memstate.reembed_vectors), so a killed run resumes where it
        stopped. Switch: memstate.reembed_apply, one commit, moves every fact (a new version
        each) and makes the model the namespace's active one; a fact written or changed since
        it was staged makes it switch nothing, and is staged in the next round. Afterwards
        this store embeds with `embedder`."""
        if not isinstance(embedder, Embedder):
            raise ValidationFailed(f"reembed() takes an Embedder, not {type(embedder).__name__}")
        check_int("batch_size", batch_size, 1, 100_000)
        check_meta(actor=actor, reason=reason)
        ns = self._ns(namespace)
        model, dim = embedder.model, embedder.dim
        check_name("embedding_model", model, limit=100)
        started = time.monotonic()
        yield from self._op_model(model, dim)
        staged = 0
        for _round in range(REEMBED_ROUNDS):
            todo = yield Exec(Q("reembed_todo"), {"namespace": ns, "model": model})
            total = staged + todo["pending"]
            if progress is not None:
                progress(staged, total)
            after: UUID | str = NIL_UUID
            while todo["pending"]:
                rows = yield Exec(
                    Q("reembed_pending"),
                    {"namespace": ns, "model": model, "after": after, "limit": batch_size},
                    "all",
                )
                if not rows:
                    break
                vectors = yield Embed([r["content"] for r in rows], embedder=embedder)
                check_vectors(vectors, dim)
                check_directed(vectors)
                params = [
                    {
                        "model": model,
                        "fact_id": str(r["fact_id"]),
                        "namespace": ns,
                        "version": r["version"],
                        "embedding": Vec(list(map(float, v))),
                    }
                    for r, v in zip(rows, vectors, strict=True)
                ]
                stored = yield Attempt(_stage_batch(params))  # its own short transaction
                if stored.error is not None:
                    raise stored.error
                staged += len(rows)
                after = str(rows[-1]["fact_id"])
                if progress is not None:
                    progress(staged, max(total, staged))
                if len(rows) < batch_size:
                    break
            outcome = yield Attempt(_apply_reembed(ns, model, actor, reason))
            if outcome.error is not None:
                raise outcome.error
            switched, missing = outcome.value
            if not missing:
                self.embedder = embedder
                return ReembedReport(
                    namespace=ns,
                    model=model,
                    staged=staged,
                    switched=switched,
                    seconds=time.monotonic() - started,
                )
        raise ConflictError(
            f"namespace {ns!r} kept changing during {REEMBED_ROUNDS} re-embed rounds: its "
            f"vectors of {model!r} are staged; run reembed again when writes are quieter"
        )


SEARCH_LARGE_RECHECK = 1000  # HNSW-first searches of a namespace before its size is probed again
SEARCH_LARGE_MAX = 10_000  # namespaces remembered as over the exact cap (then forgotten at once)
REEMBED_ROUNDS = 10  # stage-and-switch rounds before a re-embed gives up on a busy namespace


def _stage_batch(params: list[dict[str, Any]]) -> Op[None]:
    """One batch of a re-embed's vectors, written in one transaction."""
    yield Begin()
    yield ExecMany(Q("reembed_stage"), params)


def _apply_reembed(
    namespace: str, model: str, actor: str | None, reason: str | None
) -> Op[tuple[int, int]]:
    """The switch of a re-embed, in one transaction: (facts switched, facts still unstaged)."""
    yield Begin()
    row = yield Exec(
        Q("reembed_apply"),
        {"namespace": namespace, "model": model, "actor": actor, "reason": reason},
    )
    return int(row["switched"]), int(row["missing"])


class TransactionBase(Generic[StoreT, ConnT]):
    """What a sync and an async transaction share: one open commit (seq) and, when its
    idempotency key was used before, the earlier results handed back in order."""

    def __init__(
        self,
        store: StoreT,
        conn: ConnT,
        namespace: str,
        opened: dict[str, Any],
        session_id: str | None,
    ) -> None:
        self._store = store
        self._conn = conn
        self.namespace = namespace
        self.session_id = session_id
        self.seq: int = opened["seq"]
        self.replayed: bool = opened["replayed"]
        self._replay = [UUID(x) for x in (opened["result"] or [])]

    @property
    def connection(self) -> ConnT:
        """The connection of this transaction, for your own SQL in the same commit."""
        return self._conn

    def _replayed(self) -> UUID:
        """The next result the first run of this idempotent transaction recorded."""
        if not self._replay:
            raise ConflictError(
                f"commit {self.seq} was already made with this idempotency key and wrote fewer "
                "facts than this retry: a retry must repeat the same writes (or use a new key)"
            )
        return self._replay.pop(0)


# --- the mirror registry and backfill ---------------------------------------------------
# Backfill: registering a mirror on a database that already holds facts enqueues one
# outbox row per live fact in the mirror's scope, in keyset pages by fact_id, each page its
# own short transaction (INSERT … SELECT … WHERE NOT EXISTS, sql/sync_queries.sql
# `backfill_page`). Resumable: a run that stopped half way enqueues, when started again,
# only the facts that have no pending row for the mirror yet. Changes committed meanwhile
# are enqueued by the outbox trigger as usual; the odd duplicate row is coalesced by the
# worker.

DEFAULT_PAGE = 5000
ANY_MODEL = "*"  # add_mirror(model=ANY_MODEL): the mirror takes the versions of every model


def _names(label: str, values: Sequence[str] | str | None, *, allow_none: bool) -> list[str] | None:
    if values is None:
        return None if allow_none else []
    if isinstance(values, str):
        values = [values]
    try:
        out = list(values)
    except TypeError:
        raise ValidationFailed(f"{label} must be a list of strings") from None
    for value in out:
        check_name(label, value)
    if allow_none and not out:
        raise ValidationFailed(f"{label}=[] would take nothing: pass None for all")
    return out


def register_mirror(
    mirror: Mirror,
    name: str | None,
    *,
    metadata_fields: Sequence[str] = (),
    namespaces: Sequence[str] | None = None,
    types: Sequence[str] | None = None,
    model: str | None = None,
) -> Op[str]:
    """Insert or update the registry row of a mirror (enabled). Returns its name (default:
    the mirror's kind). `model`: the embedding model whose versions it takes (None or
    ANY_MODEL: every model)."""
    if not isinstance(mirror, Mirror):
        raise ValidationFailed(f"add_mirror() takes a Mirror, not {type(mirror).__name__}")
    name = mirror.kind if name is None else name
    check_mirror_name(name)
    if model == ANY_MODEL:
        model = None
    if model is not None:
        check_name("model", model, limit=100)
    store = mirror.store_key()
    if store is not None:  # two mirrors in one collection would delete each other's points
        other = yield Exec(q("mirror_on_store"), {"store": store, "name": name})
        if other is not None:
            raise ValidationFailed(
                f"mirror {other['name']!r} already writes to {store.replace('|', ' ')}: "
                f"give {name!r} a collection of its own (e.g. collection={name!r})"
            )
    row = yield Exec(
        q("upsert_mirror"),
        {
            "store": store,
            "name": name,
            "kind": mirror.kind,
            "namespaces": _names("namespaces", namespaces, allow_none=True),
            "types": _names("types", types, allow_none=True),
            "metadata_fields": _names("metadata_fields", metadata_fields, allow_none=False),
            "options": json.dumps(mirror.describe(), default=str),
            "model": model,
        },
    )
    assert row is not None
    return name


def mirror_config(name: str) -> Op[MirrorConfig]:
    check_mirror_name(name)
    row = yield Exec(q("mirror_config"), {"name": name})
    if row is None:
        raise NotFound(f"no mirror {name!r} in memstate.mirrors")
    return MirrorConfig.from_row(row)


def backfill(
    name: str,
    *,
    page_size: int = DEFAULT_PAGE,
    progress: Callable[[int, int | None], None] | None = None,
) -> Op[int]:
    """Enqueue every live fact in the scope of mirror `name` that has no pending row yet.
    Returns the number of rows enqueued. `progress(scanned, total)` after every page."""
    if page_size < 1:
        raise ValidationFailed("page_size must be at least 1")
    config: MirrorConfig = yield from mirror_config(name)
    scope = config.scope_params()
    total = (yield Exec(q("scope_count"), scope))["n"]
    if progress is not None:
        progress(0, total)
    scanned = queued = 0
    start, exclude = NIL_UUID, None
    while True:
        row = yield Exec(
            q("backfill_page"),
            {**scope, "mirror": name, "start": start, "exclude": exclude, "limit": page_size},
        )
        if not row["scanned"]:
            break
        scanned += row["scanned"]
        queued += row["queued"]
        start = exclude = row["last_id"]
        if progress is not None:
            progress(scanned, max(total, scanned))
        if row["scanned"] < page_size:
            break
    if queued:
        yield Exec(q("notify"), None, "none")
    return queued


def remove_mirror(name: str) -> Op[None]:
    check_mirror_name(name)
    row = yield Exec(q("delete_mirror"), {"name": name})
    if row is None:
        raise NotFound(f"no mirror {name!r} in memstate.mirrors")


def requeue(name: str, *, dead_only: bool = True) -> Op[int]:
    """Make dead rows (and, unless dead_only, rows waiting in backoff) ready again, with
    their attempts reset. Returns how many."""
    yield from mirror_config(name)
    row = yield Exec(q("requeue"), {"mirror": name, "dead_only": dead_only})
    if row["n"]:
        yield Exec(q("notify"), None, "none")
    return int(row["n"])


def dead_rows(name: str, limit: int = 50) -> Op[list[dict[str, Any]]]:
    yield from mirror_config(name)
    rows = yield Exec(q("dead_rows"), {"mirror": name, "limit": limit}, "all")
    dead: list[dict[str, Any]] = rows
    return dead


def rebuild_mirror(name: str, config: MirrorConfig) -> Mirror:
    """A Mirror object for a registered mirror, from the options it stored at registration."""
    from ..sync.specs import mirror_from_options

    mirror = mirror_from_options(config.kind, config.options)
    if mirror is None:
        raise NotFound(
            f"mirror {name!r} ({config.kind}) has no Mirror object in this process and cannot be "
            "rebuilt from its options: add_mirror(mirror, name) here, or pass it to SyncWorker"
        )
    return mirror


def check_mirror_kind(name: str, mirror: Mirror) -> Op[None]:
    """use_mirror(): `mirror` is a Mirror of the kind registered as `name`. Reads
    memstate.mirror_info (not the registry), so a tenant may hold a client object for a
    mirror that covers its namespaces (e.g. for search(via=name))."""
    if not isinstance(mirror, Mirror):
        raise ValidationFailed(f"use_mirror() takes a Mirror, not {type(mirror).__name__}")
    check_mirror_name(name)
    row = yield Exec(Q("mirror_kind"), {"name": name})
    if row is None:
        raise NotFound(f"no mirror {name!r} that this role may use")
    if row["kind"] != mirror.kind:
        raise ValidationFailed(f"mirror {name!r} is registered as {row['kind']}, not {mirror.kind}")
