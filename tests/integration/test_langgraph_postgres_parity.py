"""PostgresStore's options on MemStateStore (issue 13 item 4): pool_config and pipeline in
from_conn_string, index distance_type and ann_index_config honoured or refused with a
clear error, never silently ignored; history shows the user's values."""

from __future__ import annotations

import asyncio
from typing import Any

import psycopg
import pytest

from memstate_pg import HashingEmbedder, MemoryStore, ValidationFailed
from memstate_pg.langgraph import AsyncMemStateStore, MemStateStore

DIMS = 16
_hasher = HashingEmbedder(dim=DIMS)


def embed(texts: list[str]) -> list[list[float]]:
    return _hasher.embed(texts)


def index(**extra: Any) -> dict[str, Any]:
    return {"dims": DIMS, "embed": embed, "fields": ["text"], "model": "parity-16", **extra}


def test_pool_config_sizes_the_pool_and_pipeline_is_accepted(dsn: str) -> None:
    with MemStateStore.from_conn_string(
        dsn, index=index(), pool_config={"min_size": 1, "max_size": 3}, pipeline=True
    ) as store:
        assert (store.memory.pool.min_size, store.memory.pool.max_size) == (1, 3)
        store.put(("p",), "k", {"text": "pooled"})
        assert store.get(("p",), "k").value == {"text": "pooled"}

    async def run() -> None:
        async with AsyncMemStateStore.from_conn_string(
            dsn, index=index(), pool_config={"max_size": 2}
        ) as store:
            assert store.memory.pool.max_size == 2
            assert (await store.aget(("p",), "k")).value == {"text": "pooled"}

    asyncio.run(run())


@pytest.mark.parametrize(
    ("pool_config", "pipeline", "error", "match"),
    [
        ({"kwargs": {"sslmode": "require"}}, False, ValueError, "kwargs"),
        ({"max_connections": 3}, False, ValueError, "unknown pool_config"),
        (None, "yes", TypeError, "pipeline must be a bool"),
    ],
)
def test_pool_options_memstate_cannot_honour_are_refused(
    dsn: str, pool_config: Any, pipeline: Any, error: type[Exception], match: str
) -> None:
    with (
        pytest.raises(error, match=match),
        MemStateStore.from_conn_string(dsn, pool_config=pool_config, pipeline=pipeline),
    ):
        pass


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"distance_type": "l2"}, "distance_type 'l2' is not supported"),
        ({"distance_type": "inner_product"}, "ranks by cosine"),
        ({"ann_index_config": {"kind": "ivfflat", "nlist": 10}}, "kind 'ivfflat'"),
        ({"ann_index_config": {"kind": "flat"}}, "kind 'flat'"),
        ({"ann_index_config": {"kind": "hnsw", "vector_type": "halfvec"}}, "vector_type"),
        ({"ann_index_config": {"kind": "hnsw", "m": 1}}, "m must be"),
        ({"ann_index_config": {"kind": "hnsw", "m": 16, "ef_construction": 8}}, "ef_construction"),
        ({"ann_index_config": {"kind": "hnsw", "nlist": 4}}, "do not apply"),
        ({"distance": "cosine"}, "unknown index config keys"),
    ],
)
def test_index_options_memstate_cannot_honour_are_refused(
    dsn: str, extra: dict[str, Any], match: str
) -> None:
    with MemoryStore(dsn, max_size=1) as mem, pytest.raises(ValueError, match=match):
        MemStateStore(mem, index=index(**extra))


def _reloptions(dsn: str, model: str) -> list[str] | None:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(
            "SELECT c.reloptions FROM memstate.embedding_models m "
            "JOIN pg_class c ON c.relname = m.index_name WHERE m.model = %s",
            [model],
        ).fetchone()
    return row[0] if row else None


def test_ann_index_config_builds_the_models_index_or_refuses_a_different_one(dsn: str) -> None:
    hnsw = {"kind": "hnsw", "vector_type": "vector", "m": 8, "ef_construction": 32}
    with MemoryStore(dsn, max_size=2) as mem:
        store = MemStateStore(mem, index=index(distance_type="cosine", ann_index_config=hnsw))
        store.put(("a",), "k", {"text": "coffee in the morning"})
        assert sorted(_reloptions(dsn, "parity-16")) == ["ef_construction=32", "m=8"]
        assert [i.key for i in store.search(("a",), query="coffee")] == ["k"]

        # the same parameters again: fine; others for the same model: refused, nothing written
        MemStateStore(mem, index=index(ann_index_config=hnsw)).put(("a",), "k2", {"text": "x"})
        other = MemStateStore(mem, index=index(ann_index_config={"kind": "hnsw", "m": 24}))
        with pytest.raises(ValidationFailed, match="was built with"):
            other.put(("a",), "k3", {"text": "y"})
        assert store.get(("a",), "k3") is None
        assert sorted(_reloptions(dsn, "parity-16")) == ["ef_construction=32", "m=8"]


def test_history_shows_the_users_values(dsn: str) -> None:
    with MemoryStore(dsn, max_size=2) as mem:
        store = MemStateStore(mem, index=index(), ttl={"omit_expired": True})
        store.put(("u",), "k", {"text": "first", "n": 1}, ttl=60)
        store.put(("u",), "k", {"text": "second", "n": 2})
        store.delete(("u",), "k")
        history = store.history(("u",), "k")
    assert [(v.op, v.payload) for v in history] == [
        ("put", {"text": "first", "n": 1}),
        ("update", {"text": "second", "n": 2}),
        ("delete", {"text": "second", "n": 2}),
    ]
