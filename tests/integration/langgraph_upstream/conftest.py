"""LangGraph's own store tests (vendored, see the headers of test_store.py and
test_async_store.py) against MemStateStore / AsyncMemStateStore.

The fixtures are in _memstate.py (imported by the two test modules where upstream defined
theirs). This conftest gives every test a fresh migrated database (``dsn``), upstream's
``fake_embeddings``, and marks what memstate-pg does not do, by design, as skipped with the
reason; known differences are strict xfails with theirs. No test body is edited.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.integration.langgraph_upstream import _memstate
from tests.integration.langgraph_upstream.embed_test_utils import CharacterEmbeddings


@pytest.fixture(autouse=True)
def _memstate_database(dsn: str) -> Iterator[None]:
    _memstate.set_current_dsn(dsn)
    yield
    _memstate.set_current_dsn(None)


@pytest.fixture
def fake_embeddings() -> CharacterEmbeddings:
    return CharacterEmbeddings(dims=500)  # as upstream's conftest.py


COSINE_ONLY = (
    "distance_type {!r}: MemStateStore ranks by cosine similarity only (one HNSW cosine index "
    "per embedding model); l2 / inner_product are refused at construction by design"
)
HALFVEC = (
    "vector_type 'halfvec' at 500 dims: memstate builds a `vector` HNSW index up to 2000 dims "
    "(halfvec only for 2001-4000) and refuses another vector_type at construction by design"
)
INTERNAL = {
    "test_escape_like_literal": "tests PostgresStore's private SQL helper _escape_like_literal",
    "test_namespace_match_pattern": "tests PostgresStore's private helper _namespace_match_pattern",
    "test_nonnull_migrations": "tests PostgresStore.MIGRATIONS (its own SQL migrations)",
    "test_abatch_uses_single_pool_checkout": (
        "monkeypatches PostgresStore's connection helper langgraph.checkpoint.postgres._ainternal"
    ),
}
OWN_TABLE = (
    "backdates rows with SQL on PostgresStore's own `store` table (store._cursor()); "
    "memstate keeps TTL clocks in memstate.lg_ttl"
)
MULTI_VECTOR = (
    "PostgresStore embeds each indexed field as its own vector and scores an item by its best "
    "field; MemStateStore embeds an item's indexed fields as one text (one vector per fact), "
    "so per-field score equalities do not hold"
)
HUGE = {
    "test_large_batches": (
        "6,000 calls (3,000 writes) from 10 threads; every MemStateStore write is a versioned, "
        "undoable commit, so it runs for minutes here (set MEMSTATE_LG_HUGE=1 to run it)"
    ),
    "test_large_batches_async": (
        "60,000 concurrent calls (30,000 writes, each a versioned commit) "
        "(set MEMSTATE_LG_HUGE=1 to run it)"
    ),
}
XFAIL: dict[str, str] = {
    "test_embed_with_path_sync": MULTI_VECTOR,
    "test_embed_with_path_operation_config": MULTI_VECTOR,
    "test_embed_with_path": MULTI_VECTOR,
}


def _params(item: pytest.Item) -> tuple[str | None, str | None]:
    callspec = getattr(item, "callspec", None)
    if callspec is None:
        return None, None
    params = callspec.params
    if "vector_type" in params:
        return params["vector_type"], params["distance_type"]
    for name in ("vector_store",):
        if name in params:
            return params[name][0], params[name][1]
    return None, None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = __name__.rsplit(".", 1)[0]
    for item in items:
        module = getattr(item, "module", None)
        if module is None or not module.__name__.startswith(here):
            continue
        name = item.originalname if hasattr(item, "originalname") else item.name
        if name in INTERNAL:
            item.add_marker(pytest.mark.skip(reason="PostgresStore internal: " + INTERNAL[name]))
            continue
        if name in HUGE and "MEMSTATE_LG_HUGE" not in os.environ:
            item.add_marker(pytest.mark.skip(reason="too slow for make test: " + HUGE[name]))
            continue
        if name.startswith("test_omit_expired"):
            item.add_marker(pytest.mark.skip(reason="PostgresStore internal: " + OWN_TABLE))
            continue
        vector_type, distance_type = _params(item)
        if distance_type is not None and distance_type != "cosine":
            item.add_marker(pytest.mark.skip(reason=COSINE_ONLY.format(distance_type)))
            continue
        if vector_type is not None and vector_type != "vector":
            item.add_marker(pytest.mark.skip(reason=HALFVEC))
            continue
        for key, reason in XFAIL.items():
            if name == key:
                item.add_marker(pytest.mark.xfail(strict=True, reason=reason))
