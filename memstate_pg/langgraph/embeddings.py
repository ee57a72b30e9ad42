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
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from langgraph.store.base import ensure_embeddings, get_text_at_path, tokenize_path

from ..embedders import (
    Embedder,
    aembed,
    check_vectors,
    is_embedder,
    validate_dim,
    validate_model_name,
)
from ..errors import ValidationFailed

__all__ = ["IndexEmbedder", "TextExtractor", "index_embedder"]


class IndexEmbedder(Protocol):
    """What the store needs: a named vector space, documents and queries, sync and async."""

    model: str
    dim: int

    def embed_documents(self, texts: list[str]) -> list[list[float]]: ...
    def embed_query(self, text: str) -> list[float]: ...
    async def aembed_documents(self, texts: list[str]) -> list[list[float]]: ...
    async def aembed_query(self, text: str) -> list[float]: ...


class MemstateIndexEmbedder:
    """A memstate Embedder (HashingEmbedder, OpenAIEmbedder, ...) as an IndexEmbedder."""

    def __init__(self, embedder: Embedder) -> None:
        self.embedder = embedder
        self.model = embedder.model
        self.dim = embedder.dim

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return _counted(self.embedder.embed(texts), len(texts)) if texts else []

    def embed_query(self, text: str) -> list[float]:
        return _checked(self.embedder.embed([text]), self.dim, 1)[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        return _counted(await aembed(self.embedder, texts), len(texts)) if texts else []

    async def aembed_query(self, text: str) -> list[float]:
        return _checked(await aembed(self.embedder, [text]), self.dim, 1)[0]


class LangChainIndexEmbedder:
    """LangChain ``Embeddings`` (what LangGraph makes of ``index["embed"]``)."""

    def __init__(self, embeddings: Any, *, dim: int, model: str) -> None:
        self.embeddings = embeddings
        self.dim = validate_dim(dim)
        self.model = validate_model_name(model)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return _counted(self.embeddings.embed_documents(texts), len(texts)) if texts else []

    def embed_query(self, text: str) -> list[float]:
        return _checked([self.embeddings.embed_query(text)], self.dim, 1)[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        return _counted(await self.embeddings.aembed_documents(texts), len(texts))

    async def aembed_query(self, text: str) -> list[float]:
        return _checked([await self.embeddings.aembed_query(text)], self.dim, 1)[0]


def _counted(vectors: Any, count: int) -> list[Any]:
    """Document vectors: one per text (MemoryStore checks each vector when it writes it)."""
    rows = list(vectors)
    if len(rows) != count:
        raise ValidationFailed(f"the embedder returned {len(rows)} vectors for {count} texts")
    return rows


def _checked(vectors: Any, dim: int, count: int) -> list[list[float]]:
    """Query vectors, which go straight into SQL: fully checked here."""
    rows = [list(map(float, v)) for v in vectors]
    check_vectors(rows, dim, count=count)
    return rows


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


def index_embedder(index: Mapping[str, Any] | None, fallback: Embedder) -> IndexEmbedder:
    """The embedder an ``index`` config asks for; the MemoryStore's embedder without one."""
    if not index:
        return MemstateIndexEmbedder(fallback)
    if "dims" not in index:
        raise ValueError("index config needs 'dims'")
    embed = index.get("embed")
    dims = int(index["dims"])
    if embed is None or is_embedder(embed):
        embedder = fallback if embed is None else embed
        if embedder.dim != dims:
            raise ValueError(f"index dims {dims} differ from the embedder's {embedder.dim}")
        return MemstateIndexEmbedder(embedder)
    model = index.get("model") or _default_model(embed, dims)
    return LangChainIndexEmbedder(ensure_embeddings(embed), dim=dims, model=model)


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
