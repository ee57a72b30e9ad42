"""LangChain: `MemStateVectorStore`, a `langchain_core.vectorstores.VectorStore` whose
documents are memstate facts, so every add, update and delete is versioned, in history and
undoable (extra `langchain`).

    from memstate_pg.langchain import MemStateVectorStore

    vs = MemStateVectorStore(mem, embeddings, namespace="kb")   # mem: MemoryStore
    vs.add_documents(docs, ids=["a", "b"])                      # one commit
    vs.similarity_search("question", k=4, filter={"source": "faq"})
    retriever = vs.as_retriever(search_type="mmr")
    mem.rollback(1, namespace="kb")                             # undo the last add

A document is a fact of type `lc_document` (`doc_type=`) with payload
`{"page_content", "metadata", "id"}`; its content (what is embedded) is the page content.
LangChain's string ids become fact ids: a UUID as is, any other string by uuid5 of
(namespace, type, id), so the mapping is deterministic; the original id stays in the
payload and is the `Document.id` handed back. Adding a document under an id that exists
updates that fact (a new version).

Embeddings: the LangChain `Embeddings` object computes every vector (`embed_documents` for
documents, `embed_query` for questions); the store sees it through `LangChainEmbedder`, a
memstate Embedder whose `model` name (default `langchain:<class>:<dim>`) keeps these vectors
apart from any other model's.

Sync methods run on a `MemoryStore`. Async methods run natively on an `AsyncMemoryStore`
when the vector store was built on one (then the sync methods are refused), else LangChain's
default applies: the sync method in a worker thread (`run_in_executor`), which is what a
sync pool can do without blocking the event loop.

Filters: a dict of metadata key -> value (equality; dotted keys reach into nested metadata),
run in the same SQL as the vector search (GIN-indexed containment).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from pydantic import BaseModel

from ._core.protocol import Exec, Op
from .aio import AsyncMemoryStore
from .errors import ValidationFailed
from .models import Fact, Hit
from .store import MemoryStore

DOC_TYPE = "lc_document"
_ID_SPACE = uuid.UUID("6f1b8b1e-4a52-5c1e-9a55-6d656d737461")  # uuid5 namespace of doc ids
_VECTORS = (
    "SELECT fact_id, embedding::text AS embedding FROM memstate.facts "
    "WHERE fact_id = ANY(%(ids)s::uuid[]) AND namespace = %(namespace)s"
)

__all__ = ["DOC_TYPE", "LangChainDocument", "LangChainEmbedder", "MemStateVectorStore"]


class LangChainDocument(BaseModel):
    """The payload of a document fact; register it for a store with strict_types:
    `mem.register_schema("lc_document", LangChainDocument, text_field="page_content")`."""

    page_content: str
    metadata: dict[str, Any] = {}
    id: str | None = None


class LangChainEmbedder:
    """A LangChain `Embeddings` as a memstate Embedder."""

    def __init__(self, embeddings: Embeddings, *, model: str | None = None, dim: int | None = None):
        self.embeddings = embeddings
        if dim is None:  # one probe call tells the dimension
            dim = len(embeddings.embed_query("dimension probe"))
        self.dim = dim
        self.model = model or f"langchain:{type(embeddings).__name__}:{dim}"[:100]

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [list(map(float, v)) for v in self.embeddings.embed_documents(list(texts))]

    async def aembed(self, texts: Sequence[str]) -> list[list[float]]:
        vectors = await self.embeddings.aembed_documents(list(texts))
        return [list(map(float, v)) for v in vectors]


def _op_vectors(ids: list[str], namespace: str) -> Op[dict[str, list[float]]]:
    rows = yield Exec(_VECTORS, {"ids": ids, "namespace": namespace}, "all")
    return {str(r["fact_id"]): json.loads(r["embedding"]) for r in rows}


class MemStateVectorStore(VectorStore):
    """A LangChain vector store on memstate-pg: documents are versioned facts of one
    namespace. `store` is a MemoryStore (sync; async methods in a worker thread) or an
    AsyncMemoryStore (async only, native). The store's connection pool is shared, not
    copied; the vector store never closes it."""

    def __init__(
        self,
        store: MemoryStore | AsyncMemoryStore,
        embedding: Embeddings,
        *,
        namespace: str | None = None,
        doc_type: str = DOC_TYPE,
        embedding_model: str | None = None,
        dim: int | None = None,
        actor: str = "langchain",
    ) -> None:
        namespace = namespace if namespace is not None else (store.namespace or "default")
        store._ns(namespace)  # a store bound to another namespace refuses it here
        self.embedding = embedding
        self.embedder = LangChainEmbedder(embedding, model=embedding_model, dim=dim)
        self.namespace = namespace
        self.doc_type = doc_type
        self.actor = actor
        options: dict[str, Any] = {
            "embedder": self.embedder,
            "namespace": namespace,
            "strict_types": store.strict_types,
            "max_payload_bytes": store.max_payload_bytes,
            "hnsw_m": store.hnsw_m,
            "hnsw_ef_construction": store.hnsw_ef_construction,
        }
        # a view of the caller's pool with this embedder, bound to the namespace
        self._sync: MemoryStore | None = None
        self._async: AsyncMemoryStore | None = None
        if isinstance(store, AsyncMemoryStore):
            self._async = AsyncMemoryStore(store.pool, **options)
            self._async._health = store._health  # the same pool: the same view of its server
        elif isinstance(store, MemoryStore):
            self._sync = MemoryStore(store.pool, **options)
            self._sync._health = store._health
        else:
            raise TypeError("MemStateVectorStore takes a MemoryStore or an AsyncMemoryStore")

    # -- construction --------------------------------------------------------------------

    @classmethod
    def from_texts(
        cls,
        texts: list[str],
        embedding: Embeddings,
        metadatas: list[dict[Any, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        store: MemoryStore | None = None,
        dsn: str | None = None,
        **kwargs: Any,
    ) -> MemStateVectorStore:
        """A vector store on `store` (or a new MemoryStore on `dsn`) holding `texts`."""
        if store is None:
            if dsn is None:
                raise ValueError("from_texts needs store= (a MemoryStore) or dsn=")
            store = MemoryStore(dsn)
        vs = cls(store, embedding, **kwargs)
        vs.add_texts(texts, metadatas, ids=ids)
        return vs

    @property
    def embeddings(self) -> Embeddings:
        return self.embedding

    @property
    def store(self) -> MemoryStore | AsyncMemoryStore:
        """The memstate store the documents live in (bound to the namespace): history,
        rollback and the rest of the memstate API."""
        return self._sync if self._sync is not None else self._async  # type: ignore[return-value]

    def _need_sync(self) -> MemoryStore:
        if self._sync is None:
            raise TypeError(
                "this MemStateVectorStore is built on an AsyncMemoryStore: use the async "
                "methods (aadd_documents, asimilarity_search, ...)"
            )
        if self.embedder.model not in self._sync._models_ready:
            # a search before the first write must find nothing, not an unknown model
            self._sync._run(self._sync._op_model(self.embedder.model, self.embedder.dim))
        return self._sync

    # -- ids and documents ---------------------------------------------------------------

    def fact_id(self, doc_id: str) -> uuid.UUID:
        """The fact id of a LangChain document id (for history, as_of, revert …)."""
        if not isinstance(doc_id, str) or not doc_id:
            raise ValidationFailed("document ids must be non-empty strings")
        try:
            return uuid.UUID(doc_id)
        except ValueError:
            return uuid.uuid5(_ID_SPACE, f"{self.namespace}\x00{self.doc_type}\x00{doc_id}")

    def _facts(
        self,
        texts: Sequence[str],
        metadatas: Sequence[dict[Any, Any] | None] | None,
        ids: Sequence[str | None] | None,
        vectors: list[list[float]],
    ) -> tuple[list[str], list[Fact]]:
        n = len(texts)
        if metadatas is not None and len(metadatas) != n:
            raise ValueError(f"{len(metadatas)} metadatas for {n} texts")
        if ids is not None and len(ids) != n:
            raise ValueError(f"{len(ids)} ids for {n} texts")
        out_ids: list[str] = []
        for i in range(n):
            given = ids[i] if ids is not None else None
            out_ids.append(given if given else str(uuid.uuid4()))
        last = {doc_id: i for i, doc_id in enumerate(out_ids)}  # a repeated id: the last wins
        facts = []
        for i in sorted(last.values()):
            metadata = dict(metadatas[i] or {}) if metadatas is not None else {}
            facts.append(
                Fact(
                    id=self.fact_id(out_ids[i]),
                    type=self.doc_type,
                    payload={"page_content": texts[i], "metadata": metadata, "id": out_ids[i]},
                    content=texts[i],
                    embedding=vectors[i],
                    embedding_model=self.embedder.model,
                )
            )
        return out_ids, facts

    def _document(self, fact: Fact) -> Document:
        payload = fact.payload
        return Document(
            id=payload.get("id") or str(fact.id),
            page_content=payload.get("page_content", fact.content or ""),
            metadata=payload.get("metadata") or {},
        )

    def _ours(self, fact: Fact | None) -> bool:
        return fact is not None and fact.type == self.doc_type and fact.namespace == self.namespace

    def _filters(self, filter: dict[str, Any] | None) -> dict[str, Any] | None:
        if filter is None:
            return None
        if not isinstance(filter, dict):
            raise ValidationFailed("filter must be a dict of metadata key -> value")
        for key in filter:
            if not isinstance(key, str) or key.startswith("$"):
                raise ValidationFailed(
                    f"filter key {key!r}: only equality on metadata keys is supported "
                    "(e.g. {'source': 'faq'}), no operators"
                )
        return {f"metadata.{key}": value for key, value in filter.items()}

    def _write_args(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {"actor": kwargs.get("actor", self.actor), "reason": kwargs.get("reason")}

    # -- sync ----------------------------------------------------------------------------

    def add_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[Any, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        """Embed and write the texts in one commit; an existing id is updated (a new
        version). `reason=` / `actor=` go into history. Returns the ids."""
        store = self._need_sync()
        texts = list(texts)
        if not texts:
            return []
        vectors = self.embedding.embed_documents(texts)
        out_ids, facts = self._facts(texts, metadatas, ids, vectors)
        store.commit_many(facts, namespace=self.namespace, **self._write_args(kwargs))
        return out_ids

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        store = self._need_sync()
        docs = []
        for doc_id in ids:
            fact = store.get(self.fact_id(doc_id))
            if self._ours(fact):
                docs.append(self._document(fact))  # type: ignore[arg-type]
        return docs

    def delete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        """Delete the documents with these ids (missing ones are ignored) in one commit;
        history keeps them, `store.rollback(1)` brings them back."""
        store = self._need_sync()
        if ids is None:
            raise ValueError("delete() needs the ids to delete")
        live = [f.id for f in (store.get(self.fact_id(i)) for i in ids) if f and self._ours(f)]
        if not live:
            return True
        with store.transaction(self.namespace, **self._write_args(kwargs)) as tx:
            for fid in dict.fromkeys(live):
                tx.delete(fid)  # type: ignore[arg-type]
        return True

    def similarity_search_with_score_by_vector(
        self, embedding: list[float], k: int = 4, filter: dict[str, Any] | None = None
    ) -> list[tuple[Document, float]]:
        hits = self._need_sync().search(
            list(map(float, embedding)),
            k,
            namespace=self.namespace,
            type=self.doc_type,
            filters=self._filters(filter),
        )
        return [(self._document(h.fact), h.score) for h in hits]

    def similarity_search_with_score(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        """Documents and their cosine similarity to the query (higher is closer)."""
        return self.similarity_search_with_score_by_vector(
            self.embedding.embed_query(query), k, filter
        )

    def similarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score(query, k, filter)]

    def similarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        return [d for d, _ in self.similarity_search_with_score_by_vector(embedding, k, filter)]

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        # the score is already cosine similarity: 1 - cosine distance
        return lambda score: score

    def max_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        store = self._need_sync()
        hits = store.search(
            list(map(float, embedding)),
            max(fetch_k, k),
            namespace=self.namespace,
            type=self.doc_type,
            filters=self._filters(filter),
        )
        if not hits:
            return []
        vectors = store._read(lambda: _op_vectors([str(h.fact.id) for h in hits], self.namespace))
        return self._mmr(embedding, hits, vectors, k, lambda_mult)

    def max_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        return self.max_marginal_relevance_search_by_vector(
            self.embedding.embed_query(query), k, fetch_k, lambda_mult, filter
        )

    def _mmr(
        self,
        query: list[float],
        hits: list[Hit],
        vectors: dict[str, list[float]],
        k: int,
        lambda_mult: float,
    ) -> list[Document]:
        import numpy as np
        from langchain_core.vectorstores.utils import maximal_marginal_relevance

        hits = [h for h in hits if str(h.fact.id) in vectors]  # deleted meanwhile
        chosen = maximal_marginal_relevance(
            np.array(query, dtype=float),
            [vectors[str(h.fact.id)] for h in hits],
            lambda_mult=lambda_mult,
            k=k,
        )
        return [self._document(hits[i].fact) for i in chosen]

    # -- async ---------------------------------------------------------------------------
    # Native on an AsyncMemoryStore; on a MemoryStore, LangChain's defaults (the sync
    # method in a worker thread) are what these fall back to.

    async def _astore(self) -> AsyncMemoryStore | None:
        if self._async is not None:
            await self._async.open_pool()
            if self.embedder.model not in self._async._models_ready:
                await self._async._run(
                    self._async._op_model(self.embedder.model, self.embedder.dim)
                )
        return self._async

    async def aadd_texts(
        self,
        texts: Iterable[str],
        metadatas: list[dict[Any, Any]] | None = None,
        *,
        ids: list[str] | None = None,
        **kwargs: Any,
    ) -> list[str]:
        store = await self._astore()
        if store is None:
            return await super().aadd_texts(texts, metadatas, ids=ids, **kwargs)
        texts = list(texts)
        if not texts:
            return []
        vectors = await self.embedding.aembed_documents(texts)
        out_ids, facts = self._facts(texts, metadatas, ids, vectors)
        await store.commit_many(facts, namespace=self.namespace, **self._write_args(kwargs))
        return out_ids

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        store = await self._astore()
        if store is None:
            return await super().aget_by_ids(ids)
        docs = []
        for doc_id in ids:
            fact = await store.get(self.fact_id(doc_id))
            if self._ours(fact):
                docs.append(self._document(fact))  # type: ignore[arg-type]
        return docs

    async def adelete(self, ids: list[str] | None = None, **kwargs: Any) -> bool | None:
        store = await self._astore()
        if store is None:
            return await super().adelete(ids, **kwargs)
        if ids is None:
            raise ValueError("adelete() needs the ids to delete")
        live = []
        for doc_id in ids:
            fact = await store.get(self.fact_id(doc_id))
            if self._ours(fact):
                live.append(fact.id)  # type: ignore[union-attr]
        if not live:
            return True
        async with store.transaction(self.namespace, **self._write_args(kwargs)) as tx:
            for fid in dict.fromkeys(live):
                await tx.delete(fid)  # type: ignore[arg-type]
        return True

    async def _asearch(
        self, embedding: list[float], k: int, filter: dict[str, Any] | None
    ) -> list[Hit]:
        store = await self._astore()
        assert store is not None
        hits: list[Hit] = await store.search(
            list(map(float, embedding)),
            k,
            namespace=self.namespace,
            type=self.doc_type,
            filters=self._filters(filter),
        )
        return hits

    async def asimilarity_search_with_score(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[tuple[Document, float]]:
        if self._async is None:
            return await super().asimilarity_search_with_score(query, k, filter=filter, **kwargs)
        hits = await self._asearch(await self.embedding.aembed_query(query), k, filter)
        return [(self._document(h.fact), h.score) for h in hits]

    async def asimilarity_search(
        self, query: str, k: int = 4, filter: dict[str, Any] | None = None, **kwargs: Any
    ) -> list[Document]:
        if self._async is None:
            return await super().asimilarity_search(query, k, filter=filter, **kwargs)
        return [d for d, _ in await self.asimilarity_search_with_score(query, k, filter)]

    async def asimilarity_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        if self._async is None:
            return await super().asimilarity_search_by_vector(embedding, k, filter=filter, **kwargs)
        return [self._document(h.fact) for h in await self._asearch(embedding, k, filter)]

    async def amax_marginal_relevance_search_by_vector(
        self,
        embedding: list[float],
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        store = await self._astore()
        if store is None:
            return await super().amax_marginal_relevance_search_by_vector(
                embedding, k, fetch_k, lambda_mult, filter=filter, **kwargs
            )
        hits = await self._asearch(embedding, max(fetch_k, k), filter)
        if not hits:
            return []
        vectors = await store._read(
            lambda: _op_vectors([str(h.fact.id) for h in hits], self.namespace)
        )
        return self._mmr(embedding, hits, vectors, k, lambda_mult)

    async def amax_marginal_relevance_search(
        self,
        query: str,
        k: int = 4,
        fetch_k: int = 20,
        lambda_mult: float = 0.5,
        filter: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> list[Document]:
        if self._async is None:
            return await super().amax_marginal_relevance_search(
                query, k, fetch_k, lambda_mult, filter=filter, **kwargs
            )
        return await self.amax_marginal_relevance_search_by_vector(
            await self.embedding.aembed_query(query), k, fetch_k, lambda_mult, filter
        )
