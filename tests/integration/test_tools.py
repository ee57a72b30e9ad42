"""memstate_pg.tools: registered types as function-calling tools, and the dispatcher that
validates and commits a model's call (one transaction, idempotent by call id)."""

from __future__ import annotations

import json

import pytest
from pydantic import BaseModel, Field

from memstate_pg import AsyncMemoryStore, Constraint, MemoryStore, PermissionDenied
from memstate_pg.tools import atools, idempotency_key, tool_name, tools
from tests.support.helpers import versions_and_commits as rows
from tests.support.loop import on


class Contact(BaseModel):
    """How to reach the user."""

    channel: str = Field(description="email, phone, ...")
    address: str
    priority: int = 0


@pytest.fixture
def store(mem: MemoryStore) -> MemoryStore:
    mem.register_schema("contact", Contact, constraint=Constraint(singleton_key="channel"))
    return mem


def test_definitions_in_openai_and_anthropic_shapes(store: MemoryStore) -> None:
    ts = tools(store, namespace="u1")
    assert {"remember_contact", "remember_profile", "remember_note"} <= set(ts.names)
    oa = {t["function"]["name"]: t for t in ts.openai()}["remember_contact"]
    assert oa["type"] == "function"
    params = oa["function"]["parameters"]
    assert params["required"] == Contact.model_json_schema()["required"]
    assert set(params["properties"]) == {"channel", "address", "priority", "_reason"}
    assert "How to reach the user." in oa["function"]["description"]
    assert "'channel' again updates it" in oa["function"]["description"]
    an = {t["name"]: t for t in ts.anthropic()}["remember_contact"]
    assert an["input_schema"] == params
    json.dumps(ts.openai()), json.dumps(ts.anthropic())  # plain JSON
    assert tools(store, types=["contact"]).names == ["remember_contact"]


def test_a_call_commits_one_fact_with_reason_and_actor(store: MemoryStore) -> None:
    ts = tools(store, namespace="u1", actor="agent-7")
    res = ts.call(
        "remember_contact",
        json.dumps({"channel": "email", "address": "a@b.c", "_reason": "user said so"}),
        call_id="call_1",
    )
    assert res.ok and res.fact_id is not None, res
    assert json.loads(res.content) == {"ok": True, "fact_id": str(res.fact_id)}
    fact = store.get(res.fact_id)
    assert fact is not None and fact.namespace == "u1"
    assert fact.payload == {"channel": "email", "address": "a@b.c", "priority": 0}
    [v] = store.history(res.fact_id)
    assert (v.actor, v.reason) == ("agent-7", "user said so")


def test_schema_violation_returns_the_validation_error_and_writes_nothing(
    store: MemoryStore, dsn: str
) -> None:
    ts = tools(store, namespace="u1")
    before = rows(dsn)
    res = ts.call("remember_contact", {"channel": "email", "priority": "high"}, call_id="c1")
    assert res.is_error
    assert "address" in res.error and "priority" in res.error  # type: ignore[operator]
    assert {tuple(e["loc"]) for e in res.errors} == {("address",), ("priority",)}
    body = json.loads(res.content)
    assert body["ok"] is False and body["errors"]
    # malformed JSON text and a non-object are refused the same way
    assert ts.call("remember_contact", '{"channel": "email",', call_id="c2").is_error
    assert ts.call("remember_contact", "[1, 2]", call_id="c3").is_error
    assert "no tool named" in (ts.call("remember_nothing", {}, call_id="c4").error or "")
    assert rows(dsn) == before
    # the corrected call, same call id as the refused one: a refusal recorded nothing
    assert ts.call("remember_contact", {"channel": "email", "address": "x@y.z"}, call_id="c1").ok
    assert rows(dsn) == (before[0] + 1, before[1] + 1)


def test_a_repeated_call_id_writes_once(store: MemoryStore, dsn: str) -> None:
    ts = tools(store, namespace="u1")
    before = rows(dsn)
    args = {"text": "likes green tea", "tags": ["tea"]}
    first = ts.call("remember_note", args, call_id="call_42")
    again = ts.call("remember_note", args, call_id="call_42")
    assert first.ok and again.ok and first.fact_id == again.fact_id
    assert rows(dsn) == (before[0] + 1, before[1] + 1)
    other = ts.call("remember_note", args, call_id="call_43")
    assert other.fact_id != first.fact_id
    assert rows(dsn) == (before[0] + 2, before[1] + 2)


def test_a_type_registered_by_another_process_is_validated_by_its_stored_schema(
    store: MemoryStore, dsn: str
) -> None:
    other = MemoryStore(dsn, max_size=2)  # knows no pydantic model: only the database's rows
    try:
        ts = tools(other, namespace="u1")
        assert ts.get("remember_contact") is not None
        before = rows(dsn)
        res = ts.call("remember_contact", {"channel": 5}, call_id="x")
        assert res.is_error and {tuple(e["loc"]) for e in res.errors} >= {("channel",)}
        assert "address" in (res.error or "")
        assert rows(dsn) == before
        res = ts.call(
            "remember_contact", {"channel": "sms", "address": "+33", "extra": 1}, call_id="y"
        )
        assert res.ok
        fact = other.get(res.fact_id)  # type: ignore[arg-type]
        assert fact is not None  # default filled in, unknown key dropped: as the model would
        assert fact.payload == {"channel": "sms", "address": "+33", "priority": 0}
    finally:
        other.close()


def test_database_rules_come_back_as_errors(store: MemoryStore, dsn: str) -> None:
    store.register_schema(
        "badge", Contact, constraint=Constraint(singleton_key="channel", immutable=True)
    )
    ts = tools(store, namespace="u1")
    assert ts.call("remember_badge", {"channel": "a", "address": "b"}, call_id="e1").ok
    before = rows(dsn)
    res = ts.call("remember_badge", {"channel": "a", "address": "changed"}, call_id="e2")
    assert res.is_error and "immutable" in (res.error or "")
    assert rows(dsn) == before


def test_a_bound_store_refuses_another_namespace(dsn: str, store: MemoryStore) -> None:
    bound = MemoryStore(dsn, namespace="u1", max_size=2)
    try:
        with pytest.raises(PermissionDenied):
            tools(bound, namespace="u2")
        ts = tools(bound)
        res = ts.call("remember_note", {"text": "hi"}, call_id="n1")
        assert bound.get(res.fact_id).namespace == "u1"  # type: ignore[union-attr,arg-type]
    finally:
        bound.close()


def test_names_are_valid_function_names() -> None:
    assert tool_name("user.profile:v2") == "remember_user_profile_v2"
    long = tool_name("x" * 100)
    assert len(long) == 64
    taken = {tool_name("a.b")}
    assert tool_name("a:b", taken) != tool_name("a.b") and len(tool_name("a:b", taken)) <= 64
    assert len(idempotency_key("c" * 500)) <= 200


def test_async_dispatch_over_async_store(dsn: str, store: MemoryStore, loop) -> None:
    async def go() -> None:
        amem = await AsyncMemoryStore.open(dsn, max_size=2)
        try:
            ts = await atools(amem, namespace="u1")
            before = rows(dsn)
            bad = await ts.acall("remember_contact", {"channel": "email"}, call_id="a1")
            assert bad.is_error and rows(dsn) == before
            ok = await ts.acall(
                "remember_contact", {"channel": "im", "address": "@u"}, call_id="a2"
            )
            again = await ts.acall(
                "remember_contact", {"channel": "im", "address": "@u"}, call_id="a2"
            )
            assert ok.ok and ok.fact_id == again.fact_id
            assert rows(dsn) == (before[0] + 1, before[1] + 1)
        finally:
            await amem.close()

    on(loop, go())
    # a MemoryStore's ToolSet works from asyncio too (in a worker thread)
    ts = tools(store, namespace="u1")
    res = on(loop, ts.acall("remember_note", {"text": "async over sync"}, call_id="s1"))
    assert res.ok
