"""How MemStateStore turns LangGraph's ``index`` config into vectors.

LangGraph configures semantic search with ``index={"dims": 1536, "embed": ..., "fields":
["text"]}``, where ``embed`` is a LangChain ``Embeddings``, a sync or async function
``texts -> vectors``, or a provider string. memstate-pg stores a *model name* with every
vector and only compares vectors of one model, so the config may also carry ``"model"``:
a stable name for the vector space (default: the provider string, the Embeddings'
``model``/``model_name`` attribute, or the function's qualified name, plus the dims).
``embed`` may also be a memstate embedder (``HashingEmbedder(dim=...)``, ...).

Without an ``index`` config, items are embedded by the MemoryStore's own embedder over the
JSON of the whole value (``fields=["$"]``), so ``search(query=...)`` always ranks.

LangChain's two methods (``embed_documents`` for items, ``embed_query`` for queries) become
two memstate Embedders (``.embed(texts)``, ``.aembed(texts)``, ``.model``, ``.dim``) that
the store's operations hand to the runner as ``Embed(texts, embedder=...)``.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from langgraph.store.base import ensure_embeddings, get_text_at_path, tokenize_path

from ..embedders import Embedder, is_embedder, validate_dim, validate_model_name

__all__ = [
    "DocumentEmbedder",
    "IndexEmbedders",
    "QueryEmbedder",
    "TextExtractor",
    "index_embedders",
]


class DocumentEmbedder:
    """LangChain ``Embeddings`` (what LangGraph makes of ``index["embed"]``), documents
    side, as a memstate Embedder: ``embed`` / ``aembed`` call ``(a)embed_documents``."""

    def __init__(self, embeddings: Any, *, dim: int, model: str) -> None:
        self.embeddings = embeddings
        self.dim = validate_dim(dim)
        self.model = validate_model_name(model)

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return list(self.embeddings.embed_documents(list(texts)))

    async def aembed(self, texts: Sequence[str]) -> list[list[float]]:
        return list(await self.embeddings.aembed_documents(list(texts)))


class QueryEmbedder(DocumentEmbedder):
    """The query side: ``embed_query`` per text (LangChain models may embed queries
    differently from documents)."""

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        return [self.embeddings.embed_query(text) for text in texts]

    async def aembed(self, texts: Sequence[str]) -> list[list[float]]:
        return list(await asyncio.gather(*(self.embeddings.aembed_query(t) for t in texts)))


@dataclass(frozen=True)
class IndexEmbedders:
    """The vector space of a store's items: its name and size, and the Embedders for
    documents and for queries (the same one for a memstate Embedder)."""

    model: str
    dim: int
    documents: Embedder
    queries: Embedder


def _default_model(embed: Any, dims: int) -> str:
    if isinstance(embed, str):
        return embed
    for attr in ("model", "model_name"):
        name = getattr(embed, attr, None)
        if isinstance(name, str) and name:
            return f"{name}-{dims}"
    fn = getattr(embed, "__qualname__", None) or type(embed).__qualname__
    module = getattr(embed, "__module__", None) or type(embed).__module__
    return f"lg:{module}.{fn}-{dims}"[-100:]


def index_embedders(index: Mapping[str, Any] | None, fallback: Embedder) -> IndexEmbedders:
    """The embedders an ``index`` config asks for; the MemoryStore's embedder without one."""
    if not index:
        return IndexEmbedders(fallback.model, fallback.dim, fallback, fallback)
    if "dims" not in index:
        raise ValueError("index config needs 'dims'")
    embed = index.get("embed")
    dims = int(index["dims"])
    if embed is None or is_embedder(embed):
        embedder = fallback if embed is None else embed
        if embedder.dim != dims:
            raise ValueError(f"index dims {dims} differ from the embedder's {embedder.dim}")
        return IndexEmbedders(embedder.model, embedder.dim, embedder, embedder)
    model = index.get("model") or _default_model(embed, dims)
    embeddings = ensure_embeddings(embed)
    documents = DocumentEmbedder(embeddings, dim=dims, model=model)
    queries = QueryEmbedder(embeddings, dim=dims, model=model)
    return IndexEmbedders(documents.model, documents.dim, documents, queries)


class TextExtractor:
    """The text of an item that gets embedded: the configured fields' texts, joined.

    LangGraph stores one vector per field (and per array element); a memstate fact has one
    vector, so the texts of all fields are embedded together (joined by newlines).
    ``"$"`` means the whole value as JSON. An item with no text at any field is stored
    unindexed: it is never a hit of a ``query`` search, but filters still find it.
    """

    def __init__(self, fields: Sequence[str] | str | None) -> None:
        if isinstance(fields, str):
            fields = [fields]
        self.fields = list(fields or ["$"])
        self._tokens = [(f, "$" if f == "$" else tokenize_path(f)) for f in self.fields]

    def text(self, value: Mapping[str, Any], index: Sequence[str] | None = None) -> str | None:
        tokens = (
            self._tokens
            if index is None
            else [(f, "$" if f == "$" else tokenize_path(f)) for f in index]
        )
        texts: list[str] = []
        for _, path in tokens:
            if path == "$":
                texts.append(json.dumps(dict(value), sort_keys=True, ensure_ascii=False))
            else:
                texts.extend(get_text_at_path(value, path))
        texts = [t for t in texts if t]
        return "\n".join(texts) if texts else None
