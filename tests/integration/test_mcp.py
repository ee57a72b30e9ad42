"""The MCP server, driven by the official SDK's own client: over stdio (the server spawned as
`python -m memstate_pg.mcp`), over streamable HTTP on 127.0.0.1, and in process."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from pydantic import BaseModel

pytest.importorskip("mcp", reason="the 'mcp' extra is not installed")

from mcp import Client, StdioServerParameters  # noqa: E402
from mcp.shared.exceptions import MCPError  # noqa: E402

from memstate_pg import Constraint, Fact, MemoryStore  # noqa: E402
from memstate_pg.mcp import build_server  # noqa: E402
from tests.support.helpers import register_test_types
from tests.support.helpers import versions_and_commits as rows  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
NS = "user-1"
WAIT = 60  # seconds: the bound of every wait in this file


class Contact(BaseModel):
    """How to reach the user."""

    channel: str
    address: str
    priority: int = 0


@pytest.fixture
def prepared(dsn: str) -> Iterator[dict[str, Any]]:
    """Registered types, and one fact in another namespace that no call may reach."""
    with MemoryStore(dsn, max_size=2) as mem:
        register_test_types(mem)
        mem.register_schema("contact", Contact, constraint=Constraint(singleton_key="channel"))
        foreign = mem.commit(
            Fact(type="note", payload={"text": "secret of another user"}), namespace="user-2"
        )
    yield {"dsn": dsn, "foreign": str(foreign)}


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    return env


def payload(result: Any) -> dict[str, Any]:
    assert result.content and result.content[0].type == "text"
    data: dict[str, Any] = json.loads(result.content[0].text)
    return data


async def exercise(client: Client, dsn: str, foreign: str) -> None:
    """Every tool and resource once, through the given client."""
    listed = {t.name: t for t in (await client.list_tools()).tools}
    assert {"remember", "recall", "get", "forget", "history", "undo", "as_of"} <= set(listed)
    assert {"remember_contact", "remember_profile", "remember_note"} <= set(listed)
    schema = listed["remember_contact"].input_schema
    expected = Contact.model_json_schema()
    assert schema["required"] == expected["required"]
    assert set(schema["properties"]) == set(expected["properties"]) | {"_reason"}

    # remember_<type>: validated, committed with the call's reason and the server's actor
    r = await client.call_tool(
        "remember_contact", {"channel": "email", "address": "a@b.c", "_reason": "user said so"}
    )
    assert not r.is_error, r
    contact = payload(r)["fact"]
    assert contact["namespace"] == NS and contact["payload"]["priority"] == 0

    # a schema violation: an error result the client sees, and nothing written
    before = rows(dsn)
    bad = await client.call_tool("remember_contact", {"channel": 7, "priority": "high"})
    assert bad.is_error
    body = payload(bad)
    assert {tuple(e["loc"]) for e in body["errors"]} == {("channel",), ("address",), ("priority",)}
    assert "address" in body["error"]
    bad = await client.call_tool("remember", {"type": "contact", "payload": {"channel": "x"}})
    assert bad.is_error and "address" in payload(bad)["error"]
    bad = await client.call_tool("recall", {"query": "x", "k": 0, "surprise": 1})
    assert bad.is_error and {tuple(e["loc"]) for e in payload(bad)["errors"]} == {
        ("k",),
        ("surprise",),
    }
    assert rows(dsn) == before

    # remember (any type), recall, get
    r = await client.call_tool(
        "remember",
        {"type": "note", "payload": {"text": "likes green tea"}, "reason": "small talk"},
    )
    assert not r.is_error, r
    note = payload(r)["fact"]
    r = await client.call_tool("recall", {"query": "green tea", "k": 3, "type": "note"})
    hits = payload(r)["hits"]
    assert [h["id"] for h in hits] == [note["id"]] and hits[0]["score"] > 0
    r = await client.call_tool("recall", {"query": "tea", "filters": {"text": "likes green tea"}})
    assert [h["id"] for h in payload(r)["hits"]] == [note["id"]]
    r = await client.call_tool("get", {"id": note["id"]})
    assert payload(r)["fact"]["payload"] == {"text": "likes green tea", "tags": []}

    # history: actor and reason of each write
    r = await client.call_tool("history", {"id": contact["id"]})
    [v] = payload(r)["versions"]
    assert (v["actor"], v["reason"], v["op"]) == ("mcp", "user said so", "put")
    r = await client.call_tool("history", {})
    assert len(payload(r)["versions"]) == 2
    r = await client.call_tool("history", {"limit": 1})  # the latest one
    assert [v["fact_id"] for v in payload(r)["versions"]] == [note["id"]]

    # forget, then undo brings it back; as_of shows the state after a commit
    r = await client.call_tool("forget", {"id": note["id"], "reason": "wrong"})
    assert not r.is_error, r
    forget_seq = payload(r)["seq"]
    r = await client.call_tool("get", {"id": note["id"]})
    assert r.is_error and "no live fact" in payload(r)["error"]
    r = await client.call_tool("undo", {"steps": 1, "reason": "it was right"})
    assert not r.is_error, r
    r = await client.call_tool("get", {"id": note["id"]})
    assert not r.is_error
    r = await client.call_tool("as_of", {"seq": forget_seq})
    assert {f["id"] for f in payload(r)["facts"]} == {contact["id"]}
    r = await client.call_tool("history", {"id": note["id"]})
    assert [(v["op"], v["actor"], v["reason"]) for v in payload(r)["versions"]] == [
        ("put", "mcp", "small talk"),
        ("delete", "mcp", "wrong"),
        ("put", "mcp", "it was right"),
    ]
    bad = await client.call_tool("as_of", {})
    assert bad.is_error

    # resources: the live facts of this namespace only
    uris = {str(x.uri) for x in (await client.list_resources()).resources}
    assert uris == {
        "memstate://facts",
        f"memstate://facts/{contact['id']}",
        f"memstate://facts/{note['id']}",
    }
    templates = (await client.list_resource_templates()).resource_templates
    assert [t.uri_template for t in templates] == ["memstate://facts/{id}"]
    listing = await client.read_resource("memstate://facts")
    assert {f["id"] for f in json.loads(listing.contents[0].text)} == {contact["id"], note["id"]}
    one = await client.read_resource(f"memstate://facts/{note['id']}")
    assert json.loads(one.contents[0].text)["content"] == "likes green tea"

    # no call reaches another namespace
    before = rows(dsn)
    for name, args in [
        ("recall", {"query": "secret", "namespace": "user-2"}),
        ("remember", {"type": "note", "payload": {"text": "x"}, "namespace": "user-2"}),
        ("remember_note", {"text": "x", "namespace": "user-2"}),
        ("history", {"namespace": "user-2"}),
        ("undo", {"namespace": "user-2"}),
    ]:
        r = await client.call_tool(name, args)
        assert r.is_error, (name, r)
        assert "bound to namespace 'user-1'" in payload(r)["error"]
    for name, args in [
        ("get", {"id": foreign}),
        ("forget", {"id": foreign}),
        ("history", {"id": foreign}),
        ("remember", {"type": "note", "payload": {"text": "overwrite"}, "id": foreign}),
    ]:
        r = await client.call_tool(name, args)
        assert r.is_error and "user-1" in payload(r)["error"], (name, r)
    r = await client.call_tool("recall", {"query": "secret of another user", "k": 10})
    assert all(h["namespace"] == NS for h in payload(r)["hits"])
    with pytest.raises(MCPError):
        await client.read_resource(f"memstate://facts/{foreign}")
    assert rows(dsn) == before
    with MemoryStore(dsn, max_size=1) as mem:
        fact = mem.get(foreign)
        assert fact is not None and fact.payload["text"] == "secret of another user"
        assert fact.version == 1


def test_over_stdio(prepared: dict[str, Any]) -> None:
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "memstate_pg.mcp", "--dsn", prepared["dsn"], "--namespace", NS],
        env=child_env(),
        cwd=str(ROOT),
    )

    async def main() -> None:
        with anyio.fail_after(WAIT):
            async with Client(params) as client:
                await exercise(client, prepared["dsn"], prepared["foreign"])

    anyio.run(main)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
def http_server(prepared: dict[str, Any]) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "memstate_pg.mcp", "--dsn", prepared["dsn"], "--namespace", NS]
        + ["--http", "--port", str(port)],
        env=child_env(),
        cwd=str(ROOT),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + WAIT
        while True:
            if proc.poll() is not None:
                err = proc.stderr.read().decode() if proc.stderr else ""
                pytest.fail(f"the MCP server exited with {proc.returncode}: {err}")
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("the MCP HTTP server did not listen within the bound")
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def test_over_streamable_http(prepared: dict[str, Any], http_server: str) -> None:
    async def main() -> None:
        with anyio.fail_after(WAIT):
            async with Client(http_server) as client:
                await exercise(client, prepared["dsn"], prepared["foreign"])

    anyio.run(main)


def test_in_process_with_actor_from_meta_and_a_type_registered_later(
    prepared: dict[str, Any],
) -> None:
    dsn = prepared["dsn"]

    class Mood(BaseModel):
        mood: str

    async def main() -> None:
        mem = MemoryStore(dsn, namespace=NS, max_size=2)
        try:
            async with Client(build_server(mem)) as client:
                assert "remember_mood" not in {t.name for t in (await client.list_tools()).tools}
                mem.register_schema("mood", Mood)
                # a type registered while the server runs is a tool at once
                r = await client.call_tool(
                    "remember_mood", {"mood": "calm"}, meta={"memstate/actor": "claude"}
                )
                assert not r.is_error, r
                fid = payload(r)["fact"]["id"]
                [v] = mem.history(fid)
                assert v.actor == "claude"
                assert "remember_mood" in {t.name for t in (await client.list_tools()).tools}
                # a retried call id writes once
                before = rows(dsn)
                meta = {"memstate/call_id": "call-9"}
                a = await client.call_tool("remember_mood", {"mood": "glad"}, meta=meta)
                b = await client.call_tool("remember_mood", {"mood": "glad"}, meta=meta)
                assert payload(a)["fact"]["id"] == payload(b)["fact"]["id"]
                assert rows(dsn) == (before[0] + 1, before[1] + 1)
        finally:
            mem.close()

    anyio.run(main)


def test_the_namespace_is_fixed_at_start(dsn: str) -> None:
    with MemoryStore(dsn, namespace="a", max_size=1) as bound:
        with pytest.raises(ValueError, match="bound to namespace 'a'"):
            build_server(bound, "b")
        assert build_server(bound).memstate.namespace == "a"  # type: ignore[attr-defined]
    with MemoryStore(dsn, max_size=1) as unbound:
        with pytest.raises(ValueError, match="one namespace"):
            build_server(unbound)
        assert build_server(unbound, "c").memstate.namespace == "c"  # type: ignore[attr-defined]


def test_cli_without_a_migrated_schema_says_so(empty_dsn: str) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "memstate_pg.mcp", "--dsn", empty_dsn, "--namespace", NS],
        env=child_env(),
        cwd=str(ROOT),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert proc.returncode == 5, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-2].startswith("error: schema memstate is not migrated")
    assert lines[-1].startswith("hint: run `memstate-pg migrate`")
    assert proc.stdout == "" and "Traceback" not in proc.stderr


def test_cli_on_a_taken_port_says_so(dsn: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc = subprocess.run(
            [sys.executable, "-m", "memstate_pg.mcp", "--dsn", dsn, "--namespace", NS]
            + ["--http", "--port", str(port)],
            env=child_env(),
            cwd=str(ROOT),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=WAIT,
        )
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert "Address already in use" in lines[-2] and lines[-2].startswith("error: ")
    assert lines[-1].startswith("hint: pick another --port")
    assert "Traceback" not in proc.stderr


def test_cli_on_an_unreachable_server_says_so_within_seconds() -> None:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "memstate_pg.mcp", "--namespace", NS]
        + ["--dsn", f"postgresql://nobody@127.0.0.1:{free_port()}/x"],
        env=child_env(),
        cwd=str(ROOT),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert proc.returncode == 3, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert lines[-2].startswith("error: database unavailable") and "refused" in lines[-2]
    assert lines[-1].startswith("hint: check --dsn")
    assert "Traceback" not in proc.stderr and proc.stdout == ""
    assert time.monotonic() - t0 < WAIT


def test_cli_embedder_option(dsn: str) -> None:
    from memstate_pg.mcp.cli import make_embedder

    assert make_embedder(None) is None
    assert make_embedder("hashing:64").dim == 64
    with pytest.raises(ValueError, match="hashing"):
        make_embedder("word2vec:x")
    proc = subprocess.run(
        [sys.executable, "-m", "memstate_pg.mcp", "--dsn", dsn, "--embedder", "nonsense"],
        env=child_env(),
        cwd=str(ROOT),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip().splitlines()[-2].startswith("error: --embedder 'nonsense'")


def test_input_schemas_without_a_listing_match_the_listing(prepared: dict[str, Any]) -> None:
    """The SDK validates an HTTP call's Mcp-Param headers with get_tool_input_schema; it
    must agree with tools/list (else it would run the listing, a database read, per call)."""

    async def main() -> None:
        with MemoryStore(prepared["dsn"], namespace=NS, max_size=2) as mem:
            server = build_server(mem)
            assert server.get_tool_input_schema is not None
            async with Client(server) as client:
                listed = {t.name: t.input_schema for t in (await client.list_tools()).tools}
            for name, schema in listed.items():
                assert server.get_tool_input_schema(name) == schema, name
            assert server.get_tool_input_schema("no_such_tool") is None

    anyio.run(main)
