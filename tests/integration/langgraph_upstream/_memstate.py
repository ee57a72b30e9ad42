"""The fixtures of LangGraph's store tests, swapped to memstate-pg's classes.

Upstream (libs/checkpoint-postgres/tests/test_store.py and test_async_store.py, see the
headers there) builds each PostgresStore / AsyncPostgresStore on a new database of a server
on localhost:5441. Here each store is a MemStateStore / AsyncMemStateStore built the same
way (``from_conn_string`` with the same ``ttl``, ``pipeline``, ``pool_config`` and ``index``
configs and parametrizations) on the fresh migrated database of tests/support/database.py's
``dsn`` fixture, which conftest.py makes current for every test of this directory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import pytest
import pytest_asyncio

from memstate_pg.langgraph import AsyncMemStateStore, MemStateStore
from tests.integration.langgraph_upstream.embed_test_utils import CharacterEmbeddings

__all__ = [
    "VECTOR_TYPES",
    "CharacterEmbeddings",
    "_acreate_pool_store",
    "_acreate_vector_store",
    "_create_vector_store",
    "astore",
    "avector_store",
    "store",
    "vector_store",
]

VECTOR_TYPES = ["vector", "halfvec"]  # as upstream's conftest.py
TTL_SECONDS = 6  # as upstream's test modules
TTL_MINUTES = TTL_SECONDS / 60
TTL_CONFIG = {
    "default_ttl": TTL_MINUTES,
    "refresh_on_read": True,
    "sweep_interval_minutes": TTL_MINUTES / 2,
}

_current: dict[str, str] = {}


def set_current_dsn(dsn: str | None) -> None:
    """The database the stores of the running test are built on (conftest.py sets it)."""
    if dsn is None:
        _current.pop("dsn", None)
    else:
        _current["dsn"] = dsn


def _dsn() -> str:
    return _current["dsn"]


def _store_options(param: str) -> dict[str, Any]:
    if param == "pipe":
        return {"pipeline": True}
    if param == "pool":
        return {"pool_config": {"min_size": 1, "max_size": 10}}
    return {}


def _index_config(
    vector_type: str, distance_type: str, fake_embeddings: Any, text_fields: list[str] | None
) -> dict[str, Any]:
    return {  # upstream's index config, verbatim
        "dims": fake_embeddings.dims,
        "embed": fake_embeddings,
        "ann_index_config": {"vector_type": vector_type},
        "distance_type": distance_type,
        "fields": text_fields,
    }


# --- sync (test_store.py) ----------------------------------------------------------------


@pytest.fixture(scope="function", params=["default", "pipe", "pool"])
def store(request: pytest.FixtureRequest) -> Iterator[MemStateStore]:
    with MemStateStore.from_conn_string(_dsn(), ttl=TTL_CONFIG) as s:
        s.setup()
    with MemStateStore.from_conn_string(
        _dsn(), ttl=TTL_CONFIG, **_store_options(request.param)
    ) as s:
        s.start_ttl_sweeper()
        yield s
        s.stop_ttl_sweeper()


@contextmanager
def _create_vector_store(
    vector_type: str,
    distance_type: str,
    fake_embeddings: Any,
    text_fields: list[str] | None = None,
    enable_ttl: bool = True,
) -> Iterator[MemStateStore]:
    with MemStateStore.from_conn_string(
        _dsn(),
        index=_index_config(vector_type, distance_type, fake_embeddings, text_fields),
        ttl={"default_ttl": 2, "refresh_on_read": True} if enable_ttl else None,
    ) as s:
        s.setup()
        s.setup()  # upstream: "Will fail if migrations aren't idempotent"
        yield s


_vector_params = [  # upstream's, verbatim
    (vector_type, distance_type, True)
    for vector_type in VECTOR_TYPES
    for distance_type in (
        ["hamming"] if vector_type == "bit" else ["l2", "inner_product", "cosine"]
    )
]
_vector_params += [(*_vector_params[-1][:2], False)]


@pytest.fixture(scope="function", params=_vector_params, ids=lambda p: f"{p[0]}_{p[1]}")
def vector_store(
    request: pytest.FixtureRequest, fake_embeddings: CharacterEmbeddings
) -> Iterator[MemStateStore]:
    vector_type, distance_type, enable_ttl = request.param
    with _create_vector_store(
        vector_type, distance_type, fake_embeddings, enable_ttl=enable_ttl
    ) as s:
        yield s


# --- async (test_async_store.py) ---------------------------------------------------------


@pytest_asyncio.fixture(scope="function", params=["default", "pipe", "pool"])
async def astore(request: pytest.FixtureRequest) -> AsyncIterator[AsyncMemStateStore]:
    async with AsyncMemStateStore.from_conn_string(_dsn(), ttl=TTL_CONFIG) as s:
        await s.setup()
        await s.setup()  # upstream: "Will fail if migrations aren't idempotent"
    async with AsyncMemStateStore.from_conn_string(
        _dsn(), ttl=TTL_CONFIG, **_store_options(request.param)
    ) as s:
        await s.start_ttl_sweeper()
        yield s
        await s.stop_ttl_sweeper()


@asynccontextmanager
async def _acreate_pool_store() -> AsyncIterator[AsyncMemStateStore]:
    async with AsyncMemStateStore.from_conn_string(
        _dsn(), pool_config={"min_size": 1, "max_size": 1}
    ) as s:
        await s.setup()
        yield s


@asynccontextmanager
async def _acreate_vector_store(
    vector_type: str,
    distance_type: str,
    fake_embeddings: Any,
    text_fields: list[str] | None = None,
) -> AsyncIterator[AsyncMemStateStore]:
    async with AsyncMemStateStore.from_conn_string(
        _dsn(), index=_index_config(vector_type, distance_type, fake_embeddings, text_fields)
    ) as s:
        await s.setup()
        yield s


@pytest_asyncio.fixture(
    scope="function",
    params=[  # upstream's, verbatim
        (vector_type, distance_type)
        for vector_type in VECTOR_TYPES
        for distance_type in (
            ["hamming"] if vector_type == "bit" else ["l2", "inner_product", "cosine"]
        )
    ],
    ids=lambda p: f"{p[0]}_{p[1]}",
)
async def avector_store(
    request: pytest.FixtureRequest, fake_embeddings: CharacterEmbeddings
) -> AsyncIterator[AsyncMemStateStore]:
    vector_type, distance_type = request.param
    async with _acreate_vector_store(vector_type, distance_type, fake_embeddings) as s:
        yield s
