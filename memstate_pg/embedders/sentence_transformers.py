"""Local neural embeddings through the ``sentence-transformers`` package.

Loading a model imports torch (seconds) and may download weights, so nothing
happens until the first ``embed`` call or the first read of ``dim``: importing
``memstate_pg`` and constructing the embedder stay instant and offline. Pass
``dim=`` as well to let the store set up its schema without loading the model.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from memstate_pg.embedders.base import (
    EmbeddingError,
    coerce_texts,
    coerce_vectors,
    import_optional,
    validate_dim,
    validate_model_name,
)

__all__ = ["SentenceTransformerEmbedder"]

_EXTRA = "sentence-transformers"


class SentenceTransformerEmbedder:
    """Embed with a sentence-transformers model, loaded lazily and at most once.

    ``model`` (a keyword argument) accepts an already-built model object, anything
    with ``encode(texts, **kwargs)`` and ``get_sentence_embedding_dimension()``; then
    the package is never imported. ``model_id`` overrides the vector-space name stored
    with facts, which defaults to ``model_name``. ``normalize`` L2-normalises outputs
    (what cosine search expects). Other keyword arguments go to ``SentenceTransformer``.
    """

    def __init__(
        self,
        model_name: str = "all-MiniLM-L6-v2",
        *,
        device: str | None = None,
        normalize: bool = True,
        batch_size: int = 32,
        dim: int | None = None,
        model: Any = None,
        model_id: str | None = None,
        eager: bool = False,
        **kwargs: Any,
    ):
        self.model_name = model_name
        # `model` is the vector-space name per the Embedder contract; the object lives apart.
        self.model = validate_model_name(model_id if model_id is not None else model_name)
        self.device = device
        self.normalize = normalize
        self.batch_size = batch_size
        self._declared_dim = validate_dim(dim) if dim is not None else None
        self._kwargs = kwargs
        self._model_obj: Any = None
        self._dim: int | None = None
        self._lock = threading.Lock()
        if model is not None:
            self._adopt(model)
        elif eager:
            self._load()

    def __repr__(self) -> str:
        state = "loaded" if self._model_obj is not None else "not loaded"
        return f"SentenceTransformerEmbedder({self.model_name!r}, {state})"

    @property
    def dim(self) -> int:
        """Vector length; reads it from the model, loading the model if needed."""
        if self._dim is None and self._declared_dim is not None and self._model_obj is None:
            return self._declared_dim
        self._load()
        assert self._dim is not None
        return self._dim

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Encode all texts in one ``encode`` call (the model batches internally)."""
        batch = coerce_texts(texts)
        if not batch:
            return []
        model = self._load()
        try:
            raw = model.encode(
                batch,
                batch_size=self.batch_size,
                normalize_embeddings=self.normalize,
                convert_to_numpy=True,
                show_progress_bar=False,
            )
        except Exception as exc:
            raise EmbeddingError(
                f"sentence-transformers model {self.model_name!r} failed: {exc}"
            ) from exc
        return coerce_vectors(
            raw, dim=self.dim, count=len(batch), source=f"model {self.model_name!r}"
        )

    def _load(self) -> Any:
        """Return the model, importing and building it on first use (thread-safe).

        The lock matters because :func:`memstate_pg.embedders.aembed` calls ``embed``
        from worker threads: two concurrent first calls must not load two models.
        """
        if self._model_obj is not None:
            return self._model_obj
        with self._lock:
            if self._model_obj is None:
                module = import_optional("sentence_transformers", extra=_EXTRA)
                try:
                    model = module.SentenceTransformer(
                        self.model_name, device=self.device, **self._kwargs
                    )
                except Exception as exc:
                    raise EmbeddingError(
                        f"could not load sentence-transformers model {self.model_name!r}: {exc}"
                    ) from exc
                self._adopt(model)
        return self._model_obj

    def _adopt(self, model: Any) -> None:
        dim = _model_dim(model)
        if self._declared_dim is not None and dim != self._declared_dim:
            raise EmbeddingError(
                f"model {self.model_name!r} produces {dim}-dimensional vectors, "
                f"but dim={self._declared_dim} was declared"
            )
        self._dim = dim
        self._model_obj = model


def _model_dim(model: Any) -> int:
    """Ask the model for its output size; newer releases renamed the accessor."""
    for accessor in ("get_sentence_embedding_dimension", "get_embedding_dimension"):
        method = getattr(model, accessor, None)
        if callable(method):
            dim = method()
            if dim is not None:
                return validate_dim(dim)
    # Some models (custom pooling) do not know their size until they run once.
    probe = model.encode(["dimension probe"], convert_to_numpy=True, show_progress_bar=False)
    if hasattr(probe, "tolist"):
        probe = probe.tolist()
    return validate_dim(len(probe[0]))
