"""Typed memory tools for any agent framework: the registered fact types as JSON-schema tool
definitions, and a dispatcher that validates and commits a model's tool call.

    ts = tools(mem, namespace="user-42")             # or: await atools(amem, ...)
    client.chat.completions.create(..., tools=ts.openai())        # OpenAI function calling
    client.messages.create(..., tools=ts.anthropic())              # Anthropic tool use
    result = ts.call(call.function.name, call.function.arguments, call_id=call.id)
    messages.append({"role": "tool", "tool_call_id": call.id, "content": result.content})

Each registered type (one with a schema: `register_schema(type, Model)`) becomes a tool
`remember_<type>` whose input schema is the type's pydantic JSON schema, plus an optional
`_reason` (why the model remembers it; stored as the commit's reason). A call is validated
(the pydantic model when this process registered the type, else the stored JSON schema, and
again by the database) and committed in one transaction. Arguments that violate the schema
come back as an error result carrying the validation messages, so the model can correct
its JSON; nothing is written. The idempotency key is derived from the call id: a retried call
id (a client that resent a request after a timeout) commits nothing twice and returns the
first result.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from uuid import UUID

from ._core.protocol import Exec, Op
from .errors import ConflictError, NotFound, ValidationFailed
from .models import Constraint, Fact
from .types import FactType

if TYPE_CHECKING:
    from .aio import AsyncMemoryStore
    from .store import MemoryStore

PREFIX = "remember_"
REASON_ARG = "_reason"
ACTOR_DEFAULT = "tool"
_TOOL_NAME = re.compile(r"[^A-Za-z0-9_-]")
NAME_LIMIT = 64  # OpenAI and Anthropic: ^[a-zA-Z0-9_-]{1,64}$

_LIST_TYPES = (
    "SELECT type, json_schema, singleton_key, immutable, text_field FROM memstate.types "
    "WHERE json_schema IS NOT NULL ORDER BY type"
)


@dataclass(frozen=True)
class TypedTool:
    """One registered fact type as a tool."""

    name: str  # remember_<type>, sanitised for function-calling APIs
    type: str
    description: str
    input_schema: dict[str, Any]
    fact_type: FactType

    def openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.name,
                "description": self.description,
                "parameters": self.input_schema,
            },
        }

    def anthropic(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "input_schema": self.input_schema,
        }


@dataclass
class ToolResult:
    """What a tool call did: the fact written, or the error to show the model."""

    name: str
    call_id: str | None = None
    fact_id: UUID | None = None
    error: str | None = None
    errors: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def is_error(self) -> bool:
        return self.error is not None

    def to_dict(self) -> dict[str, Any]:
        if self.error is not None:
            out: dict[str, Any] = {"ok": False, "error": self.error}
            if self.errors:
                out["errors"] = self.errors
            return out
        return {"ok": True, "fact_id": str(self.fact_id)}

    @property
    def content(self) -> str:
        """The result as JSON text: the content of the tool message sent back to the model."""
        return json.dumps(self.to_dict(), ensure_ascii=False, default=str)


def tool_name(type_name: str, taken: set[str] | None = None) -> str:
    """`remember_<type>` with every character outside A-Z a-z 0-9 _ - replaced by `_`, at
    most 64 characters; a name already `taken` gets a short hash of the type appended."""
    name = (PREFIX + _TOOL_NAME.sub("_", type_name))[:NAME_LIMIT]
    if taken is not None and name in taken:
        digest = hashlib.sha256(type_name.encode()).hexdigest()[:8]
        name = name[: NAME_LIMIT - 9] + "_" + digest
    return name


def idempotency_key(call_id: str, tool: str = "") -> str:
    """The idempotency key of a tool call id and the tool it called (at most 200
    characters, like every key): a call id reused with another tool is another write."""
    key = f"tool-call:{tool}:{call_id}"
    if len(key) > 200:
        digest = hashlib.sha256(f"{tool}\x00{call_id}".encode()).hexdigest()
        key = f"tool-call:sha256:{digest}"
    return key


def _describe(ftype: FactType, schema: dict[str, Any]) -> str:
    text = f"Remember a {ftype.name!r} fact."
    doc = schema.get("description")
    if isinstance(doc, str) and doc.strip():
        text += " " + doc.strip()
    if ftype.constraint.singleton_key:
        text += (
            f" One live fact per {ftype.constraint.singleton_key!r}: remembering the same "
            f"{ftype.constraint.singleton_key!r} again updates it."
        )
    if ftype.constraint.immutable:
        text += " Immutable once written."
    return text


def input_schema(ftype: FactType) -> dict[str, Any]:
    """The type's JSON schema with the optional `_reason` argument added."""
    schema = json.loads(json.dumps(ftype.json_schema or {"type": "object"}))
    schema.setdefault("type", "object")
    props = schema.setdefault("properties", {})
    props[REASON_ARG] = {
        "type": "string",
        "description": "Why this is remembered (kept in the memory's history; not stored "
        "in the fact).",
    }
    return schema


def build_tools(types: Sequence[FactType]) -> list[TypedTool]:
    taken: set[str] = set()
    out = []
    for ftype in types:
        name = tool_name(ftype.name, taken)
        taken.add(name)
        schema = input_schema(ftype)
        out.append(TypedTool(name, ftype.name, _describe(ftype, schema), schema, ftype))
    return out


def _op_list_types() -> Op[list[dict[str, Any]]]:
    rows: list[dict[str, Any]] = yield Exec(_LIST_TYPES, None, "all")
    return rows


def _fact_types(store: Any, rows: list[dict[str, Any]]) -> list[FactType]:
    """Registered types, with this process's pydantic model where it registered one."""
    known: Mapping[str, FactType] = getattr(store, "_types", {})
    out = []
    for row in rows:
        mine = known.get(row["type"])
        if mine is not None and mine.model is not None:
            out.append(mine)
            continue
        out.append(
            FactType(
                row["type"],
                None,
                Constraint(singleton_key=row["singleton_key"], immutable=row["immutable"]),
                row["text_field"],
                row["json_schema"],
            )
        )
    return out


def check_arguments(ftype: FactType, payload: dict[str, Any]) -> dict[str, Any]:
    """The payload validated by the type's pydantic model, or, for a type this process has no
    model of, by its stored JSON schema (jsonschema, when installed; absent fields with a
    default get it); ValidationFailed with one entry per error otherwise."""
    if ftype.model is not None or ftype.json_schema is None:
        return ftype.validate(payload)
    try:
        import jsonschema  # type: ignore[import-untyped,unused-ignore]
    except ImportError:  # the database validates the schema's shape anyway
        return ftype.validate(payload)
    validator = jsonschema.Draft202012Validator(
        ftype.json_schema,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,  # date-time, uuid, ...
    )
    found = sorted(validator.iter_errors(payload), key=lambda e: list(e.absolute_path))
    if found:
        errors = [{"loc": _loc(e), "msg": e.message, "type": str(e.validator)} for e in found]
        raise ValidationFailed(
            f"invalid payload for type {ftype.name!r}: {len(errors)} error(s): "
            + "; ".join(f"{'.'.join(e['loc']) or '(payload)'}: {e['msg']}" for e in errors),
            errors=errors,
        )
    # as the pydantic model would: absent top-level fields take the schema's defaults, and
    # unknown ones are dropped unless the schema says something of them (pydantic's
    # extra="ignore" writes no additionalProperties; "allow" writes true, "forbid" false)
    props = ftype.json_schema.get("properties") or {}
    if props and "additionalProperties" not in ftype.json_schema:
        payload = {k: v for k, v in payload.items() if k in props}
    for key, prop in props.items():
        if key not in payload and isinstance(prop, dict) and "default" in prop:
            payload = {**payload, key: prop["default"]}
    return ftype.validate(payload)


def _loc(error: Any) -> list[str]:
    """The path of a jsonschema error; a missing required field is named in it."""
    loc = [str(p) for p in error.absolute_path]
    if error.validator == "required" and isinstance(error.instance, dict):
        for key in error.validator_value:
            if key not in error.instance and repr(key) in error.message:
                return [*loc, str(key)]
    return loc


def error_result(name: str, call_id: str | None, exc: Exception) -> ToolResult:
    errors = getattr(exc, "errors", None) or []
    clean = [
        {k: v for k, v in e.items() if k in ("loc", "msg", "type")}
        for e in errors
        if isinstance(e, dict)
    ]
    for e in clean:
        if "loc" in e:
            e["loc"] = [str(p) for p in e["loc"]]
    return ToolResult(name, call_id, error=str(exc), errors=clean)


class ToolSet:
    """The registered fact types as tools, bound to one namespace, and their dispatcher."""

    def __init__(
        self,
        store: MemoryStore | AsyncMemoryStore,
        tools: Sequence[TypedTool],
        *,
        namespace: str | None = None,
        actor: str = ACTOR_DEFAULT,
        session_id: str | None = None,
    ) -> None:
        self.store = store
        self.namespace = namespace
        self.actor = actor
        self.session_id = session_id
        self._tools = {t.name: t for t in tools}

    def __iter__(self) -> Iterator[TypedTool]:
        return iter(self._tools.values())

    def __len__(self) -> int:
        return len(self._tools)

    def __contains__(self, name: object) -> bool:
        return name in self._tools

    @property
    def names(self) -> list[str]:
        return list(self._tools)

    def get(self, name: str) -> TypedTool | None:
        return self._tools.get(name)

    def for_type(self, type_name: str) -> TypedTool | None:
        return next((t for t in self if t.type == type_name), None)

    def openai(self) -> list[dict[str, Any]]:
        """Tool definitions in OpenAI's function-calling shape (`tools=` of chat completions)."""
        return [t.openai() for t in self]

    def anthropic(self) -> list[dict[str, Any]]:
        """Tool definitions in Anthropic's tool-use shape (`tools=` of messages.create)."""
        return [t.anthropic() for t in self]

    # -- dispatch ------------------------------------------------------------------------

    def prepare(
        self, name: str, arguments: str | Mapping[str, Any] | None
    ) -> tuple[TypedTool, Fact, str | None]:
        """The tool, the validated fact and the reason of a call; ValidationFailed (or
        NotFound for an unknown tool) when the call is malformed."""
        tool = self._tools.get(name)
        if tool is None:
            raise NotFound(f"no tool named {name!r}; the tools are: {', '.join(self._tools)}")
        if arguments is None:
            arguments = {}
        if isinstance(arguments, str):  # OpenAI hands the arguments over as JSON text
            try:
                arguments = json.loads(arguments) if arguments.strip() else {}
            except (ValueError, RecursionError) as exc:  # bad JSON, too many digits, too deep
                raise ValidationFailed(f"the arguments are not valid JSON: {exc}") from None
        if not isinstance(arguments, Mapping):
            raise ValidationFailed("the arguments must be a JSON object")
        payload = dict(arguments)
        reason = payload.pop(REASON_ARG, None)
        if reason is not None and not isinstance(reason, str):
            raise ValidationFailed(f"{REASON_ARG} must be a string")
        clean = check_arguments(tool.fact_type, payload)
        return tool, Fact(type=tool.type, payload=clean), reason

    def _write_kwargs(
        self, name: str, call_id: str | None, actor: str | None, reason: str | None
    ) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "session_id": self.session_id,
            "actor": actor or self.actor,
            "reason": reason,
            "idempotency_key": idempotency_key(call_id, name) if call_id else None,
        }

    def call(
        self,
        name: str,
        arguments: str | Mapping[str, Any] | None,
        *,
        call_id: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> ToolResult:
        """Validate and commit one tool call (one transaction). A malformed call, a rule the
        database enforces (ConflictError) or an unknown tool comes back as an error result;
        the database being unreachable raises."""
        try:
            _, fact, why = self.prepare(name, arguments)
            fid = self.store.commit(fact, **self._write_kwargs(name, call_id, actor, why or reason))
        except (ValidationFailed, ConflictError, NotFound) as exc:
            return error_result(name, call_id, exc)
        if not isinstance(fid, UUID):
            raise TypeError("ToolSet.call needs a MemoryStore; use acall with AsyncMemoryStore")
        return ToolResult(name, call_id, fact_id=fid)

    async def acall(
        self,
        name: str,
        arguments: str | Mapping[str, Any] | None,
        *,
        call_id: str | None = None,
        actor: str | None = None,
        reason: str | None = None,
    ) -> ToolResult:
        """`call` for asyncio: awaits an AsyncMemoryStore, runs a MemoryStore in a thread."""
        import asyncio

        try:
            _, fact, why = self.prepare(name, arguments)
            kwargs = self._write_kwargs(name, call_id, actor, why or reason)
            if _is_async(self.store):
                fid = await self.store.commit(fact, **kwargs)  # type: ignore[misc]
            else:
                fid = await asyncio.to_thread(self.store.commit, fact, **kwargs)  # type: ignore[arg-type]
        except (ValidationFailed, ConflictError, NotFound) as exc:
            return error_result(name, call_id, exc)
        return ToolResult(name, call_id, fact_id=fid)


def _is_async(store: Any) -> bool:
    from .aio import AsyncMemoryStore

    return isinstance(store, AsyncMemoryStore)


def tools(
    store: MemoryStore,
    *,
    namespace: str | None = None,
    actor: str = ACTOR_DEFAULT,
    session_id: str | None = None,
    types: Sequence[str] | None = None,
) -> ToolSet:
    """The registered fact types of `store`'s database as a ToolSet (only `types`, if given).
    Writes go to `namespace` (default: the store's), with `actor` and `session_id`."""
    if _is_async(store):
        raise TypeError(
            "tools() takes a MemoryStore; use `await atools(store)` for AsyncMemoryStore"
        )
    rows = store._read(_op_list_types)
    return _toolset(store, rows, namespace, actor, session_id, types)


async def atools(
    store: AsyncMemoryStore,
    *,
    namespace: str | None = None,
    actor: str = ACTOR_DEFAULT,
    session_id: str | None = None,
    types: Sequence[str] | None = None,
) -> ToolSet:
    """`tools()` for an AsyncMemoryStore (the ToolSet's `acall` commits through it)."""
    rows = await store._read(_op_list_types)
    return _toolset(store, rows, namespace, actor, session_id, types)


def _toolset(
    store: Any,
    rows: list[dict[str, Any]],
    namespace: str | None,
    actor: str,
    session_id: str | None,
    types: Sequence[str] | None,
) -> ToolSet:
    if namespace is not None:
        store._ns(namespace)  # a store bound to another namespace refuses here, not per call
    wanted = set(types) if types is not None else None
    ftypes = [t for t in _fact_types(store, rows) if wanted is None or t.name in wanted]
    return ToolSet(
        store, build_tools(ftypes), namespace=namespace, actor=actor, session_id=session_id
    )
