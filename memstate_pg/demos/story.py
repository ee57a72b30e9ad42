"""The story of the demo: an agent's memory, told in tables (commits, a singleton update,
search, a bad memory rolled back, history, time travel)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from ..models import Constraint, Fact
from ..store import MemoryStore


class Profile(BaseModel):
    field: str
    value: str


class Preference(BaseModel):
    topic: str
    value: str
    sentiment: Literal["likes", "dislikes"] = "likes"


class Event(BaseModel):
    text: str


NS = "user-42"


def register(mem: MemoryStore) -> None:
    mem.register_schema(
        "profile", Profile, constraint=Constraint(singleton_key="field"), text_field="value"
    )
    mem.register_schema("preference", Preference, text_field="value")
    mem.register_schema("event", Event, constraint=Constraint(immutable=True), text_field="text")


def facts_table(title: str, facts) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("type", "payload", "version", "commit"):
        table.add_column(col)
    for f in facts:
        table.add_row(f.type, str(f.payload), str(f.version), str(f.commit_seq))
    return table


def story(mem: MemoryStore, console: Console) -> dict:
    """The core story: commits, a singleton update, search, a bad memory rolled back,
    history and time travel. Returns figures the mirror part of the demo reuses."""
    register(mem)
    city = mem.commit(
        Fact(
            type="profile",
            payload={"field": "city", "value": "the user lives in the city of Berlin"},
        ),
        namespace=NS,
        actor="agent",
        reason="user said so",
    )
    first = mem.get(city)
    assert first is not None
    first_seq = first.commit_seq
    assert first_seq is not None, "a stored fact carries its commit's seq"
    with mem.transaction(NS, actor="agent", reason="onboarding chat") as tx:
        tx.commit(
            Fact(type="preference", payload={"topic": "food", "value": "likes sushi and ramen"})
        )
        tx.commit(
            Fact(type="profile", payload={"field": "job", "value": "the user works as a chef"})
        )
        tx.commit(Fact(type="event", payload={"text": "signed up for the newsletter"}))
    mem.commit(
        Fact(
            type="profile",
            payload={"field": "city", "value": "the user moved to the city of Paris"},
        ),
        namespace=NS,
        actor="agent",
        reason="user moved",
    )
    console.print(facts_table("Memory of user-42 (one row per live fact)", mem.query(namespace=NS)))

    hits = mem.search("which city does the user live in?", k=3, namespace=NS)
    table = Table(
        title="search('which city does the user live in?') — pgvector, cosine similarity",
        title_justify="left",
    )
    table.add_column("score", justify="right")
    table.add_column("fact")
    for h in hits:
        table.add_row(f"{h.score:.3f}", str(h.fact.payload))
    console.print(table)

    bad = mem.commit(
        Fact(
            type="preference",
            payload={"topic": "food", "value": "hates all food", "sentiment": "dislikes"},
        ),
        namespace=NS,
        actor="agent",
        reason="misheard",
    )
    slipped = mem.get(bad)
    assert slipped is not None
    console.print(f"[red]A bad memory slipped in:[/red] {slipped.payload}")
    seq = mem.rollback(1, namespace=NS, reason="user corrected the agent")
    console.print(
        f"[green]rollback(1)[/green] wrote commit {seq}; the bad memory is gone: {mem.get(bad) is None}; "
        "its versions stay in history."
    )

    table = Table(
        title="history — append-only: updates, and the rollback that removed the bad memory",
        title_justify="left",
    )
    for col in ("fact", "version", "commit", "op", "kind", "reason", "value"):
        table.add_column(col)
    for name, fid in (("city", city), ("bad", bad)):
        for v in mem.history(fid):
            table.add_row(
                name,
                str(v.version),
                str(v.seq),
                v.op,
                v.kind,
                v.reason or "",
                (v.payload or {}).get("value", ""),
            )
    console.print(table)
    console.print(
        facts_table(
            f"as_of(commit {first_seq}) — the memory right after the first commit",
            mem.as_of(first_seq, namespace=NS),
        )
    )
    return {"city": city}
