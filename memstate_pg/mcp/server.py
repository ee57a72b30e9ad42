"""An MCP server over a memstate-pg store, bound to one namespace.

Built on the official `mcp` SDK's low-level `Server` (mcp >= 2): the tool list is computed
per listing, so `remember_<type>` exists for every type registered in the database, with the
type's JSON schema as its input schema.

Tools: `remember` (commit any fact), `remember_<type>` (one per registered type), `recall`
(search with type / filters / k), `get`, `forget` (delete; history keeps it), `history`,
`undo` (rollback the last N commits, as a new commit) and `as_of` (the memory after commit
`seq`, or at a time). Resources: `memstate://facts` (the live facts, JSON) and
`memstate://facts/{id}` (one fact).

The namespace is fixed when the server is built: no tool takes one, a call that names
another is refused, and a fact id of another namespace is "not found". Every write records
an actor (the request's `_meta["memstate/actor"]`, else the server's, default "mcp") and
the reason given in the call. A refused call (invalid arguments, a schema violation, a
rule of the database) returns a tool error result with the message and, for validation,
one entry per error, so the model can correct its JSON; nothing is written.
"""

from __future__ import annotations

import contextlib
import functools
import json
import socket
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any, Literal
from uuid import UUID

import anyio
import mcp_types as types
from mcp.server import Server
from mcp.shared.exceptions import MCPError
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ..aio import AsyncMemoryStore
from ..errors import MemStateError, NotFound, ValidationFailed
from ..models import Fact, FactVersion
from ..store import MemoryStore
from ..tools import (
    ToolSet,
    _fact_types,
    _op_list_types,
    build_tools,
    check_arguments,
    error_result,
)

RESOURCE_NOT_FOUND = -32002  # the MCP spec's code for an unknown resource
FACTS_URI = "memstate://facts"
FACT_URI = "memstate://facts/{id}"
ACTOR_META = "memstate/actor"
CALL_ID_META = "memstate/call_id"


# --- the arguments of the fixed tools ---------------------------------------------------


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RememberArgs(_Args):
    """Commit one fact. A registered type is validated by its schema (the `remember_<type>`
    tools show it); any other type is stored as given."""

    type: str = Field(description="the fact type, e.g. 'preference'")
    payload: dict[str, Any] = Field(description="the fact itself, a JSON object")
    content: str | None = Field(
        None, description="text to embed (default: payload.content or payload.text or the JSON)"
    )
    id: str | None = Field(None, description="update this live fact instead of adding one")
    session_id: str | None = Field(None, description="working memory of this session only")
    reason: str | None = Field(None, description="why this is remembered (kept in history)")
    idempotency_key: str | None = Field(
        None,
        description="a retried call with the same key writes nothing twice",
    )

    @field_validator("idempotency_key")
    @classmethod
    def _not_a_tool_calls_key(cls, value: str | None) -> str | None:
        if value is not None and value.startswith("tool-call:"):  # typed tool calls' keys
            raise ValueError("keys starting with 'tool-call:' are reserved for tool calls")
        return value


class RecallArgs(_Args):
    """Search the memory by meaning: the k live facts nearest to the query."""

    query: str = Field(description="what to look for, in words")
    k: int = Field(5, ge=1, le=100, description="how many facts")
    type: str | None = Field(None, description="only facts of this type")
    filters: dict[str, Any] | None = Field(
        None, description="equality filters on payload paths, e.g. {'topic': 'food'}"
    )
    session_id: str | None = Field(None, description="only this session's working memory")


class GetArgs(_Args):
    """One live fact by id."""

    id: str = Field(description="the fact id (a UUID)")


class ForgetArgs(_Args):
    """Delete a live fact. Its history stays; `undo` brings it back."""

    id: str = Field(description="the fact id (a UUID)")
    reason: str | None = Field(None, description="why it is forgotten (kept in history)")
    expected_version: int | None = Field(
        None, description="refuse if the fact has changed since this version"
    )


class HistoryArgs(_Args):
    """The versions of one fact (with `id`) or of the whole namespace: the latest `limit`,
    oldest first, with the commit seq, actor and reason of each."""

    id: str | None = Field(None, description="the fact id; omit for the whole namespace")
    limit: int = Field(50, ge=1, le=1000, description="at most this many versions")


class UndoArgs(_Args):
    """Undo the last `steps` commits of this namespace, as a new commit (history is kept)."""

    steps: int = Field(1, ge=1, le=1000, description="how many commits to undo")
    reason: str | None = Field(None, description="why (kept in history)")


class AsOfArgs(_Args):
    """The live facts as they stood right after commit `seq`, or at time `at`."""

    seq: int | None = Field(None, ge=1, description="a commit seq (from history)")
    at: datetime | None = Field(None, description="an ISO 8601 time, e.g. 2026-01-31T12:00:00Z")
    limit: int = Field(200, ge=1, le=5000, description="at most this many facts")


_FIXED: dict[str, tuple[type[_Args], bool]] = {  # name -> (arguments, read only)
    "remember": (RememberArgs, False),
    "recall": (RecallArgs, True),
    "get": (GetArgs, True),
    "forget": (ForgetArgs, False),
    "history": (HistoryArgs, True),
    "undo": (UndoArgs, False),
    "as_of": (AsOfArgs, True),
}


def _schema(model: type[BaseModel]) -> dict[str, Any]:
    schema = model.model_json_schema()
    schema.pop("title", None)
    schema.pop("description", None)
    return schema


_FIXED_SCHEMAS = {name: _schema(model) for name, (model, _) in _FIXED.items()}


# --- rendering ----------------------------------------------------------------------------


def fact_json(fact: Fact) -> dict[str, Any]:
    return {
        "id": str(fact.id),
        "type": fact.type,
        "payload": fact.payload,
        "content": fact.content,
        "namespace": fact.namespace,
        "session_id": fact.session_id,
        "version": fact.version,
        "commit_seq": fact.commit_seq,
        "updated_at": fact.updated_at.isoformat() if fact.updated_at else None,
    }


def version_json(v: FactVersion) -> dict[str, Any]:
    return {
        "fact_id": str(v.fact_id),
        "version": v.version,
        "seq": v.seq,
        "op": v.op,
        "kind": v.kind,
        "type": v.type,
        "payload": v.payload,
        "content": v.content,
        "actor": v.actor,
        "reason": v.reason,
        "created_at": v.created_at.isoformat(),
    }


def _ok(data: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(text=json.dumps(data, ensure_ascii=False, default=str))],
        structured_content=data,
    )


def _error(data: dict[str, Any]) -> types.CallToolResult:
    return types.CallToolResult(
        content=[types.TextContent(text=json.dumps(data, ensure_ascii=False, default=str))],
        structured_content=data,
        is_error=True,
    )


def _pydantic_errors(exc: ValidationError) -> dict[str, Any]:
    errors = [
        {"loc": [str(p) for p in e["loc"]], "msg": e["msg"], "type": e["type"]}
        for e in exc.errors(include_url=False)
    ]
    message = f"invalid arguments: {len(errors)} error(s): " + "; ".join(
        f"{'.'.join(e['loc'])}: {e['msg']}" for e in errors
    )
    return {"ok": False, "error": message, "errors": errors}


# --- the server ---------------------------------------------------------------------------


class MemoryTools:
    """The handlers of the MCP server: one store, one namespace."""

    def __init__(
        self,
        store: MemoryStore | AsyncMemoryStore,
        namespace: str,
        *,
        actor: str = "mcp",
        resource_limit: int = 200,
    ) -> None:
        if store.namespace is not None and store.namespace != namespace:
            raise ValueError(
                f"the store is bound to namespace {store.namespace!r}, not {namespace!r}"
            )
        store._ns(namespace)  # checks the name
        self.store = store
        self.namespace = namespace
        self.actor = actor
        self.resource_limit = resource_limit
        self._toolset = ToolSet(store, [], namespace=namespace, actor=actor)

    # -- the store, sync or async ---------------------------------------------------------

    async def _do(self, method: str, *args: Any, **kwargs: Any) -> Any:
        fn: Callable[..., Any] = getattr(self.store, method)
        if isinstance(self.store, AsyncMemoryStore):
            return await fn(*args, **kwargs)
        return await anyio.to_thread.run_sync(functools.partial(fn, *args, **kwargs))

    async def typed_tools(self) -> ToolSet:
        """The `remember_<type>` tools, from the types registered in the database now."""
        if isinstance(self.store, AsyncMemoryStore):
            rows = await self.store._read(_op_list_types)
        else:
            rows = await anyio.to_thread.run_sync(self.store._read, _op_list_types)
        self._toolset = ToolSet(
            self.store,
            build_tools(_fact_types(self.store, rows)),
            namespace=self.namespace,
            actor=self.actor,
        )
        return self._toolset

    # -- scope ---------------------------------------------------------------------------

    def _check_namespace(self, arguments: dict[str, Any], *, keep: bool = False) -> None:
        """A call may repeat the server's namespace, never name another."""
        if "namespace" not in arguments:
            return
        asked = arguments["namespace"] if keep else arguments.pop("namespace")
        if asked is not None and asked != self.namespace:
            raise PermissionError(
                f"this server is bound to namespace {self.namespace!r}; "
                f"it cannot reach namespace {asked!r}"
            )

    async def _own(self, fact_id: str) -> Fact:
        """The live fact `fact_id` of this namespace (NotFound for any other)."""
        try:
            fid = UUID(str(fact_id))
        except ValueError:
            raise ValidationFailed(f"{fact_id!r} is not a fact id (a UUID)") from None
        fact = await self._do("get", fid)
        if fact is None or fact.namespace != self.namespace:
            raise NotFound(f"no live fact {fact_id} in namespace {self.namespace!r}")
        return fact

    # -- MCP handlers --------------------------------------------------------------------

    def tool_input_schema(self, name: str) -> dict[str, Any] | None:
        """A tool's input schema without a listing (the SDK checks Mcp-Param headers of an
        HTTP call with it; otherwise it would run tools/list, a database read, per call)."""
        if name in _FIXED:
            return _FIXED_SCHEMAS[name]
        tool = self._toolset.get(name)
        return tool.input_schema if tool is not None else None

    async def list_tools(self, ctx: Any, params: Any) -> types.ListToolsResult:
        out = []
        for name, (model, read_only) in _FIXED.items():
            out.append(
                types.Tool(
                    name=name,
                    description=(model.__doc__ or "").strip(),
                    input_schema=_FIXED_SCHEMAS[name],
                    annotations=types.ToolAnnotations(
                        read_only_hint=read_only, destructive_hint=name in ("forget", "undo")
                    ),
                )
            )
        for tool in await self.typed_tools():
            if tool.name in _FIXED:
                continue
            out.append(
                types.Tool(
                    name=tool.name,
                    description=tool.description,
                    input_schema=tool.input_schema,
                    annotations=types.ToolAnnotations(read_only_hint=False),
                )
            )
        return types.ListToolsResult(tools=out)

    async def call_tool(
        self, ctx: Any, params: types.CallToolRequestParams
    ) -> types.CallToolResult:
        meta = dict(params.meta or {})
        actor = meta.get(ACTOR_META)
        actor = actor if isinstance(actor, str) and actor else self.actor
        arguments = dict(params.arguments or {})
        try:
            if params.name in _FIXED:
                self._check_namespace(arguments)
                model, _ = _FIXED[params.name]
                try:
                    args = model.model_validate(arguments)
                except ValidationError as exc:
                    return _error(_pydantic_errors(exc))
                handler: Callable[[Any, str], Awaitable[dict[str, Any]]] = getattr(
                    self, "_tool_" + params.name
                )
                return _ok(await handler(args, actor))
            return await self._typed(params.name, arguments, actor, meta.get(CALL_ID_META))
        except PermissionError as exc:  # includes memstate's PermissionDenied
            return _error({"ok": False, "error": str(exc)})
        except MemStateError as exc:
            return _error(error_result(params.name, None, exc).to_dict())

    async def _typed(
        self, name: str, arguments: dict[str, Any], actor: str, call_id: Any
    ) -> types.CallToolResult:
        toolset = self._toolset
        tool = toolset.get(name)
        if tool is None:  # registered since the last listing?
            toolset = await self.typed_tools()
            tool = toolset.get(name)
        if tool is None:
            return _error({"ok": False, "error": f"unknown tool {name!r}"})
        if "namespace" not in (tool.fact_type.json_schema or {}).get("properties", {}):
            self._check_namespace(arguments)
        result = await toolset.acall(
            name,
            arguments,
            call_id=call_id if isinstance(call_id, str) and call_id else None,
            actor=actor,
        )
        if result.is_error:
            return _error(result.to_dict())
        fact = await self._do("get", result.fact_id)
        return _ok({"ok": True, "fact": fact_json(fact) if fact else None})

    # -- the fixed tools -----------------------------------------------------------------

    async def _tool_remember(self, args: RememberArgs, actor: str) -> dict[str, Any]:
        fid = None
        if args.id is not None:
            fid = (await self._own(args.id)).id
        payload = args.payload
        tool = (await self.typed_tools()).for_type(args.type)
        if tool is not None:  # a registered type: its schema, as remember_<type> applies it
            payload = check_arguments(tool.fact_type, payload)
        fact = Fact(
            id=fid,
            type=args.type,
            payload=payload,
            content=args.content,
            session_id=args.session_id,
        )
        new_id = await self._do(
            "commit",
            fact,
            namespace=self.namespace,
            actor=actor,
            reason=args.reason,
            idempotency_key=args.idempotency_key,
        )
        stored = await self._do("get", new_id)
        return {"ok": True, "fact": fact_json(stored) if stored else {"id": str(new_id)}}

    async def _tool_recall(self, args: RecallArgs, actor: str) -> dict[str, Any]:
        hits = await self._do(
            "search",
            args.query,
            args.k,
            namespace=self.namespace,
            type=args.type,
            filters=args.filters,
            session_id=args.session_id,
        )
        return {"ok": True, "hits": [{**fact_json(h.fact), "score": h.score} for h in hits]}

    async def _tool_get(self, args: GetArgs, actor: str) -> dict[str, Any]:
        return {"ok": True, "fact": fact_json(await self._own(args.id))}

    async def _tool_forget(self, args: ForgetArgs, actor: str) -> dict[str, Any]:
        fact = await self._own(args.id)
        seq = await self._do(
            "delete",
            fact.id,
            expected_version=args.expected_version,
            actor=actor,
            reason=args.reason,
        )
        return {"ok": True, "deleted": str(fact.id), "seq": seq}

    async def _tool_history(self, args: HistoryArgs, actor: str) -> dict[str, Any]:
        if args.id is not None:
            try:
                fid = UUID(args.id)
            except ValueError:
                raise ValidationFailed(f"{args.id!r} is not a fact id (a UUID)") from None
            versions = [v for v in await self._do("history", fid) if v.namespace == self.namespace]
            if not versions:
                raise NotFound(f"no fact {args.id} in namespace {self.namespace!r}")
            versions = versions[-args.limit :]
        else:
            newest = await self._do(
                "history", namespace=self.namespace, limit=args.limit, newest_first=True
            )
            versions = newest[::-1]
        return {"ok": True, "versions": [version_json(v) for v in versions]}

    async def _tool_undo(self, args: UndoArgs, actor: str) -> dict[str, Any]:
        seq = await self._do(
            "rollback", args.steps, namespace=self.namespace, actor=actor, reason=args.reason
        )
        return {"ok": True, "seq": seq}

    async def _tool_as_of(self, args: AsOfArgs, actor: str) -> dict[str, Any]:
        if (args.seq is None) == (args.at is None):
            raise ValidationFailed("as_of takes exactly one of seq and at")
        point = args.seq if args.seq is not None else args.at
        facts = await self._do("as_of", point, namespace=self.namespace)
        return {
            "ok": True,
            "count": len(facts),
            "facts": [fact_json(f) for f in facts[: args.limit]],
        }

    # -- resources -----------------------------------------------------------------------

    async def list_resources(self, ctx: Any, params: Any) -> types.ListResourcesResult:
        facts = await self._do("query", namespace=self.namespace, limit=self.resource_limit)
        out = [
            types.Resource(
                uri=FACTS_URI,
                name="facts",
                description=f"the live facts of namespace {self.namespace!r} (JSON)",
                mime_type="application/json",
            )
        ]
        for fact in facts:
            label = (fact.content or "")[:80]
            out.append(
                types.Resource(
                    uri=FACT_URI.format(id=fact.id),
                    name=f"{fact.type}: {label}" if label else fact.type,
                    mime_type="application/json",
                )
            )
        return types.ListResourcesResult(resources=out)

    async def list_resource_templates(
        self, ctx: Any, params: Any
    ) -> types.ListResourceTemplatesResult:
        return types.ListResourceTemplatesResult(
            resource_templates=[
                types.ResourceTemplate(
                    uri_template=FACT_URI,
                    name="fact",
                    description="one live fact of this namespace, by id (JSON)",
                    mime_type="application/json",
                )
            ]
        )

    async def read_resource(
        self, ctx: Any, params: types.ReadResourceRequestParams
    ) -> types.ReadResourceResult:
        uri = str(params.uri)
        if uri == FACTS_URI:  # bounded as the listing is
            facts = await self._do("query", namespace=self.namespace, limit=self.resource_limit)
            data: Any = [fact_json(f) for f in facts]
        elif uri.startswith(FACTS_URI + "/"):
            try:
                data = fact_json(await self._own(uri[len(FACTS_URI) + 1 :]))
            except (NotFound, ValidationFailed) as exc:
                raise MCPError(RESOURCE_NOT_FOUND, str(exc), {"uri": uri}) from None
        else:
            raise MCPError(RESOURCE_NOT_FOUND, f"unknown resource {uri}", {"uri": uri})
        text = json.dumps(data, ensure_ascii=False, default=str)
        return types.ReadResourceResult(
            contents=[types.TextResourceContents(uri=uri, mime_type="application/json", text=text)]
        )


def build_server(
    store: MemoryStore | AsyncMemoryStore,
    namespace: str | None = None,
    *,
    actor: str = "mcp",
    name: str = "memstate-pg",
    resource_limit: int = 200,
) -> Server[Any]:
    """An MCP server (the SDK's low-level `Server`) over `store`, bound to `namespace`
    (default: the store's own; a store bound to another namespace is refused). `actor` is
    recorded on every write unless the request's `_meta["memstate/actor"]` names one. An
    AsyncMemoryStore must be opened on the loop that serves; a MemoryStore runs in worker
    threads."""
    namespace = namespace if namespace is not None else store.namespace
    if namespace is None:
        raise ValueError("an MCP server is bound to one namespace: pass namespace=...")
    tools = MemoryTools(store, namespace, actor=actor, resource_limit=resource_limit)
    from .. import __version__

    server: Server[Any] = Server(
        name,
        version=__version__,
        instructions=(
            f"Transactional memory (memstate-pg), namespace {namespace!r}: remember facts "
            "(remember_<type> validates the type's schema), recall them by meaning, undo "
            "mistakes. Every change is versioned."
        ),
        get_tool_input_schema=tools.tool_input_schema,
        on_list_tools=tools.list_tools,
        on_call_tool=tools.call_tool,
        on_list_resources=tools.list_resources,
        on_list_resource_templates=tools.list_resource_templates,
        on_read_resource=tools.read_resource,
    )
    server.memstate = tools  # type: ignore[attr-defined]
    return server


# --- transports -----------------------------------------------------------------------------


async def serve_stdio(server: Server[Any]) -> None:
    """Serve over this process's stdin/stdout until the client closes them."""
    from mcp.server.stdio import stdio_server

    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


async def serve_http(
    server: Server[Any],
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    path: str = "/mcp",
    log_level: str = "warning",
    json_response: bool = True,
    announce: bool = False,
) -> None:
    """Serve streamable HTTP at http://host:port/path (uvicorn) until cancelled. On a
    loopback host the SDK's DNS-rebinding protection is on. `json_response`: answer each
    request with one JSON body (no tool here streams; about half the latency of an SSE
    stream per call, see benchmarks/mcp_recall.py); False: SSE streams."""
    import uvicorn

    app = server.streamable_http_app(
        streamable_http_path=path, host=host, json_response=json_response
    )
    config = uvicorn.Config(app, host=host, port=port, log_level=log_level, lifespan="on")
    # bound here, so a taken port is an OSError for the caller (uvicorn would sys.exit)
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # inherited by accepted connections: without it, Nagle's algorithm and delayed ACKs
        # add ~40 ms to each response (uvicorn sets it only on sockets it binds itself)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    with sock:
        if announce:
            print(f"memstate-pg MCP server on http://{host}:{port}{path}", file=sys.stderr)
        await uvicorn.Server(config).serve(sockets=[sock])


@contextlib.asynccontextmanager
async def _opened(store: MemoryStore | AsyncMemoryStore) -> AsyncIterator[None]:
    if isinstance(store, AsyncMemoryStore):
        await store.open_pool()
    yield


def run(
    store: MemoryStore | AsyncMemoryStore,
    namespace: str | None = None,
    *,
    transport: Literal["stdio", "http"] = "stdio",
    host: str = "127.0.0.1",
    port: int = 8000,
    path: str = "/mcp",
    actor: str = "mcp",
) -> None:
    """Build the server and serve it over stdio or streamable HTTP (blocks)."""
    server = build_server(store, namespace, actor=actor)

    async def main() -> None:
        async with _opened(store):
            if transport == "stdio":
                await serve_stdio(server)
            elif transport == "http":
                await serve_http(server, host=host, port=port, path=path, announce=True)
            else:
                raise ValueError(f"unknown transport {transport!r}: stdio or http")

    anyio.run(main)
