"""Vector-store mirrors fed by the outbox: the contract and its adapters.

``ChromaMirror`` and ``QdrantMirror`` import their client libraries only when used, so
this package imports without chromadb or qdrant-client installed.
"""

from __future__ import annotations

from memstate_pg.mirrors.base import (
    RESERVED_KEYS,
    UNKNOWN_VERSION,
    Mirror,
    MirrorPoint,
    MirrorRecord,
    MirrorTimeout,
    build_payload,
)
from memstate_pg.mirrors.chroma import ChromaMirror
from memstate_pg.mirrors.faults import FlakyMirror
from memstate_pg.mirrors.memory import InMemoryMirror
from memstate_pg.mirrors.qdrant import QdrantMirror

__all__ = [
    "RESERVED_KEYS",
    "UNKNOWN_VERSION",
    "ChromaMirror",
    "FlakyMirror",
    "InMemoryMirror",
    "Mirror",
    "MirrorPoint",
    "MirrorRecord",
    "MirrorTimeout",
    "QdrantMirror",
    "build_payload",
]
