"""Bad input gets a clear MemStateError subclass and writes nothing (DESIGN invariant 4)."""

from __future__ import annotations

import psycopg
import pytest

from memstate_pg import ConflictError, Fact, MemoryStore, MemStateError, NotFound, ValidationFailed


def snapshot(dsn: str) -> tuple[int, ...]:
    with psycopg.connect(dsn) as conn:
        return tuple(
            conn.execute(f"SELECT count(*) FROM memstate.{t}").fetchone()[0]
            for t in ("commits", "fact_versions", "facts", "outbox")
        )


@pytest.fixture
def base(mem: MemoryStore, dsn: str):
    """A store with one live fact and a mirror row, so that outbox writes would show."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("INSERT INTO memstate.mirrors (name, kind) VALUES ('watch', 'memory')")
    mem.register_schema("free", None)
    fid = mem.commit(Fact(type="note", payload={"text": "existing"}), namespace="e")
    return fid


BAD_COMMITS = {
    "invalid payload": dict(fact=Fact(type="profile", payload={"field": "city"})),
    "wrong payload type": dict(
        fact=Fact(type="profile", payload={"field": "city", "value": ["x"]})
    ),
    "wrong vector dimension": dict(
        fact=Fact(type="note", payload={"text": "x"}, embedding=[0.1] * 5)
    ),
    "NaN in vector": dict(
        fact=Fact(type="note", payload={"text": "x"}, embedding=[float("nan")] * 384)
    ),
    "inf in vector": dict(
        fact=Fact(type="note", payload={"text": "x"}, embedding=[float("inf")] + [0.0] * 383)
    ),
    "NUL in payload": dict(fact=Fact(type="note", payload={"text": "a\x00b"})),
    "NUL in payload key": dict(fact=Fact(type="free", payload={"text": "a", "k\x00": 1})),
    "NUL deep in payload": dict(fact=Fact(type="free", payload={"a": [{"b": ["c\x00"]}]})),
    "non-string key": dict(fact=Fact(type="free", payload={"a": {1: "x"}})),
    "NUL in content": dict(fact=Fact(type="note", payload={"text": "a"}, content="x\x00")),
    "lone surrogate": dict(fact=Fact(type="note", payload={"text": "\ud800"})),
    "oversized payload": dict(fact=Fact(type="note", payload={"text": "x" * (2 << 20)})),
    "NUL in namespace": dict(fact=Fact(type="note", payload={"text": "a"}), namespace="a\x00"),
    "empty namespace": dict(
        fact=Fact(type="note", payload={"text": "a"}, namespace=""), namespace=""
    ),
    "huge namespace": dict(fact=Fact(type="note", payload={"text": "a"}), namespace="n" * 500),
    "NUL in session": dict(fact=Fact(type="note", payload={"text": "a"}), session_id="s\x00"),
    "non-JSON value": dict(fact=Fact(type="note", payload={"text": "a", "tags": [object()]})),
}


@pytest.mark.parametrize("case", list(BAD_COMMITS))
def test_bad_commit_is_refused_and_writes_nothing(mem: MemoryStore, dsn: str, base, case):
    kwargs = dict(BAD_COMMITS[case])
    fact = kwargs.pop("fact")
    before = snapshot(dsn)
    with pytest.raises(ValidationFailed) as info:
        mem.commit(fact, **kwargs)
    assert str(info.value)  # a message a person can read
    assert snapshot(dsn) == before


def test_pydantic_errors_are_surfaced(mem: MemoryStore):
    with pytest.raises(ValidationFailed) as info:
        mem.commit(Fact(type="profile", payload={"field": 3}))
    assert "value" in str(info.value) and info.value.errors and info.value.errors[0]["loc"]


@pytest.mark.parametrize(
    "filters", [{"": 1}, "role=x", {"a": {1, 2}}, {"a.": 1}, {"x": float("inf")}]
)
def test_malformed_filters(mem: MemoryStore, base, filters):
    with pytest.raises(ValidationFailed):
        mem.search("x", filters=filters, namespace="e")
    with pytest.raises(ValidationFailed):
        mem.query(filters=filters, namespace="e")


@pytest.mark.parametrize("k", [0, -1, 1001, "5", True])
def test_bad_k(mem: MemoryStore, k):
    with pytest.raises(ValidationFailed):
        mem.search("x", k=k)


def test_bad_update_and_delete_write_nothing(mem: MemoryStore, dsn: str, base):
    before = snapshot(dsn)
    with pytest.raises(ValidationFailed):
        mem.update(base, {"payload": {"text": 5}})
    with pytest.raises(ValidationFailed):
        mem.update(base, {"namespace": "elsewhere"})
    with pytest.raises(NotFound):
        mem.update("00000000-0000-0000-0000-000000000000", {"payload": {"text": "x"}})
    with pytest.raises(ValidationFailed):
        mem.delete("nope")
    with pytest.raises(ConflictError):
        mem.delete(base, expected_version=7)
    with pytest.raises(ValidationFailed):
        mem.rollback(0, namespace="e")
    assert snapshot(dsn) == before


def test_failure_in_a_transaction_writes_nothing(mem: MemoryStore, dsn: str, base):
    before = snapshot(dsn)
    with pytest.raises(MemStateError), mem.transaction("e") as tx:
        tx.commit(Fact(type="note", payload={"text": "good"}))
        tx.commit(Fact(type="note", payload={"text": "bad\x00"}))
    assert snapshot(dsn) == before


def test_register_schema_checks_fields(mem: MemoryStore):
    from memstate_pg import Constraint
    from tests.support.helpers import Profile

    with pytest.raises(ValidationFailed):
        mem.register_schema("p2", Profile, constraint=Constraint(singleton_key="nope"))
    with pytest.raises(ValidationFailed):
        mem.register_schema("p3", Profile, text_field="nope")
    with pytest.raises(ValidationFailed):
        mem.register_schema("", Profile)
