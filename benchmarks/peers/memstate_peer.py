"""MemState 0.5.1 (PyPI `memstate`), the project this one is measured against.

Two configurations, as its README shows them: SQLite storage + Chroma hook, and Postgres
storage (SQLAlchemy over psycopg 3, on the same server as everything else) + Chroma hook.
The Chroma hook embeds each committed fact with our `HashingEmbedder` (an explicit
embedding function), so both sides index the same vectors. Chroma is a persistent local
client in a temp dir (durable, as Postgres is).

A MemState commit is: load by id (or a singleton query), save (one transaction), append a
log row (another transaction), then the hook's Chroma upsert, which embeds. There is no
batch API. Search is a Chroma query (embedding the question) plus one storage load per hit.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence

from benchmarks.peers import PeerUnavailable, require
from benchmarks.peers.vectorstores import chroma_client, hashing_embedding_function


class MemStatePeer:
    """One MemState 0.5.1 store with a Chroma hook; `backend` is "sqlite" or "postgres"."""

    def __init__(
        self,
        backend: str,
        *,
        dsn: str | None = None,
        dim: int = 384,
        collection: str = "memstate_bench",
    ) -> None:
        ms = require("memstate")
        if ms.__version__ != "0.5.1":
            raise PeerUnavailable(f"memstate {ms.__version__} installed, the benchmark pins 0.5.1")
        from memstate.integrations.chroma import ChromaSyncHook

        self.tmp = tempfile.mkdtemp(prefix="bench-memstate-")
        if backend == "sqlite":
            storage = ms.SQLiteStorage(os.path.join(self.tmp, "memory.db"))
        elif backend == "postgres":
            require("sqlalchemy")
            import psycopg
            from memstate.backends.postgres import PostgresStorage
            from sqlalchemy import create_engine

            engine = create_engine(
                "postgresql+psycopg://",
                creator=lambda: psycopg.connect(dsn),
                pool_size=4,
                max_overflow=4,
            )
            storage = PostgresStorage(engine)
        else:
            raise ValueError(backend)
        self.backend = backend
        self.client = chroma_client(os.path.join(self.tmp, "chroma"))
        self.hook = ChromaSyncHook(
            self.client,
            collection,
            embedding_fn=hashing_embedding_function(dim),
            text_field="text",
            metadata_fields=["bucket"],
        )
        self.store = ms.MemoryStore(storage, hooks=[self.hook])
        self._Fact = ms.Fact

    @property
    def label(self) -> str:
        return (
            f"MemState 0.5.1 {'SQLite' if self.backend == 'sqlite' else 'Postgres'} + Chroma hook"
        )

    def commit(self, payload: dict) -> str:
        return self.store.commit(self._Fact(type="note", payload=payload))

    def load(
        self, payloads: Sequence[dict], ids: Sequence[str] | None = None, batch: int = 1000
    ) -> None:
        """Bulk-fill for search benchmarks: the state `commit` would leave (storage rows and
        Chroma points), written in batches instead of one commit at a time."""
        for start in range(0, len(payloads), batch):
            chunk = [
                self._Fact(type="note", payload=p, **({"id": ids[start + j]} if ids else {}))
                for j, p in enumerate(payloads[start : start + batch])
            ]
            for f in chunk:
                self.store.storage.save(f.model_dump(mode="json"))
            self.hook.collection.upsert(
                ids=[f.id for f in chunk],
                documents=[f.payload["text"] for f in chunk],
                metadatas=[{"type": "note", "bucket": f.payload["bucket"]} for f in chunk],
            )

    def search(self, query: str, k: int = 10, filters: dict | None = None) -> list[str]:
        return [h.fact.id for h in self.store.search(query, limit=k, filters=filters)]

    def close(self) -> None:
        import shutil

        engine = getattr(self.store.storage, "_engine", None)
        if engine is not None:
            engine.dispose()
        conn = getattr(self.store.storage, "_conn", None)
        if conn is not None:
            conn.close()
        shutil.rmtree(self.tmp, ignore_errors=True)
