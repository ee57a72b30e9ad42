"""LangGraph's `PostgresStore` (langgraph-checkpoint-postgres) with its pgvector index.

Configured as its docs show: cosine distance, HNSW (m=16, ef_construction=64, pgvector's
defaults, as ours), embedding the ``text`` field with our `HashingEmbedder`, so the vectors
are the same as ours. It embeds inside `put` and `search` (compare with our rows that
embed inside too). Its filter is ``value->'field' = '…'::jsonb``, which no index serves.
"""

from __future__ import annotations

from collections.abc import Sequence

from benchmarks.peers import require
from memstate_pg import HashingEmbedder


class LangGraphPeer:
    label = "LangGraph PostgresStore (pgvector HNSW)"

    def __init__(self, dsn: str, *, dim: int = 384, pool_size: int = 4) -> None:
        require("langgraph.store.postgres", "dev")
        import psycopg
        from langgraph.store.postgres import PostgresStore
        from psycopg.rows import dict_row
        from psycopg_pool import ConnectionPool

        emb = HashingEmbedder(dim=dim)
        self.pool = ConnectionPool(
            dsn,
            min_size=1,
            max_size=pool_size,
            open=True,
            kwargs={"autocommit": True, "prepare_threshold": 0, "row_factory": dict_row},
        )
        self.store = PostgresStore(
            self.pool,
            index={
                "dims": dim,
                "embed": emb.embed,
                "fields": ["text"],
                "distance_type": "cosine",
                "ann_index_config": {"kind": "hnsw", "m": 16, "ef_construction": 64},
            },
        )
        self.store.setup()
        self._psycopg = psycopg

    def put(self, ns: str, key: str, value: dict) -> None:
        self.store.put((ns,), key, value)

    def put_many(self, ns: str, items: Sequence[tuple[str, dict]]) -> int:
        from langgraph.store.base import PutOp

        self.store.batch([PutOp((ns,), key, value) for key, value in items])
        return len(items)

    def search(self, ns: str, query: str, k: int = 10, filters: dict | None = None) -> list[str]:
        return [it.key for it in self.store.search((ns,), query=query, limit=k, filter=filters)]

    def close(self) -> None:
        self.pool.close()
