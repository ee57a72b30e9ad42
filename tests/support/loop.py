"""One `loop` fixture: an asyncio event loop running in a thread of its own, so a test can
drive async APIs from sync code (`on(loop, coro)`) and share one loop between fixtures."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest

T = TypeVar("T")


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    lp = asyncio.new_event_loop()
    thread = threading.Thread(target=lp.run_forever, daemon=True, name="test-loop")
    thread.start()
    yield lp
    lp.call_soon_threadsafe(lp.stop)
    thread.join(5)
    lp.close()


def on(lp: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
    """Run `coro` on the loop thread and wait for its result."""
    return asyncio.run_coroutine_threadsafe(coro, lp).result(timeout)
