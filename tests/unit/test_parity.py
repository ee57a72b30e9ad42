"""MemoryStore and AsyncMemoryStore expose the same methods with the same signatures
(the async ones as coroutines), and so do their transactions."""

from __future__ import annotations

import inspect
from typing import Any

import pytest

from memstate_pg import AsyncMemoryStore, AsyncTransaction, MemoryStore, Transaction

# Lifecycle that differs by nature: opening a pool is a coroutine only in asyncio.
ASYNC_ONLY = {"open", "open_pool"}
SYNC_ONLY: set[str] = set()
NOT_COROUTINES = {"mirrors", "pool", "transaction"}  # plain methods/properties/context managers


def _public(cls: type) -> dict[str, Any]:
    return {
        name: member
        for name, member in inspect.getmembers(cls)
        if not name.startswith("_") or name in ("__enter__", "__exit__")
    }


def _shape(fn: Any) -> list[tuple[str, Any, Any]]:
    sig = inspect.signature(fn)
    return [(p.name, p.kind, p.default) for p in sig.parameters.values()]


@pytest.mark.parametrize(
    ("sync_cls", "async_cls"), [(MemoryStore, AsyncMemoryStore), (Transaction, AsyncTransaction)]
)
def test_same_methods_same_signatures(sync_cls: type, async_cls: type) -> None:
    sync = {n: m for n, m in _public(sync_cls).items() if n not in ("__enter__", "__exit__")}
    aio = _public(async_cls)
    missing = set(sync) - set(aio) - SYNC_ONLY
    extra = set(aio) - set(sync) - ASYNC_ONLY
    assert not missing, f"{async_cls.__name__} lacks {sorted(missing)}"
    assert not extra, f"{async_cls.__name__} has extra {sorted(extra)}"
    for name, member in sync.items():
        if not callable(member) or isinstance(member, property) or inspect.isclass(member):
            continue
        other = aio[name]
        assert _shape(member) == _shape(other), name
        if name not in NOT_COROUTINES and not name.startswith("__"):
            assert inspect.iscoroutinefunction(other) or inspect.isasyncgenfunction(other), (
                f"{async_cls.__name__}.{name} should be a coroutine"
            )


def test_parity_test_can_fail() -> None:
    """The comparison sees a difference in a parameter."""

    class A:
        def f(self, x: int, *, y: int = 1) -> None: ...

    class B:
        async def f(self, x: int, *, y: int = 2) -> None: ...

    assert _shape(A.f) != _shape(B.f)
