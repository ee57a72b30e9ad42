"""Found by the review of the agent surfaces (tools, MCP): each failed before its fix."""

from __future__ import annotations

import json
import uuid
from datetime import datetime

import anyio
from pydantic import BaseModel

from memstate_pg import Fact, MemoryStore
from memstate_pg.tools import tools


class Reminder(BaseModel):
    text: str
    at: datetime
    ref: uuid.UUID


# ---- tools.py -------------------------------------------------------------------------


def test_tool_arguments_with_too_many_digits_are_an_error_result(mem):
    ts = tools(mem, namespace="a")
    r = ts.call("remember_note", '{"text": ' + "1" * 5000 + "}", call_id="c1")
    assert r.is_error


def test_tool_arguments_nested_too_deep_are_an_error_result(mem):
    ts = tools(mem, namespace="a")
    r = ts.call("remember_note", "[" * 100000, call_id="c2")
    assert r.is_error


def test_a_call_id_reused_with_another_tool_is_another_write(mem, dsn):
    ts = tools(mem, namespace="a")
    a = ts.call("remember_note", {"text": "hello"}, call_id="call-1")
    b = ts.call("remember_profile", {"field": "city", "value": "Paris"}, call_id="call-1")
    assert a.ok and b.ok
    # b reports success but its fact is the note; no profile was written
    assert mem.query("profile", namespace="a"), (
        f"profile lost; b.fact_id={b.fact_id} == note {a.fact_id}"
    )


def test_stored_schema_formats_are_checked_without_the_model(dsn):
    with MemoryStore(dsn, max_size=2) as owner:
        owner.register_schema("reminder", Reminder, text_field="text")
    with MemoryStore(dsn, max_size=2) as other:  # a process without the model (MCP server)
        ts = tools(other, namespace="a")
        r = ts.call("remember_reminder", {"text": "x", "at": "not a date", "ref": "nope"})
        assert r.is_error, "payload violating the registered model was stored: " + str(
            other.query("reminder", namespace="a")[0].payload
        )


# ---- MCP --------------------------------------------------------------------------------


def _mcp(mem, fn, **kw):
    from mcp import Client

    from memstate_pg.mcp import build_server

    out = {}

    async def main():
        async with Client(build_server(mem, "a", **kw)) as client:
            out["r"] = await fn(client)

    anyio.run(main)
    return out["r"]


def test_the_facts_resource_is_bounded(mem):
    mem.commit_many(
        [Fact(type="note", payload={"text": f"n{i}"}) for i in range(30)], namespace="a"
    )

    async def go(client):
        res = await client.read_resource("memstate://facts")
        return json.loads(res.contents[0].text)

    data = _mcp(mem, go, resource_limit=5)
    assert len(data) <= 5, f"memstate://facts returned {len(data)} facts, resource_limit=5"


def test_remember_cannot_replay_a_typed_calls_key(mem):
    async def go(client):
        a = await client.call_tool(
            "remember_note", {"text": "typed"}, meta={"memstate/call_id": "X"}
        )
        b = await client.call_tool(
            "remember",
            {
                "type": "profile",
                "payload": {"field": "f", "value": "v"},
                "idempotency_key": "tool-call:remember_note:X",
            },
        )
        return a, b

    a, b = _mcp(mem, go)
    assert not a.is_error and b.is_error  # before: b "succeeded" and returned the note
    assert "reserved" in b.content[0].text
    assert mem.query("profile", namespace="a") == []
