"""Adapt any function ``texts -> vectors`` (sync or async) to the Embedder contract.

This is the escape hatch for providers memstate-pg has no class for: wrap the
provider's client call in a function and declare its ``dim`` and ``model``. The
function's output is checked (count, dimension, finite numbers) on every call,
because a misbehaving user function should fail loudly here and not as a
pgvector error deep inside a commit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from memstate_pg.embedders.base import (
    coerce_texts,
    coerce_vectors,
    validate_dim,
    validate_model_name,
)
from memstate_pg.errors import ValidationFailed

__all__ = ["CallableEmbedder"]

EmbedFn = Callable[[list[str]], Any]
"""``fn(texts) -> vectors`` or ``async fn(texts) -> vectors``; vectors may be numpy arrays."""


class CallableEmbedder:
    """Wrap ``fn(list[str]) -> list[list[float]]`` (or a coroutine function) as an embedder.

    ``model`` must name the vector space ``fn`` produces: the store only compares
    vectors with equal ``model`` strings.
    """

    def __init__(self, fn: EmbedFn, *, dim: int, model: str):
        if not callable(fn):
            raise ValidationFailed(f"fn must be callable, got {type(fn).__name__}")
        self.fn = fn
        self.dim = validate_dim(dim)
        self.model = validate_model_name(model)
        self._is_async = _is_async_callable(fn)
        self._name = getattr(fn, "__qualname__", repr(fn))
        self._source = f"embedding function {self._name}"

    def __repr__(self) -> str:
        return f"CallableEmbedder({self._name}, dim={self.dim}, model={self.model!r})"

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Call ``fn`` once with the whole batch; an async ``fn`` is driven to completion."""
        batch = coerce_texts(texts)
        if not batch:
            return []
        if self._is_async:
            result = _run_blocking(lambda: self.fn(batch))
        else:
            result = self.fn(batch)
            if inspect.isawaitable(result):  # e.g. a lambda returning a coroutine
                result = _run_blocking(lambda: result)
        return coerce_vectors(result, dim=self.dim, count=len(batch), source=self._source)

    async def aembed(self, texts: Sequence[str]) -> list[list[float]]:
        """Await an async ``fn`` directly; run a sync one in a worker thread."""
        batch = coerce_texts(texts)
        if not batch:
            return []
        if self._is_async:
            result = await self.fn(batch)
        else:
            result = await asyncio.to_thread(self.fn, batch)
            if inspect.isawaitable(result):
                result = await result
        return coerce_vectors(result, dim=self.dim, count=len(batch), source=self._source)


def _is_async_callable(fn: object) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - async __call__ on an object
    )


def _run_blocking(make: Callable[[], Awaitable[Any]]) -> Any:
    """Run an awaitable from sync code, even if this thread already runs an event loop.

    ``asyncio.run`` refuses to nest, so inside a running loop the awaitable gets its
    own loop in a helper thread (blocking the caller, as a sync ``embed`` must).
    """

    async def main() -> Any:
        return await make()

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(asyncio.run, main()).result()
