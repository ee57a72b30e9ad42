"""Raw Chroma and Qdrant clients: a Chroma embedding function that uses our
`HashingEmbedder` (Chroma's default model would download weights), and the raw mirror
write path (the baseline for sync throughput)."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.peers import require
from memstate_pg import HashingEmbedder


def hashing_embedding_function(dim: int = 384):
    """A chromadb EmbeddingFunction that embeds with HashingEmbedder (deterministic, offline)."""
    chromadb = require("chromadb", "chroma")

    class HashingEF(chromadb.EmbeddingFunction):
        def __init__(self, dim: int = 384) -> None:
            self.dim = dim
            self._emb = HashingEmbedder(dim=dim)

        def __call__(self, input):  # noqa: A002 - chroma's protocol names it `input`
            return [np.asarray(v, dtype=np.float32) for v in self._emb.embed(list(input))]

        @staticmethod
        def name() -> str:
            return "memstate-hashing"

        def get_config(self) -> dict[str, Any]:
            return {"dim": self.dim}

        @staticmethod
        def build_from_config(config: dict[str, Any]):
            return HashingEF(config.get("dim", 384))

        def default_space(self):
            return "cosine"

        def supported_spaces(self):
            return ["cosine", "l2", "ip"]

    return HashingEF(dim)


def chroma_client(path: str | None = None):
    """A persistent local Chroma client (durable, like Postgres) in `path` or a temp dir."""
    chromadb = require("chromadb", "chroma")
    from chromadb.config import Settings

    if path is None:
        path = tempfile.mkdtemp(prefix="bench-chroma-")
        atexit.register(shutil.rmtree, path, True)
    return chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))


def qdrant_client():
    """Qdrant's local in-process mode (no server runs here): numpy brute force, so use it
    for write throughput only, never for search latency."""
    qc = require("qdrant_client", "qdrant")
    return qc.QdrantClient(location=":memory:")


class RawChroma:
    """Upserts straight into a Chroma collection (cosine space)."""

    label = "raw Chroma client (upsert)"

    def __init__(self, client, collection: str, dim: int) -> None:
        self.client = client
        self.col = client.get_or_create_collection(
            collection, embedding_function=None, configuration={"hnsw": {"space": "cosine"}}
        )

    def upsert(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        docs: Sequence[str],
        metas: Sequence[dict[str, Any]],
    ) -> None:
        self.col.upsert(
            ids=list(ids), embeddings=vectors, documents=list(docs), metadatas=list(metas)
        )

    def query(self, vector: np.ndarray, k: int, where: dict | None = None) -> list[str]:
        res = self.col.query(
            query_embeddings=[vector], n_results=k, where=where, include=["distances"]
        )
        return res["ids"][0]


class RawQdrant:
    """Upserts straight into a Qdrant collection (local mode)."""

    label = "raw Qdrant client (local, upsert)"

    def __init__(self, client, collection: str, dim: int) -> None:
        from qdrant_client import models

        self.client = client
        self.collection = collection
        self.models = models
        if not client.collection_exists(collection):
            client.create_collection(
                collection,
                vectors_config=models.VectorParams(size=dim, distance=models.Distance.COSINE),
            )

    def upsert(
        self,
        ids: Sequence[str],
        vectors: np.ndarray,
        docs: Sequence[str],
        metas: Sequence[dict[str, Any]],
    ) -> None:
        points = [
            self.models.PointStruct(id=i, vector=v.tolist(), payload={**m, "content": d})
            for i, v, d, m in zip(ids, vectors, docs, metas, strict=True)
        ]
        self.client.upsert(self.collection, points=points, wait=True)
