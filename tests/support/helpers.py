"""Types and helpers shared by the tests."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

from memstate_pg import Constraint, MemoryStore


class Profile(BaseModel):
    """One attribute of a user: at most one live fact per field (singleton)."""

    field: str
    value: str


class Preference(BaseModel):
    topic: str
    value: str
    role: Literal["preference", "dislike"] = "preference"


class Event(BaseModel):
    """Something that happened: never rewritten."""

    text: str
    at: int = 0


class Note(BaseModel):
    text: str
    tags: list[str] = []


def register_test_types(store: MemoryStore) -> None:
    store.register_schema(
        "profile", Profile, constraint=Constraint(singleton_key="field"), text_field="value"
    )
    store.register_schema("preference", Preference, text_field="value")
    store.register_schema("event", Event, constraint=Constraint(immutable=True), text_field="text")
    store.register_schema("note", Note, text_field="text")


def live_state(store: MemoryStore, namespace: str) -> dict:
    """{fact_id: (version, payload)} of the live facts of a namespace."""
    return {f.id: (f.payload, f.session_id) for f in store.query(namespace=namespace)}


def versions_and_commits(dsn: str) -> tuple[int, int]:
    """How many version rows and commits the database holds: a refused call must leave
    both as they were."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT (SELECT count(*) FROM memstate.fact_versions),"
            " (SELECT count(*) FROM memstate.commits)"
        ).fetchone()
        assert row is not None
        return row[0], row[1]
