"""What MemStateStore and AsyncMemStateStore share: SQL, rows, and the operations (sans-IO).

Each operation is a generator of memstate-pg's one request vocabulary
(memstate_pg/_core/protocol.py: ``Embed``, ``Begin``, ``Exec``, ``ExecMany``, ``Attempt``),
performed by the MemoryStore's or AsyncMemoryStore's own runner (``memory._run(op)``). The
writes are the memory store's core operations (``_op_commit``, ``_op_commit_many``,
``_op_open_commit``, ``_op_delete``), composed with ``yield from``; LangGraph's embeddings
are handed to the runner as ``Embed(texts, embedder=...)``. So the two classes in
``__init__.py`` and ``aio.py`` differ only by ``def`` and ``async def``.

How a LangGraph item maps to memstate (see also sql/langgraph.sql):

* every item is a live fact of type ``lg_item`` in one memstate namespace (the store's
  ``namespace``, default ``"langgraph"``), so it is versioned, undoable by
  ``rollback``/``revert``, mirrored to Chroma/Qdrant and searchable with pgvector;
* its payload holds the LangGraph namespace (``ns``), ``key``, ``value``, and
  ``ns_key`` - the JSON text of ``[*namespace, key]``, the type's singleton key, so one
  (namespace, key) is one fact and a put of an existing key is an update of that fact
  (new version, same id, ``created_at`` kept);
* ``prefixes`` (``["a", "a.b"]`` for namespace ``("a", "b")``) turns a namespace-prefix
  search into an indexed containment test; LangGraph forbids "." in labels.

Semantics follow LangGraph's stores: reads of a batch see the state before its writes,
the last PutOp of a (namespace, key) wins, ``value=None`` deletes, search without
``query`` lists the most recently updated first (as PostgresStore), filters use
LangGraph's operators ($eq, $ne, $gt, $gte, $lt, $lte; nested dicts match partially,
lists exactly). All writes of one batch are one memstate commit: ``rollback(1)`` undoes
the whole batch. A batch is validated whole (filters, limits, values) before any I/O.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict
from uuid import UUID

from langgraph.store.base import (
    GetOp,
    IndexConfig,
    Item,
    ListNamespacesOp,
    Op,
    PutOp,
    Result,
    SearchItem,
    SearchOp,
    TTLConfig,
    validate_op_namespace,
)
from psycopg.types.json import Jsonb

from ... import queries
from ..._core.protocol import Attempt, Begin, Embed, Exec
from ..._core.protocol import Op as CoreOp
from ...embedders import check_vectors
from ...errors import ConflictError, NotFound, ValidationFailed
from ...models import Constraint, Fact, FactVersion
from ...vectors import vector_text
from ..embeddings import TextExtractor, index_embedders

__all__ = [
    "LG_TYPE",
    "MAX_FILTER_BYTES",
    "MAX_FILTER_CONDITIONS",
    "PoolConfig",
    "StoreBase",
    "ann_index_params",
    "memory_options",
    "ns_key",
    "translate_filter",
]

LG_TYPE = "lg_item"

#: What one search may ask of the database: conditions beyond the scalar equalities (each
#: is one predicate of the generated WHERE), and bytes of filter JSON. memstate.lg_search
#: refuses more (SQLSTATE MSV01), so SQL callers are bounded too.
MAX_FILTER_CONDITIONS = 64
MAX_FILTER_BYTES = 65536
MAX_FILTER_DEPTH = 32

# --- SQL ---------------------------------------------------------------------------------

GET_SQL = """
SELECT fact_id, version, payload, created_at, updated_at
FROM memstate.lg_get(%(namespace)s, %(type)s, %(keys)s::text[], %(refresh_keys)s::text[], %(omit)s)
"""
SEARCH_SQL = """
SELECT fact_id, payload, created_at, updated_at, score
FROM memstate.lg_search(%(namespace)s, %(type)s, %(prefix)s, %(contains)s::jsonb, %(conditions)s::jsonb,
                        %(limit)s, %(offset)s, %(query)s::vector, %(model)s, %(refresh)s, %(omit)s)
"""
LIST_SQL = """
SELECT ns FROM memstate.lg_list_namespaces(%(namespace)s, %(type)s, %(prefix)s::jsonb, %(suffix)s::jsonb,
                                           %(max_depth)s, %(limit)s, %(offset)s, %(omit)s)
"""
TTL_SET_SQL = """
INSERT INTO memstate.lg_ttl (fact_id, ttl_minutes, expires_at)
VALUES (%(fact_id)s, %(ttl)s, now() + %(ttl)s * interval '1 minute')
ON CONFLICT (fact_id) DO UPDATE SET ttl_minutes = excluded.ttl_minutes, expires_at = excluded.expires_at
"""
TTL_DROP_SQL = "DELETE FROM memstate.lg_ttl WHERE fact_id = ANY (%(ids)s::uuid[])"
EXPIRED_SQL = "SELECT fact_id, version FROM memstate.lg_expired(%(namespace)s, %(type)s, %(limit)s)"
COLLECT_TTL_SQL = "SELECT memstate.lg_collect_ttl()"
TYPE_SQL = "SELECT singleton_key FROM memstate.types WHERE type = %(type)s"
INDEX_SQL = """
SELECT m.index_name, c.reloptions
FROM memstate.embedding_models m
LEFT JOIN pg_catalog.pg_class c
       ON c.relname = m.index_name AND c.relnamespace = 'memstate'::regnamespace
WHERE m.model = %(model)s
"""
HISTORY_SQL = """
SELECT v.fact_id, v.version, v.seq, v.op, c.kind, v.namespace, v.type, v.session_id, v.payload,
       v.content, v.embedding_model, c.actor, c.reason, v.created_at
FROM memstate.fact_versions v JOIN memstate.commits c ON c.seq = v.seq
WHERE v.namespace = %(namespace)s AND v.type = %(type)s AND v.payload ->> 'ns_key' = %(ns_key)s
ORDER BY v.seq, v.version
"""

_OPERATORS = {"$eq": "eq", "$ne": "ne", "$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}


# --- configuration: PostgresStore's options, honoured or refused -----------------------


class PoolConfig(TypedDict, total=False):
    """PostgresStore's pool settings (langgraph.store.postgres.base.PoolConfig)."""

    min_size: int
    max_size: int | None
    kwargs: dict[str, Any]


_INDEX_KEYS = {"dims", "embed", "fields", "model", "distance_type", "ann_index_config"}
_POOL_KEYS = {"min_size", "max_size", "kwargs"}
_HNSW_DEFAULTS = {"m": 16, "ef_construction": 64}  # pgvector's


def ann_index_params(index: Mapping[str, Any] | None) -> dict[str, int] | None:
    """PostgresStore's ``distance_type`` and ``ann_index_config`` as the HNSW parameters of
    the model's index (None: the memory store's defaults); what memstate cannot do is
    refused here, never ignored. memstate ranks by cosine similarity over one HNSW index
    per embedding model (``vector`` up to 2000 dimensions, ``halfvec`` up to 4000)."""
    if not index:
        return None
    unknown = set(index) - _INDEX_KEYS
    if unknown:
        raise ValueError(
            f"unknown index config keys {sorted(unknown)}: MemStateStore takes "
            f"{sorted(_INDEX_KEYS)}"
        )
    distance = index.get("distance_type", "cosine")
    if distance != "cosine":
        raise ValueError(
            f"distance_type {distance!r} is not supported: MemStateStore ranks by cosine "
            "similarity (the HNSW index memstate builds per embedding model); use 'cosine' "
            "(for normalised embeddings it ranks as inner_product and l2 do)"
        )
    ann = index.get("ann_index_config")
    if ann is None:
        return None
    if not isinstance(ann, Mapping):
        raise ValueError("ann_index_config must be a dict")
    kind = ann.get("kind", "hnsw")
    if kind != "hnsw":
        raise ValueError(
            f"ann_index_config kind {kind!r} is not supported: memstate builds one HNSW index "
            "per embedding model; use kind 'hnsw' (with m, ef_construction)"
        )
    unknown = set(ann) - {"kind", "vector_type", "m", "ef_construction"}
    if unknown:
        raise ValueError(f"ann_index_config keys {sorted(unknown)} do not apply to an HNSW index")
    dims = int(index.get("dims") or 0)
    if "vector_type" in ann:
        built = "vector" if dims <= 2000 else "halfvec" if dims <= 4000 else None
        if ann["vector_type"] != built:
            raise ValueError(
                f"ann_index_config vector_type {ann['vector_type']!r} is not supported for "
                f"{dims} dimensions: memstate indexes up to 2000 dimensions as vector and "
                "2001 to 4000 as halfvec (more: no ANN index)"
            )
    params = {name: ann.get(name, default) for name, default in _HNSW_DEFAULTS.items()}
    for name, value in params.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise ValueError(f"ann_index_config {name} must be an int, not {value!r}")
    if not 2 <= params["m"] <= 100:
        raise ValueError("ann_index_config m must be between 2 and 100 (pgvector)")
    if not max(4, 2 * params["m"]) <= params["ef_construction"] <= 1000:
        raise ValueError(
            "ann_index_config ef_construction must be between 2 * m (at least 4) and 1000 "
            "(pgvector)"
        )
    return params


def memory_options(pool_config: Mapping[str, Any] | None, pipeline: Any) -> dict[str, Any]:
    """PostgresStore.from_conn_string's ``pool_config`` and ``pipeline`` as the memory
    store's pool options. ``min_size`` and ``max_size`` size its pool; the connections'
    options are the memory store's own (autocommit, ef_search), so ``kwargs`` is refused.
    ``pipeline``: a batch's writes are always pipelined (one round trip), so both values
    are accepted and mean the same."""
    if not isinstance(pipeline, bool):
        raise TypeError(f"pipeline must be a bool, not {type(pipeline).__name__}")
    if pool_config is None:
        return {}
    unknown = set(pool_config) - _POOL_KEYS
    if unknown:
        raise ValueError(f"unknown pool_config keys {sorted(unknown)}: use {sorted(_POOL_KEYS)}")
    if pool_config.get("kwargs"):
        raise ValueError(
            "pool_config['kwargs'] is not supported: the memory store sets its connections' "
            "options; build a psycopg_pool pool with yours and pass it to MemoryStore(pool), "
            "then MemStateStore(memory)"
        )
    return {k: pool_config[k] for k in ("min_size", "max_size") if k in pool_config}


# --- pure helpers ------------------------------------------------------------------------


def ns_key(namespace: Sequence[str], key: str) -> str:
    """The singleton key of an item: unambiguous for any labels and key."""
    return json.dumps([*namespace, key], ensure_ascii=False, separators=(",", ":"))


def _is_scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def translate_filter(
    filter: Mapping[str, Any] | None,
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A LangGraph filter -> (containment document, conditions) for memstate.lg_search.

    Scalar equalities (also nested, and ``$eq`` with a scalar) go into one jsonb
    containment document on the payload's ``value`` (GIN-indexed); lists (exact
    equality), ``$eq`` with a list/dict, ``$ne`` and comparisons become conditions.
    At most MAX_FILTER_CONDITIONS conditions, MAX_FILTER_DEPTH levels and
    MAX_FILTER_BYTES of JSON: a larger filter is refused here, before any I/O.
    """
    contains: dict[str, Any] = {}
    conditions: list[dict[str, Any]] = []
    if filter is None:
        return contains, conditions
    if not isinstance(filter, Mapping):
        raise ValidationFailed("filter must be a dict of value field -> value or {operator: value}")

    def condition(path: list[str], op: str, operand: Any) -> None:
        if len(conditions) == MAX_FILTER_CONDITIONS:
            raise ValidationFailed(
                f"a search filter may hold at most {MAX_FILTER_CONDITIONS} conditions "
                "($ne, $gt, $gte, $lt, $lte, lists, $eq with a list or dict); "
                "narrow it, or split the search"
            )
        conditions.append({"path": ["value", *path], "op": op, "value": _plain(operand)})

    def walk(path: list[str], wanted: Any) -> None:
        if len(path) > MAX_FILTER_DEPTH:
            raise ValidationFailed(f"a search filter may nest at most {MAX_FILTER_DEPTH} levels")
        if isinstance(wanted, Mapping):
            operators = [k for k in wanted if isinstance(k, str) and k.startswith("$")]
            if not operators:
                if not wanted:
                    _put(contains, path, {})
                for key, sub in wanted.items():
                    walk([*path, str(key)], sub)
                return
            for operator, operand in wanted.items():
                name = _OPERATORS.get(operator)
                if name is None:
                    raise ValidationFailed(f"Unsupported operator: {operator}")
                if name == "eq" and _is_scalar(operand):
                    _put(contains, path, operand)
                else:
                    condition(path, name, operand)
        elif isinstance(wanted, list | tuple):
            condition(path, "eq", wanted)
        else:
            _put(contains, path, wanted)

    for key, wanted in filter.items():
        walk([str(key)], wanted)
    document = {"value": contains} if contains else {}
    for label, part in (("equalities", document), ("conditions", conditions)):
        try:
            size = len(json.dumps(part, ensure_ascii=False, allow_nan=False).encode())
        except (TypeError, ValueError, RecursionError) as exc:
            raise ValidationFailed(f"search filter is not JSON: {exc}") from None
        if size > MAX_FILTER_BYTES:
            raise ValidationFailed(
                f"a search filter's {label} may take at most {MAX_FILTER_BYTES} bytes of JSON, "
                f"not {size}"
            )
    return document, conditions


def _plain(value: Any, depth: int = 0) -> Any:
    if depth > MAX_FILTER_DEPTH:
        raise ValidationFailed(f"a search filter may nest at most {MAX_FILTER_DEPTH} levels")
    if isinstance(value, list | tuple):
        return [_plain(v, depth + 1) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v, depth + 1) for k, v in value.items()}
    return value


def _put(doc: dict[str, Any], path: list[str], value: Any) -> None:
    node = doc
    for part in path[:-1]:
        nxt = node.setdefault(part, {})
        if not isinstance(nxt, dict):
            raise ValidationFailed(f"filter paths conflict at {part!r}")
        node = nxt
    if path[-1] in node and node[path[-1]] != value:
        raise ValidationFailed(f"filter gives {'.'.join(path)!r} two values")
    node[path[-1]] = value


def merge_patterns(paths: Iterable[Sequence[str]]) -> list[str] | None:
    """Several prefix (or suffix) conditions that must all hold, as one pattern; None when
    they contradict each other."""
    merged: list[str] = []
    for path in paths:
        for i, label in enumerate(path):
            if i == len(merged):
                merged.append(label)
            elif merged[i] == "*":
                merged[i] = label
            elif label not in ("*", merged[i]):
                return None
    return merged


def item_from_row(row: Mapping[str, Any]) -> Item:
    payload = row["payload"]
    return Item(
        value=payload["value"],
        key=payload["key"],
        namespace=tuple(payload["ns"]),
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def search_item_from_row(row: Mapping[str, Any]) -> SearchItem:
    payload = row["payload"]
    return SearchItem(
        namespace=tuple(payload["ns"]),
        key=payload["key"],
        value=payload["value"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        score=row["score"],
    )


def _checked(vectors: Any, dim: int, count: int) -> list[list[float]]:
    """An embedder's vectors, fully checked before they go into SQL."""
    rows = [
        list(map(float, v)) for v in (vectors.tolist() if hasattr(vectors, "tolist") else vectors)
    ]
    check_vectors(rows, dim, count=count)
    return rows


# --- the shared base -----------------------------------------------------------------------


class StoreBase:
    """State and operations shared by MemStateStore and AsyncMemStateStore."""

    supports_ttl: bool = True
    _memory: Any  # MemoryStore | AsyncMemoryStore: the core operations and the runner

    def _init_base(
        self,
        memory: Any,
        *,
        index: IndexConfig | None,
        namespace: str | None,
        ttl: TTLConfig | None,
        actor: str | None,
        type_name: str = LG_TYPE,
    ) -> None:
        self._memory = memory
        self.index_config = index
        self.namespace = namespace or memory.namespace or "langgraph"
        self.type_name = type_name
        self._ann = ann_index_params(index)
        self.embedder = index_embedders(index, memory.embedder)
        self.extractor = TextExtractor((index or {}).get("fields"))
        self.ttl_config = ttl
        self.actor = actor
        self._type_ready = False
        # the vector of items stored unindexed (index=False, or no text at the fields): a
        # fact needs one; such items are excluded from query search by their payload
        self._unindexed = [1.0] + [0.0] * (self.embedder.dim - 1)

    @property
    def _omit_expired(self) -> bool:
        return bool(self.ttl_config and self.ttl_config.get("omit_expired"))

    # -- before the first write ------------------------------------------------------------

    def _op_ensure_type(self) -> CoreOp[None]:
        """Register the item type (singleton key ns_key) unless it is, and the embedding
        model with the index ``ann_index_config`` asks for; once per store."""
        if self._type_ready:
            return
        if self._ann is not None:
            yield from self._op_ann_index()
        row = yield Exec(TYPE_SQL, {"type": self.type_name})
        if row is None or row["singleton_key"] != "ns_key":
            yield from self._memory._op_register_schema(
                self.type_name, None, Constraint(singleton_key="ns_key"), None
            )
        self._type_ready = True

    def _op_ann_index(self) -> CoreOp[None]:
        """The model's HNSW index built with the configured m and ef_construction, or, when
        it was built before with others, a clear refusal."""
        assert self._ann is not None
        model, dim = self.embedder.model, self.embedder.dim
        yield Exec(
            queries.get("register_model"),
            {"model": model, "dim": dim, **self._ann},
            autonomous=True,
        )
        row = yield Exec(INDEX_SQL, {"model": model})
        if row is None or row["index_name"] is None:
            raise ValidationFailed(
                f"embedding model {model!r} ({dim} dimensions) has no ANN index "
                "(pgvector indexes at most 4000 dimensions): drop ann_index_config"
            )
        options = dict(option.split("=", 1) for option in row["reloptions"] or ())
        built = {name: int(options.get(name, default)) for name, default in _HNSW_DEFAULTS.items()}
        if built != self._ann:
            raise ValidationFailed(
                f"the HNSW index of embedding model {model!r} ({row['index_name']}) was built "
                f"with {built}, not {self._ann}: rebuild it by hand with those (DROP INDEX "
                f"memstate.{row['index_name']}, then CREATE INDEX as memstate.register_model "
                "does), or name another model in the index config (it gets its own index)"
            )
        self._memory._models_ready.add(model)

    # -- batch -------------------------------------------------------------------------

    def _op_batch(self, ops: Iterable[Op]) -> CoreOp[list[Result]]:
        ops = list(ops)
        results: list[Result] = [None] * len(ops)
        gets: list[tuple[int, GetOp]] = []
        searches: list[tuple[int, SearchOp, dict[str, Any]]] = []
        lists: list[tuple[int, dict[str, Any] | None]] = []
        puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
        for i, op in enumerate(ops):  # every op checked before any I/O
            validate_op_namespace(op)
            if isinstance(op, GetOp):
                gets.append((i, op))
            elif isinstance(op, SearchOp):
                searches.append((i, op, self._search_params(op)))
            elif isinstance(op, ListNamespacesOp):
                lists.append((i, self._list_params(op)))
            elif isinstance(op, PutOp):
                self._check_put(op)
                puts[(tuple(op.namespace), str(op.key))] = op
            else:
                raise ValueError(f"Unknown operation type: {type(op)}")

        queries = sorted({op.query for _, op, _ in searches if op.query})
        query_vectors: dict[str, list[float]] = {}
        if queries:
            vectors = yield Embed(queries, embedder=self.embedder.queries)
            vectors = _checked(vectors, self.embedder.dim, len(queries))
            query_vectors = dict(zip(queries, vectors, strict=True))

        if gets:
            rows = yield Exec(
                GET_SQL,
                self._get_params(
                    {ns_key(op.namespace, op.key) for _, op in gets},
                    {ns_key(op.namespace, op.key) for _, op in gets if op.refresh_ttl},
                ),
                "all",
            )
            found = {row["payload"]["ns_key"]: item_from_row(row) for row in rows}
            for i, op in gets:
                results[i] = found.get(ns_key(op.namespace, op.key))
        for i, op, params in searches:
            vector = query_vectors.get(op.query) if op.query else None
            params["query"] = vector_text(vector) if vector is not None else None
            rows = yield Exec(SEARCH_SQL, params, "all")
            results[i] = [search_item_from_row(row) for row in rows]
        for i, list_params in lists:
            found_ns = (yield Exec(LIST_SQL, list_params, "all")) if list_params else []
            results[i] = [tuple(row["ns"]) for row in found_ns]
        if puts:
            yield from self._op_ensure_type()
            yield from self._op_write(list(puts.values()))
        return results

    def _get_params(
        self, keys: Iterable[str], refresh: Iterable[str], *, omit: bool | None = None
    ) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "type": self.type_name,
            "keys": sorted(keys),
            "refresh_keys": sorted(refresh),
            "omit": self._omit_expired if omit is None else omit,
        }

    def _search_params(self, op: SearchOp) -> dict[str, Any]:
        """The parameters of a search, but its query vector (filled in once embedded)."""
        if (
            not isinstance(op.limit, int)
            or not isinstance(op.offset, int)
            or op.limit < 0
            or op.offset < 0
        ):
            raise ValidationFailed("search limit and offset must be non-negative ints")
        if op.query is not None and not isinstance(op.query, str):
            raise ValidationFailed("a search query must be a string")
        contains, conditions = translate_filter(op.filter)
        return {
            "namespace": self.namespace,
            "type": self.type_name,
            "prefix": ".".join(op.namespace_prefix) if op.namespace_prefix else None,
            "contains": Jsonb(contains),
            "conditions": Jsonb(conditions),
            "limit": op.limit,
            "offset": op.offset,
            "query": None,
            "model": self.embedder.model,
            "refresh": bool(op.refresh_ttl),
            "omit": self._omit_expired,
        }

    def _list_params(self, op: ListNamespacesOp) -> dict[str, Any] | None:
        conditions = op.match_conditions or ()
        for c in conditions:
            if c.match_type not in ("prefix", "suffix"):
                raise ValueError(f"Unsupported match type: {c.match_type}")
        prefix = merge_patterns(c.path for c in conditions if c.match_type == "prefix")
        suffix_parts = [list(reversed(c.path)) for c in conditions if c.match_type == "suffix"]
        suffix = merge_patterns(suffix_parts)
        if prefix is None or suffix is None:
            return None
        return {
            "namespace": self.namespace,
            "type": self.type_name,
            "prefix": Jsonb(prefix) if prefix else None,
            "suffix": Jsonb(list(reversed(suffix))) if suffix else None,
            "max_depth": op.max_depth,
            "limit": op.limit,
            "offset": op.offset,
            "omit": self._omit_expired,
        }

    # -- writes ------------------------------------------------------------------------

    @staticmethod
    def _check_put(op: PutOp) -> None:
        if op.value is None:
            return
        if not isinstance(op.value, Mapping):
            raise ValidationFailed("an item's value must be a dict")
        if op.ttl is not None and (
            not isinstance(op.ttl, int | float) or isinstance(op.ttl, bool) or op.ttl <= 0
        ):
            raise ValidationFailed(f"ttl must be a positive number of minutes, not {op.ttl!r}")

    def _op_write(self, puts: list[PutOp]) -> CoreOp[None]:
        """All puts and deletes of a batch as one memstate commit."""
        memory = self._memory
        upserts = [op for op in puts if op.value is not None]
        deletes = [op for op in puts if op.value is None]
        texts = [self._text(op) for op in upserts]
        wanted = [t for t in texts if t is not None]
        vectors: list[list[float]] = []
        if wanted:
            vectors = yield Embed(wanted, embedder=self.embedder.documents)
            vectors = _checked(vectors, self.embedder.dim, len(wanted))
        each = iter(vectors)
        facts = [
            self._fact(op, text, next(each) if text is not None else None)
            for op, text in zip(upserts, texts, strict=True)
        ]
        ttls = [op.ttl for op in upserts]

        doomed: list[dict[str, Any]] = []
        if deletes:  # expired or not: a delete deletes
            keys = (ns_key(op.namespace, op.key) for op in deletes)
            doomed = yield Exec(GET_SQL, self._get_params(keys, (), omit=False), "all")
        if not facts and not doomed:
            return
        if len(facts) == 1 and not doomed and ttls[0] is None:
            # one put: one statement, a commit of its own
            yield from memory._op_commit(facts[0], namespace=self.namespace, actor=self.actor)
            return
        if not doomed and all(ttl is None for ttl in ttls):
            # puts only: one statement (memstate.write_facts), a commit of its own
            yield from memory._op_commit_many(facts, namespace=self.namespace, actor=self.actor)
            return
        yield Begin()  # one transaction: facts, deletes and TTL clocks commit together
        fact_ids: list[UUID] = []
        if facts:  # one commit for the batch, its writes pipelined; deletes join it
            fact_ids = yield from memory._op_commit_many(
                facts, namespace=self.namespace, actor=self.actor
            )
        else:
            yield from memory._op_open_commit(self.namespace, None, self.actor, None, None)
        for row in doomed:
            yield from self._op_delete_fact(row["fact_id"])
        clocks = [row["fact_id"] for row in doomed if "ttl" in row["payload"]]
        if clocks:
            yield Exec(TTL_DROP_SQL, {"ids": clocks}, "none")
        for fact_id, ttl in zip(fact_ids, ttls, strict=True):
            if ttl is not None:
                yield Exec(TTL_SET_SQL, {"fact_id": fact_id, "ttl": float(ttl)}, "none")

    def _op_delete_fact(self, fact_id: UUID, expected_version: int | None = None) -> CoreOp[bool]:
        """Delete one fact in a savepoint of the open commit: False, and the batch goes on,
        when it was already gone or changed meanwhile (a lost race)."""
        outcome = yield Attempt(self._memory._op_delete(fact_id, expected_version=expected_version))
        if outcome.error is not None and not isinstance(outcome.error, NotFound | ConflictError):
            raise outcome.error
        return outcome.ok

    def _text(self, op: PutOp) -> str | None:
        if op.index is False:
            return None
        return self.extractor.text(op.value or {}, None if op.index is None else list(op.index))

    def _fact(self, op: PutOp, text: str | None, vector: list[float] | None) -> Fact:
        namespace = list(op.namespace)
        payload: dict[str, Any] = {
            "ns": namespace,
            "key": str(op.key),
            "ns_key": ns_key(namespace, str(op.key)),
            "prefixes": [".".join(namespace[: i + 1]) for i in range(len(namespace))],
            "value": dict(op.value or {}),
            "indexed": vector is not None,
        }
        if op.ttl is not None:
            payload["ttl"] = float(op.ttl)
        # built without pydantic validation: the commit operation validates payload and vector
        return Fact.model_construct(
            type=self.type_name,
            payload=payload,
            namespace=self.namespace,
            content=text if text is not None else "",
            embedding=vector if vector is not None else self._unindexed,
            embedding_model=self.embedder.model,
        )

    # -- TTL sweep and history -------------------------------------------------------------

    def _op_sweep(self, limit: int = 1000) -> CoreOp[int]:
        """Delete the items whose TTL ran out, as one memstate commit (so a sweep shows in
        history and can be rolled back); returns how many."""
        params = {"namespace": self.namespace, "type": self.type_name, "limit": limit}
        swept: list[UUID] = []
        if (yield Exec(EXPIRED_SQL, params, "all")):
            yield Begin()
            yield from self._memory._op_open_commit(self.namespace, None, self.actor, None, None)
            for row in (yield Exec(EXPIRED_SQL, params, "all")):  # again, locking their clocks
                if (yield from self._op_delete_fact(row["fact_id"], row["version"])):
                    swept.append(row["fact_id"])
            if swept:
                yield Exec(TTL_DROP_SQL, {"ids": swept}, "none")
        yield Exec(COLLECT_TTL_SQL, None, "none")
        return len(swept)

    def _op_history(self, namespace: Sequence[str], key: str) -> CoreOp[list[FactVersion]]:
        rows = yield Exec(
            HISTORY_SQL,
            {
                "namespace": self.namespace,
                "type": self.type_name,
                "ns_key": ns_key(list(namespace), str(key)),
            },
            "all",
        )
        # the item's value, as the user wrote it: not the payload's bookkeeping
        return [
            FactVersion(**{**row, "payload": (row["payload"] or {}).get("value")}) for row in rows
        ]

    def _op_fact_id(self, namespace: Sequence[str], key: str) -> CoreOp[UUID | None]:
        rows = yield Exec(GET_SQL, self._get_params([ns_key(list(namespace), str(key))], ()), "all")
        return rows[0]["fact_id"] if rows else None
