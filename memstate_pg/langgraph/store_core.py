"""The logic of MemStateStore / AsyncMemStateStore, written once (sans-IO).

Like memstate_pg/core.py, each operation is a generator that *describes* its I/O: it
yields requests (embed these texts, run this read, open a memstate transaction, commit
this fact, delete that fact) and receives their results. store.py runs them with
MemoryStore (sync) or AsyncMemoryStore (async); nothing else differs between the two.

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
the whole batch.
"""

from __future__ import annotations

import json
from collections.abc import Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from langgraph.store.base import (
    GetOp,
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

from ..errors import ValidationFailed
from ..models import Fact, FactVersion
from ..vectors import vector_text
from .embeddings import IndexEmbedder, TextExtractor

__all__ = ["LG_TYPE", "StoreCore", "ns_key"]

LG_TYPE = "lg_item"

# --- I/O requests ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class EmbedDocuments:
    texts: list[str]


@dataclass(frozen=True, slots=True)
class EmbedQueries:
    texts: list[str]


@dataclass(frozen=True, slots=True)
class Read:
    """A query; rows as dicts. Runs in the open transaction if there is one."""

    query: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Write:
    """A statement in the open transaction (TTL clocks), no rows."""

    query: str
    params: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Begin:
    """What follows is one memstate commit: MemoryStore.transaction(namespace)."""


@dataclass(frozen=True, slots=True)
class Atomic:
    """What follows is one database transaction (not a memstate commit of its own: the
    commits inside it make those), so TTL clocks commit with their facts."""


@dataclass(frozen=True, slots=True)
class CommitFact:
    """MemoryStore.commit (or tx.commit): returns the fact id."""

    fact: Fact


@dataclass(frozen=True, slots=True)
class CommitFacts:
    """MemoryStore.commit_many: one commit, the writes pipelined; returns the fact ids."""

    facts: list[Fact]


@dataclass(frozen=True, slots=True)
class DeleteFact:
    """MemoryStore.delete (or tx.delete, in a savepoint): True, or False when the fact was
    already gone or changed meanwhile (`expected_version`)."""

    fact_id: UUID
    expected_version: int | None = None


StoreOp = Generator[Any, Any, Any]

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
HISTORY_SQL = """
SELECT v.fact_id, v.version, v.seq, v.op, c.kind, v.namespace, v.type, v.session_id, v.payload,
       v.content, v.embedding_model, c.actor, c.reason, v.created_at
FROM memstate.fact_versions v JOIN memstate.commits c ON c.seq = v.seq
WHERE v.namespace = %(namespace)s AND v.type = %(type)s AND v.payload ->> 'ns_key' = %(ns_key)s
ORDER BY v.seq, v.version
"""

_OPERATORS = {"$eq": "eq", "$ne": "ne", "$gt": "gt", "$gte": "gte", "$lt": "lt", "$lte": "lte"}


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
    """
    contains: dict[str, Any] = {}
    conditions: list[dict[str, Any]] = []
    if filter is None:
        return contains, conditions
    if not isinstance(filter, Mapping):
        raise ValidationFailed("filter must be a dict of value field -> value or {operator: value}")

    def walk(path: list[str], wanted: Any) -> None:
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
                    conditions.append(
                        {"path": ["value", *path], "op": name, "value": _plain(operand)}
                    )
        elif isinstance(wanted, list | tuple):
            conditions.append({"path": ["value", *path], "op": "eq", "value": _plain(wanted)})
        else:
            _put(contains, path, wanted)

    for key, wanted in filter.items():
        walk([str(key)], wanted)
    return ({"value": contains} if contains else {}), conditions


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
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


# --- the shared core -----------------------------------------------------------------------


class StoreCore:
    """State and operations shared by MemStateStore and AsyncMemStateStore."""

    supports_ttl: bool = True

    def _init_core(
        self,
        *,
        namespace: str,
        embedder: IndexEmbedder,
        fields: Sequence[str] | str | None,
        ttl: TTLConfig | None,
        type_name: str = LG_TYPE,
        actor: str | None = "langgraph",
    ) -> None:
        self.namespace = namespace
        self.type_name = type_name
        self.embedder = embedder
        self.extractor = TextExtractor(fields)
        self.ttl_config = ttl
        self.actor = actor
        # the vector of items stored unindexed (index=False, or no text at the fields): a
        # fact needs one; such items are excluded from query search by their payload
        self._unindexed = [1.0] + [0.0] * (embedder.dim - 1)

    @property
    def _omit_expired(self) -> bool:
        return bool(self.ttl_config and self.ttl_config.get("omit_expired"))

    # -- batch -------------------------------------------------------------------------

    def _op_batch(self, ops: Iterable[Op]) -> StoreOp:
        ops = list(ops)
        results: list[Result] = [None] * len(ops)
        gets: list[tuple[int, GetOp]] = []
        searches: list[tuple[int, SearchOp]] = []
        lists: list[tuple[int, ListNamespacesOp]] = []
        puts: dict[tuple[tuple[str, ...], str], PutOp] = {}
        for i, op in enumerate(ops):
            validate_op_namespace(op)
            if isinstance(op, GetOp):
                gets.append((i, op))
            elif isinstance(op, SearchOp):
                searches.append((i, op))
            elif isinstance(op, ListNamespacesOp):
                lists.append((i, op))
            elif isinstance(op, PutOp):
                puts[(tuple(op.namespace), str(op.key))] = op
            else:
                raise ValueError(f"Unknown operation type: {type(op)}")

        queries = sorted({op.query for _, op in searches if op.query})
        query_vectors: dict[str, list[float]] = {}
        if queries:
            query_vectors = dict(zip(queries, (yield EmbedQueries(queries)), strict=True))

        if gets:
            rows = yield Read(
                GET_SQL,
                self._get_params(
                    {ns_key(op.namespace, op.key) for _, op in gets},
                    {ns_key(op.namespace, op.key) for _, op in gets if op.refresh_ttl},
                ),
            )
            found = {row["payload"]["ns_key"]: item_from_row(row) for row in rows}
            for i, op in gets:
                results[i] = found.get(ns_key(op.namespace, op.key))
        for i, op in searches:
            rows = yield Read(
                SEARCH_SQL, self._search_params(op, query_vectors.get(op.query or ""))
            )
            results[i] = [search_item_from_row(row) for row in rows]
        for i, op in lists:
            params = self._list_params(op)
            rows = (yield Read(LIST_SQL, params)) if params is not None else []
            results[i] = [tuple(row["ns"]) for row in rows]
        if puts:
            yield from self._op_write(list(puts.values()))
        return results

    def _get_params(self, keys: Iterable[str], refresh: Iterable[str]) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "type": self.type_name,
            "keys": sorted(keys),
            "refresh_keys": sorted(refresh),
            "omit": self._omit_expired,
        }

    def _search_params(self, op: SearchOp, vector: list[float] | None) -> dict[str, Any]:
        if (
            not isinstance(op.limit, int)
            or not isinstance(op.offset, int)
            or op.limit < 0
            or op.offset < 0
        ):
            raise ValidationFailed("search limit and offset must be non-negative ints")
        contains, conditions = translate_filter(op.filter)
        return {
            "namespace": self.namespace,
            "type": self.type_name,
            "prefix": ".".join(op.namespace_prefix) if op.namespace_prefix else None,
            "contains": Jsonb(contains),
            "conditions": Jsonb(conditions),
            "limit": op.limit,
            "offset": op.offset,
            "query": vector_text(vector) if vector is not None else None,
            "model": self.embedder.model,
            "refresh": bool(op.refresh_ttl),
            "omit": self._omit_expired,
        }

    def _list_params(self, op: ListNamespacesOp) -> dict[str, Any] | None:
        conditions = op.match_conditions or ()
        prefix = merge_patterns(c.path for c in conditions if c.match_type == "prefix")
        suffix_parts = [list(reversed(c.path)) for c in conditions if c.match_type == "suffix"]
        suffix = merge_patterns(suffix_parts)
        for c in conditions:
            if c.match_type not in ("prefix", "suffix"):
                raise ValueError(f"Unsupported match type: {c.match_type}")
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

    def _op_write(self, puts: list[PutOp]) -> StoreOp:
        upserts = [op for op in puts if op.value is not None]
        deletes = [op for op in puts if op.value is None]
        texts = [self._text(op) for op in upserts]
        wanted = [t for t in texts if t is not None]
        vectors = iter((yield EmbedDocuments(wanted)) if wanted else [])
        facts = [
            self._fact(op, text, next(vectors) if text is not None else None)
            for op, text in zip(upserts, texts, strict=True)
        ]

        doomed: list[dict[str, Any]] = []
        if deletes:
            doomed = yield Read(
                GET_SQL, self._get_params((ns_key(op.namespace, op.key) for op in deletes), ())
            )
        ttls = [op.ttl for op in upserts]
        clocks = [row["fact_id"] for row in doomed if "ttl" in row["payload"]]
        if doomed:
            # puts and deletes in one memstate commit (each write is a round trip)
            yield Begin()
            fact_ids = []
            for fact in facts:
                fact_ids.append((yield CommitFact(fact)))
            for row in doomed:
                yield DeleteFact(row["fact_id"])
            if clocks:
                yield Write(TTL_DROP_SQL, {"ids": clocks})
        else:
            # puts only: one commit, one pipelined round trip for all of them
            if any(t is not None for t in ttls):
                yield Atomic()
            if len(facts) == 1:
                fact_ids = [(yield CommitFact(facts[0]))]
            else:
                fact_ids = yield CommitFacts(facts)
        for fact_id, ttl in zip(fact_ids, ttls, strict=True):
            if ttl is not None:
                yield Write(TTL_SET_SQL, {"fact_id": fact_id, "ttl": float(ttl)})

    def _text(self, op: PutOp) -> str | None:
        if op.index is False:
            return None
        return self.extractor.text(op.value or {}, None if op.index is None else list(op.index))

    def _fact(self, op: PutOp, text: str | None, vector: list[float] | None) -> Fact:
        if not isinstance(op.value, Mapping):
            raise ValidationFailed("an item's value must be a dict")
        if op.ttl is not None and (
            not isinstance(op.ttl, int | float) or isinstance(op.ttl, bool) or op.ttl <= 0
        ):
            raise ValidationFailed(f"ttl must be a positive number of minutes, not {op.ttl!r}")
        namespace = list(op.namespace)
        payload: dict[str, Any] = {
            "ns": namespace,
            "key": str(op.key),
            "ns_key": ns_key(namespace, str(op.key)),
            "prefixes": [".".join(namespace[: i + 1]) for i in range(len(namespace))],
            "value": dict(op.value),
            "indexed": vector is not None,
        }
        if op.ttl is not None:
            payload["ttl"] = float(op.ttl)
        # built without pydantic validation: MemoryStore validates payload and vector anyway
        return Fact.model_construct(
            type=self.type_name,
            payload=payload,
            namespace=self.namespace,
            content=text if text is not None else "",
            embedding=vector if vector is not None else self._unindexed,
            embedding_model=self.embedder.model,
        )

    # -- TTL sweep and history -------------------------------------------------------------

    def _op_sweep(self, limit: int = 1000) -> StoreOp:
        """Delete the items whose TTL ran out, as one memstate commit (so a sweep shows in
        history and can be rolled back); returns how many."""
        params = {"namespace": self.namespace, "type": self.type_name, "limit": limit}
        swept: list[UUID] = []
        if (yield Read(EXPIRED_SQL, params)):
            yield Begin()
            for row in (yield Read(EXPIRED_SQL, params)):  # again, now locking their clocks
                if (yield DeleteFact(row["fact_id"], row["version"])):
                    swept.append(row["fact_id"])
            if swept:
                yield Write(TTL_DROP_SQL, {"ids": swept})
        yield Read(COLLECT_TTL_SQL, {})
        return len(swept)

    def _op_history(self, namespace: Sequence[str], key: str) -> StoreOp:
        rows = yield Read(
            HISTORY_SQL,
            {
                "namespace": self.namespace,
                "type": self.type_name,
                "ns_key": ns_key(list(namespace), str(key)),
            },
        )
        return [FactVersion(**row) for row in rows]

    def _op_fact_id(self, namespace: Sequence[str], key: str) -> StoreOp:
        rows = yield Read(GET_SQL, self._get_params([ns_key(list(namespace), str(key))], ()))
        return rows[0]["fact_id"] if rows else None
