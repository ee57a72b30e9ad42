"""Schemaless by default, strict by choice (as MemState): a fact type nobody registered is
stored as given; `strict_types=True` (Python) or config strict_types (SQL) refuses it."""

from __future__ import annotations

import psycopg
import pytest

from memstate_pg import Fact, MemoryStore, ValidationFailed
from tests.support.helpers import register_test_types
from tests.support.helpers import versions_and_commits as counts


def test_memstate_readme_commit_with_an_unregistered_type(mem: MemoryStore) -> None:
    fid = mem.commit(
        Fact(type="profile_update", payload={"content": "User lives in Berlin", "role": "user"})
    )
    fact = mem.get(fid)
    assert fact is not None and fact.type == "profile_update"
    assert fact.content == "User lives in Berlin"  # the `content` key is what gets embedded
    assert [h.fact.id for h in mem.search("Berlin", k=1)] == [fid]
    assert [f.id for f in mem.query("profile_update", {"role": "user"})] == [fid]
    mem.update(fid, {"payload": {"content": "User lives in Paris", "role": "user"}})
    assert [v.version for v in mem.history(fid)] == [1, 2]


def test_content_comes_from_content_then_text_then_json(mem: MemoryStore) -> None:
    a = mem.commit(Fact(type="loose", payload={"text": "from text"}))
    b = mem.commit(Fact(type="loose", payload={"n": 1}))
    c = mem.commit(Fact(type="loose", payload={"content": 3, "text": "text wins over non-string"}))
    assert [mem.get(x).content for x in (a, b, c)] == [  # type: ignore[union-attr]
        "from text",
        '{"n": 1}',
        "text wins over non-string",
    ]


def test_registered_types_keep_full_validation(mem: MemoryStore, dsn: str) -> None:
    register_test_types(mem)
    before = counts(dsn)
    with pytest.raises(ValidationFailed):
        mem.commit(Fact(type="profile", payload={"nonsense": True}))
    assert counts(dsn) == before


def test_unregistered_payload_must_still_be_a_json_object(mem: MemoryStore, dsn: str) -> None:
    before = counts(dsn)
    for bad in ([1, 2], "text", {"k": float("nan")}, {"k": "nul\x00"}, {"k": {1, 2}}):
        with pytest.raises(ValidationFailed):  # model_construct: past the Fact model's checks
            mem.commit(Fact.model_construct(type="loose", payload=bad, namespace=None))
    assert counts(dsn) == before


def test_strict_types_refuses_before_any_write(dsn: str) -> None:
    with MemoryStore(dsn, strict_types=True, max_size=2) as strict:
        before = counts(dsn)
        with pytest.raises(ValidationFailed, match="strict_types"):
            strict.commit(Fact(type="profile_update", payload={"content": "x"}))
        assert counts(dsn) == before


def test_sql_callers_schemaless_and_strict_by_config(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("SELECT memstate.register_model('m3', 3)")
        sql = "SELECT memstate.commit_fact('u1', %s, %s::jsonb, NULL, '[1,0,0]'::vector, 'm3')"
        conn.execute(sql, ("loose", '{"content": "from psql"}'))
        row = conn.execute("SELECT content FROM memstate.facts WHERE type = 'loose'").fetchone()
        assert row == ("from psql",)
        conn.execute("UPDATE memstate.config SET value = 'true' WHERE key = 'strict_types'")
        before = counts(dsn)
        with pytest.raises(psycopg.Error) as info:
            conn.execute(sql, ("other", '{"content": "refused"}'))
        assert info.value.sqlstate == "MSV01" and "strict_types" in str(info.value)
        # a raw insert into the table is held to the same rule by its trigger
        assert counts(dsn) == before


def test_history_newest_first_and_limit(mem: MemoryStore) -> None:
    a = mem.commit(Fact(type="note", payload={"text": "a1"}), namespace="h")
    mem.update(a, {"payload": {"text": "a2"}})
    mem.update(a, {"payload": {"text": "a3"}})
    b = mem.commit(Fact(type="note", payload={"text": "b1"}), namespace="h")
    assert [v.content for v in mem.history(namespace="h")] == ["a1", "a2", "a3", "b1"]
    assert [v.content for v in mem.history(namespace="h", limit=2)] == ["a1", "a2"]
    newest = mem.history(namespace="h", limit=2, newest_first=True)
    assert [(v.fact_id, v.content) for v in newest] == [(b, "b1"), (a, "a3")]
    assert [v.version for v in mem.history(a, newest_first=True, limit=2)] == [3, 2]
    assert [v.version for v in mem.history(a, limit=1)] == [1]


def test_search_before_anything_was_written_with_the_model_is_empty(dsn: str) -> None:
    """A fresh database: nothing can match a model nobody wrote with (no error, no DDL)."""
    with MemoryStore(dsn, max_size=1) as fresh:
        assert fresh.search("anything", k=3) == []
        fid = fresh.commit(Fact(type="note", payload={"text": "anything"}))
        assert [h.fact.id for h in fresh.search("anything", k=3)] == [fid]
