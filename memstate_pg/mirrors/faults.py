"""FlakyMirror: inject the failures a real vector store produces, deterministically.

The outbox's promise is "every committed change reaches every mirror, exactly once in
effect, whatever the mirror does". The failures that break naive sync code are:

* failed before write - the call errors and nothing landed (easy: retry);
* failed after write  - the write landed but the caller saw an error (the retry must
  be idempotent, and a delete/upsert reordering must not resurrect old state);
* timeout             - the caller cannot know whether the write landed; here it lands
  with probability 1/2, drawn from the same seeded generator;
* down                - every call fails until the mirror comes back (a long outage).

Each write call draws one random number, so the three probabilities are exclusive and
must sum to at most 1. Reads are only faulted while ``down``, because reconciliation
must be able to observe the truth to converge.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from memstate_pg.errors import MirrorError
from memstate_pg.mirrors.base import Mirror, MirrorHit, MirrorPoint, MirrorRecord, MirrorTimeout

__all__ = ["FlakyMirror"]

_FAULT_KINDS = ("fail_before", "fail_after", "timeout", "timeout_wrote", "down")


class FlakyMirror(Mirror):
    """Wraps a mirror and injects failures into it; see the module docstring."""

    def __init__(
        self,
        inner: Mirror,
        *,
        fail_before: float = 0.0,
        fail_after: float = 0.0,
        timeout: float = 0.0,
        timeout_seconds: float = 0.05,
        seed: int | None = None,
    ) -> None:
        for name, p in (
            ("fail_before", fail_before),
            ("fail_after", fail_after),
            ("timeout", timeout),
        ):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"{name} must be a probability in [0, 1], got {p}")
        if fail_before + fail_after + timeout > 1.0 + 1e-9:
            raise ValueError("fail_before + fail_after + timeout must not exceed 1")
        self.inner = inner
        self.fail_before = fail_before
        self.fail_after = fail_after
        self.timeout = timeout
        self.timeout_seconds = timeout_seconds
        self.down = False
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._counters: dict[str, int] = dict.fromkeys(("calls", *_FAULT_KINDS), 0)

    # -- delegation -----------------------------------------------------------------

    @property
    def kind(self) -> str:  # type: ignore[override]
        return self.inner.kind

    @property
    def max_batch_size(self) -> int:  # type: ignore[override]
        return self.inner.max_batch_size

    @property
    def can_query(self) -> bool:  # type: ignore[override]
        return self.inner.can_query

    @property
    def faults(self) -> dict[str, int]:
        """Counters: write ``calls`` seen and faults injected, by kind (a copy)."""
        with self._lock:
            return dict(self._counters)

    def set_down(self, down: bool = True) -> None:
        """Start (``True``) or end (``False``) an outage."""
        self.down = down

    @contextmanager
    def outage(self) -> Iterator[None]:
        """``with flaky.outage(): ...`` - the mirror is down inside the block."""
        self.down = True
        try:
            yield
        finally:
            self.down = False

    def _count(self, key: str) -> None:
        with self._lock:
            self._counters[key] += 1

    def _check_down(self) -> None:
        if self.down:
            self._count("down")
            raise MirrorError("injected: mirror down")

    # -- faulted writes -------------------------------------------------------------

    def _faulted(self, write: Callable[[], None]) -> None:
        self._check_down()
        with self._lock:
            self._counters["calls"] += 1
            roll = self._rng.random()
            coin = self._rng.random()
        if roll < self.fail_before:
            self._count("fail_before")
            raise MirrorError("injected: failed before write")
        roll -= self.fail_before
        if roll < self.timeout:
            self._count("timeout")
            if coin < 0.5:
                self._count("timeout_wrote")
                write()
            time.sleep(self.timeout_seconds)
            raise MirrorTimeout(f"injected: timed out after {self.timeout_seconds}s")
        roll -= self.timeout
        write()
        if roll < self.fail_after:
            self._count("fail_after")
            raise MirrorError("injected: failed after write")

    def upsert(self, records: Sequence[MirrorRecord]) -> None:
        self._faulted(lambda: self.inner.upsert(records))

    def delete(self, fact_ids: Sequence[str]) -> None:
        self._faulted(lambda: self.inner.delete(fact_ids))

    def _upsert_batch(self, records: Sequence[MirrorRecord]) -> None:
        self.upsert(records)

    def _delete_batch(self, fact_ids: Sequence[str]) -> None:
        self.delete(fact_ids)

    # -- reads (faulted only while down) --------------------------------------------

    def get(self, fact_ids: Sequence[str], *, with_vectors: bool = False) -> dict[str, MirrorPoint]:
        self._check_down()
        return self.inner.get(fact_ids, with_vectors=with_vectors)

    def query(self, vector: Sequence[float], k: int, **filters: Any) -> list[MirrorHit]:
        self._check_down()
        return self.inner.query(vector, k, **filters)

    def scan(self, page_size: int = 1000) -> Iterator[list[tuple[str, int]]]:
        self._check_down()  # fail at call time, not at first next()
        return self._scan(page_size)

    def _scan(self, page_size: int) -> Iterator[list[tuple[str, int]]]:
        for page in self.inner.scan(page_size):
            self._check_down()  # an outage that starts mid-scan breaks the scan
            yield page

    def scan_tagged(self, page_size: int = 1000) -> Iterator[list[tuple[str, int, str | None]]]:
        self._check_down()
        return self._scan_tagged(page_size)

    def _scan_tagged(self, page_size: int) -> Iterator[list[tuple[str, int, str | None]]]:
        for page in self.inner.scan_tagged(page_size):
            self._check_down()
            yield page

    def store_key(self) -> str | None:
        return self.inner.store_key()

    def count(self) -> int:
        self._check_down()
        return self.inner.count()

    def reset(self) -> None:
        self._check_down()
        self.inner.reset()

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def close(self) -> None:
        self.inner.close()

    def __repr__(self) -> str:
        return (
            f"<FlakyMirror fail_before={self.fail_before} fail_after={self.fail_after} "
            f"timeout={self.timeout} down={self.down} inner={self.inner!r}>"
        )
