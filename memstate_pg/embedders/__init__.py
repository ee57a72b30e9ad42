"""Embedders: turn texts into vectors for memstate-pg.

Importing this package is cheap and offline: optional dependencies (httpx,
sentence-transformers) are imported by the embedder that needs them, on first use.

- :class:`HashingEmbedder` - deterministic, stdlib-only, the default for tests and demos.
- :class:`SentenceTransformerEmbedder` - local models (extra ``sentence-transformers``).
- :class:`OpenAIEmbedder` - any OpenAI-compatible ``/embeddings`` endpoint (extra ``openai``).
- :class:`CallableEmbedder` - wrap your own sync or async function.

The store relies on :func:`check_vectors` for every write and on :func:`aembed` to
embed from async code without blocking the event loop.
"""

from memstate_pg.embedders.base import (
    MAX_DIM,
    MAX_MODEL_LEN,
    AsyncEmbedder,
    Embedder,
    EmbeddingError,
    MissingDependency,
    aembed,
    check_vectors,
    coerce_texts,
    coerce_vectors,
    is_embedder,
    validate_dim,
    validate_model_name,
)
from memstate_pg.embedders.callable import CallableEmbedder
from memstate_pg.embedders.hashing import HashingEmbedder
from memstate_pg.embedders.openai import OpenAIEmbedder
from memstate_pg.embedders.sentence_transformers import SentenceTransformerEmbedder

__all__ = [
    "MAX_DIM",
    "MAX_MODEL_LEN",
    "AsyncEmbedder",
    "CallableEmbedder",
    "Embedder",
    "EmbeddingError",
    "HashingEmbedder",
    "MissingDependency",
    "OpenAIEmbedder",
    "SentenceTransformerEmbedder",
    "aembed",
    "check_vectors",
    "coerce_texts",
    "coerce_vectors",
    "is_embedder",
    "validate_dim",
    "validate_model_name",
]
