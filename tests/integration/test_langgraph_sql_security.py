"""sql/langgraph.sql against hostile callers (issue 11 items 2 and 9): one lg_search call is
bounded (conditions, bytes) and refused with MSV01 before any work, the store refuses
such a filter before any I/O, and no lg_* function runs an overload planted in a schema
on the caller's search_path."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from langgraph.store.base import SearchOp

from memstate_pg import MemoryStore, ValidationFailed
from memstate_pg.langgraph import MemStateStore
from memstate_pg.langgraph.store.base import MAX_FILTER_BYTES, MAX_FILTER_CONDITIONS

DIMS = 16

SEARCH = (
    "SELECT count(*) FROM memstate.lg_search('langgraph', 'lg_item', NULL, %s::jsonb, "
    "%s::jsonb, 10, 0)"
)


def _ne(n: int) -> list[dict[str, Any]]:
    return [{"path": ["value", "n"], "op": "ne", "value": -i - 1} for i in range(n)]


@pytest.fixture
def store(dsn: str) -> Iterator[MemStateStore]:
    with MemoryStore(dsn, max_size=2) as mem:
        store = MemStateStore(mem)
        store.put(("docs",), "a", {"n": 1, "text": "one"})
        store.put(("docs",), "b", {"n": 2, "text": "two"})
        yield store


def test_lg_search_takes_up_to_the_bound_of_conditions(store: MemStateStore, dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(SEARCH, ["{}", json.dumps(_ne(MAX_FILTER_CONDITIONS))]).fetchone()
    assert rows == (2,)


@pytest.mark.parametrize("n", [MAX_FILTER_CONDITIONS + 1, 40_000])
def test_lg_search_refuses_more_conditions_with_msv01(
    store: MemStateStore, dsn: str, n: int
) -> None:
    with psycopg.connect(dsn) as conn, pytest.raises(psycopg.Error) as caught:
        conn.execute(SEARCH, ["{}", json.dumps(_ne(n))])
    assert caught.value.sqlstate == "MSV01"
    assert f"at most {MAX_FILTER_CONDITIONS} conditions, not {n}" in str(caught.value)


def test_lg_search_refuses_a_huge_argument_with_msv01(store: MemStateStore, dsn: str) -> None:
    big = "x" * (MAX_FILTER_BYTES + 1)
    for contains, conditions in [
        (json.dumps({"value": {"text": big}}), "[]"),
        ("{}", json.dumps([{"path": ["value", "text"], "op": "eq", "value": big}])),
    ]:
        with psycopg.connect(dsn) as conn, pytest.raises(psycopg.Error) as caught:
            conn.execute(SEARCH, [contains, conditions])
        assert caught.value.sqlstate == "MSV01" and "bytes" in str(caught.value)


def test_the_store_refuses_a_filter_past_the_bound(store: MemStateStore) -> None:
    filter = {f"f{i}": {"$ne": i} for i in range(MAX_FILTER_CONDITIONS + 1)}
    with pytest.raises(ValidationFailed, match="at most 64 conditions"):
        store.search(("docs",), filter=filter)
    with pytest.raises(ValidationFailed, match="bytes"):
        store.batch([SearchOp(("docs",), filter={"text": "x" * (MAX_FILTER_BYTES + 1)})])
    # the bound leaves every real filter alone
    assert [i.key for i in store.search(("docs",), filter={"n": {"$gte": 2}})] == ["b"]


def test_every_lg_function_pins_its_search_path(store: MemStateStore, dsn: str) -> None:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT p.proname, p.proconfig FROM pg_proc p "
            "WHERE p.pronamespace = 'memstate'::regnamespace AND p.proname LIKE 'lg\\_%' "
            "ORDER BY 1"
        ).fetchall()
    assert len(rows) >= 10
    unpinned = [
        name for name, config in rows if "search_path=pg_catalog, pg_temp" not in (config or [])
    ]
    assert unpinned == []


PLANT = """
CREATE SCHEMA planted;
CREATE FUNCTION planted.format(text, text[]) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.set_config('planted.ran', 'yes', false);
    RETURN pg_catalog.format($1, $2);
END $$;
CREATE FUNCTION planted.now() RETURNS timestamptz LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_catalog.set_config('planted.ran', 'yes', false);
    RETURN pg_catalog.now();
END $$;
"""


def test_an_overload_planted_on_the_callers_path_never_runs(store: MemStateStore, dsn: str) -> None:
    """`format(text, text[])` is a better match than pg_catalog's variadic format, and a
    path that names pg_catalog after the planted schema prefers `planted.now()`: neither
    may run inside lg_search, lg_get or lg_expired."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(PLANT)
        for path in ("planted, public", "planted, pg_catalog, public"):
            conn.execute(f"SET search_path = {path}")
            conn.execute("SELECT pg_catalog.set_config('planted.ran', 'no', false)")
            found = conn.execute(
                "SELECT count(*) FROM memstate.lg_search('langgraph', 'lg_item', 'docs', "
                "'{}'::jsonb, %s::jsonb, 10, 0, NULL, NULL, true, true)",
                [json.dumps(_ne(3))],
            ).fetchone()
            assert found == (2,)
            conn.execute(
                "SELECT * FROM memstate.lg_get('langgraph', 'lg_item', ARRAY['[\"docs\",\"a\"]'], "
                'ARRAY[\'["docs","a"]\'], true)'
            ).fetchall()
            conn.execute("SELECT * FROM memstate.lg_expired('langgraph', 'lg_item')").fetchall()
            ran = conn.execute("SELECT current_setting('planted.ran')").fetchone()[0]
            assert ran == "no", f"a planted overload ran inside lg_* with search_path {path}"
