"""A dict-backed mirror: fast, dependency-free, for tests of the sync worker.

It follows the same contract as the real adapters (idempotent writes, native batch
limit, paged scan), and records the size of every native write in
:attr:`InMemoryMirror.batch_sizes` so tests can check how the worker batches.
"""

from __future__ import annotations

import copy
import math
import threading
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from memstate_pg.mirrors.base import (
    Mirror,
    MirrorHit,
    MirrorPoint,
    MirrorRecord,
    build_payload,
    check_query,
    chunked,
    payload_filter,
    tag_of,
)

__all__ = ["InMemoryMirror"]


class InMemoryMirror(Mirror):
    """Points kept in a dict, guarded by a lock (the worker may write from threads)."""

    kind: ClassVar[str] = "memory"
    can_query: ClassVar[bool] = True

    def __init__(self, *, max_batch_size: int = 1000, name: str = "memory") -> None:
        if max_batch_size < 1:
            raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
        self.max_batch_size = max_batch_size
        self.name = name
        #: Size of every native write call (upsert and delete), in order.
        self.batch_sizes: list[int] = []
        self._points: dict[str, MirrorPoint] = {}
        self._lock = threading.Lock()

    def _upsert_batch(self, records: Sequence[MirrorRecord]) -> None:
        self._check_batch(len(records))
        points = {
            r.fact_id: MirrorPoint(
                fact_id=r.fact_id,
                version=r.version,
                embedding=[float(x) for x in r.embedding],
                metadata=copy.deepcopy(build_payload(r)),
            )
            for r in records
        }
        with self._lock:
            self.batch_sizes.append(len(records))
            self._points.update(points)

    def _delete_batch(self, fact_ids: Sequence[str]) -> None:
        self._check_batch(len(fact_ids))
        with self._lock:
            self.batch_sizes.append(len(fact_ids))
            for fid in fact_ids:
                self._points.pop(fid, None)

    def _check_batch(self, size: int) -> None:
        # Mimic a real store that rejects oversize calls, so a bypassed split shows up.
        if size > self.max_batch_size:
            raise ValueError(f"native batch of {size} exceeds max_batch_size {self.max_batch_size}")

    def get(self, fact_ids: Sequence[str], *, with_vectors: bool = False) -> dict[str, MirrorPoint]:
        with self._lock:
            found = [self._points[fid] for fid in dict.fromkeys(fact_ids) if fid in self._points]
        return {
            p.fact_id: MirrorPoint(
                fact_id=p.fact_id,
                version=p.version,
                embedding=list(p.embedding) if with_vectors and p.embedding is not None else None,
                metadata=copy.deepcopy(p.metadata),
            )
            for p in found
        }

    def scan(self, page_size: int = 1000) -> Iterator[list[tuple[str, int]]]:
        for page in self.scan_tagged(page_size):
            yield [(fid, version) for fid, version, _ in page]

    def scan_tagged(self, page_size: int = 1000) -> Iterator[list[tuple[str, int, str | None]]]:
        # Ids are snapshotted up front (cheap: strings only); versions are read per page,
        # so points deleted meanwhile are skipped, like a cursor over a live store.
        with self._lock:
            ids = sorted(self._points)
        for page_ids in chunked(ids, page_size):
            with self._lock:
                points = [self._points[fid] for fid in page_ids if fid in self._points]
            page = [(p.fact_id, p.version, tag_of(p.metadata)) for p in points]
            if page:
                yield page

    def query(
        self,
        vector: Sequence[float],
        k: int,
        *,
        namespace: str | None = None,
        type: str | None = None,
        embedding_model: str | None = None,
    ) -> list[MirrorHit]:
        """Exact cosine similarity over every matching point (a scan: tests and demos)."""
        q = check_query(vector, k)
        q_norm = math.sqrt(sum(x * x for x in q)) or 1.0
        wanted = payload_filter(namespace, type, embedding_model).items()
        with self._lock:
            points = list(self._points.values())
        scored: list[MirrorHit] = []
        for p in points:
            if p.embedding is None or len(p.embedding) != len(q):
                continue
            if any(p.metadata.get(key) != value for key, value in wanted):
                continue
            norm = math.sqrt(sum(x * x for x in p.embedding)) or 1.0
            dot = sum(a * b for a, b in zip(q, p.embedding, strict=True))
            scored.append(MirrorHit(p.fact_id, p.version, dot / (q_norm * norm)))
        scored.sort(key=lambda h: (-h.score, h.fact_id))
        return scored[:k]

    def count(self) -> int:
        with self._lock:
            return len(self._points)

    def describe(self) -> dict[str, Any]:
        return {"kind": self.kind, "name": self.name, "max_batch_size": self.max_batch_size}

    def reset(self) -> None:
        with self._lock:
            self._points.clear()
