"""The embedder contract shared by the store and every embedder implementation.

An embedder turns texts into vectors. The store calls it once per commit with
every text of that commit (batched), stores ``embedder.model`` next to every
vector, and only ever compares vectors that carry the same ``model`` string:
two embedders that produce incompatible vector spaces must therefore report
different ``model`` strings, even when their dimensions happen to match.

Everything here is dependency-free so that importing ``memstate_pg`` never
pulls in numpy, httpx or torch.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import math
import numbers
from collections.abc import Mapping, Sequence
from types import ModuleType
from typing import Any, Protocol, runtime_checkable

from memstate_pg.errors import MemStateError, ValidationFailed

__all__ = [
    "MAX_DIM",
    "MAX_MODEL_LEN",
    "AsyncEmbedder",
    "Embedder",
    "EmbeddingError",
    "MissingDependency",
    "aembed",
    "check_vectors",
    "coerce_texts",
    "coerce_vectors",
    "import_optional",
    "is_embedder",
    "validate_dim",
    "validate_model_name",
]

MAX_MODEL_LEN = 100
"""Longest accepted ``model`` string; it is stored with every fact, so keep it short."""

MAX_DIM = 16_000
"""pgvector's ``vector`` type refuses more than 16,000 dimensions."""

_F32_MAX = 3.4028234663852886e38
"""pgvector stores float4: a larger magnitude would overflow to infinity in the database."""


class EmbeddingError(MemStateError):
    """An embedder failed to produce vectors: a server error, a bad response, a broken model.

    ``status_code`` carries the HTTP status when the failure came from a remote service,
    so callers can tell a rejected request (4xx) from an outage (5xx).
    """

    def __init__(self, message: str, *, status_code: int | None = None):
        super().__init__(message)
        self.status_code = status_code


class MissingDependency(EmbeddingError, ImportError):
    """An optional package an embedder needs is not installed.

    It is both a :class:`MemStateError` (so ``except MemStateError`` sees it) and an
    :class:`ImportError` (so code that probes for optional features keeps working).
    """

    def __init__(self, message: str, *, package: str):
        super().__init__(message)
        self.name = package


@runtime_checkable
class Embedder(Protocol):
    """What the store needs from an embedder.

    ``model`` names the vector space (stored with every fact), ``dim`` is the vector
    length, and ``embed`` is called once per commit with all texts of the commit.
    Both are declared as read-only properties so that plain attributes and lazy
    properties (which load a model on first read) both satisfy the protocol.
    """

    @property
    def model(self) -> str:
        """Name of the vector space, at most 100 characters, e.g. ``"hashing-v1-384"``."""
        ...

    @property
    def dim(self) -> int:
        """Length of every vector ``embed`` returns."""
        ...

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Return one vector of length ``dim`` per text, in input order."""
        ...


@runtime_checkable
class AsyncEmbedder(Embedder, Protocol):
    """An embedder with a native coroutine path, used by :func:`aembed` when present."""

    async def aembed(self, texts: Sequence[str]) -> list[list[float]]:
        """Like :meth:`Embedder.embed`, without blocking the event loop."""
        ...


def is_embedder(obj: object) -> bool:
    """Tell whether ``obj`` satisfies :class:`Embedder` without touching lazy attributes.

    ``isinstance(obj, Embedder)`` on Python < 3.12 *reads* ``obj.dim``, and for lazy
    embedders (sentence-transformers, an OpenAI model of unknown size) reading ``dim``
    loads a model or makes a request. This check only looks the names up statically.
    """
    for name in ("model", "dim", "embed"):
        try:
            inspect.getattr_static(obj, name)
        except AttributeError:
            return False
    return callable(getattr(obj, "embed", None))


def validate_model_name(model: object) -> str:
    """Return ``model`` if it is a usable vector-space name, else raise ValidationFailed."""
    if not isinstance(model, str) or not model.strip():
        raise ValidationFailed(f"embedder model must be a non-empty string, got {model!r}")
    if len(model) > MAX_MODEL_LEN:
        raise ValidationFailed(
            f"embedder model name is {len(model)} characters long; the limit is {MAX_MODEL_LEN}"
        )
    return model


def validate_dim(dim: object) -> int:
    """Return ``dim`` if it is a vector length pgvector can store, else raise ValidationFailed."""
    if isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= MAX_DIM:
        raise ValidationFailed(f"embedding dim must be an int in 1..{MAX_DIM}, got {dim!r}")
    return dim


def coerce_texts(texts: Any) -> list[str]:
    """Turn the ``texts`` argument of ``embed`` into a list of str.

    A bare string is refused: iterating it would silently embed each character.
    """
    if isinstance(texts, (str, bytes)):
        raise ValidationFailed("embed() takes a sequence of texts, not a single string")
    try:
        batch = list(texts)
    except TypeError:
        raise ValidationFailed(
            f"embed() takes a sequence of texts, got {type(texts).__name__}"
        ) from None
    for i, text in enumerate(batch):
        if not isinstance(text, str):
            raise ValidationFailed(
                f"text {i} is {type(text).__name__}, expected str",
                errors=[{"index": i, "problem": "not a string"}],
            )
    return batch


def _refuse(message: str, **where: Any) -> ValidationFailed:
    return ValidationFailed(message, errors=[{**where, "problem": message}])


def _is_row(obj: object) -> bool:
    return (
        hasattr(obj, "__len__")
        and hasattr(obj, "__iter__")
        and not isinstance(obj, (str, bytes, bytearray, Mapping))
    )


_FLOAT_ONLY = {float}


def check_vectors(vectors: Any, dim: int, *, count: int | None = None) -> None:
    """Refuse anything pgvector would reject or store as garbage.

    Raises :class:`ValidationFailed` unless ``vectors`` is a sequence (of ``count``
    items, when given) of sequences of exactly ``dim`` finite real numbers that fit
    in float4. Booleans, strings and ``None`` are not numbers here. numpy arrays and
    numpy scalars are accepted. The store runs this on every write, including for
    embeddings supplied by the caller, so it must be cheap: the common case (Python
    floats) costs one range comparison per component.
    """
    validate_dim(dim)
    if not _is_row(vectors):
        raise _refuse(f"vectors must be a sequence of vectors, got {type(vectors).__name__}")
    if count is not None and len(vectors) != count:
        raise _refuse(f"expected {count} vectors, got {len(vectors)}")
    for i, vector in enumerate(vectors):
        # fast path, C loops only: a list of Python floats, all finite, within float4
        if (
            type(vector) is list
            and len(vector) == dim
            and set(map(type, vector)) == _FLOAT_ONLY
            and math.isfinite(sum(vector))
            and min(vector) >= -_F32_MAX
            and max(vector) <= _F32_MAX
        ):
            continue
        if not _is_row(vector):
            raise _refuse(
                f"vector {i} must be a sequence of numbers, got {type(vector).__name__}", index=i
            )
        if len(vector) != dim:
            raise _refuse(f"vector {i} has {len(vector)} dimensions, expected {dim}", index=i)
        for j, x in enumerate(vector):
            kind = type(x)
            if kind is float or kind is int:
                if -_F32_MAX <= x <= _F32_MAX:  # also false for NaN
                    continue
            elif isinstance(x, numbers.Real) and not isinstance(x, bool):
                value = float(x)
                if -_F32_MAX <= value <= _F32_MAX:
                    continue
            else:
                raise _refuse(
                    f"vector {i}[{j}] is {kind.__name__}, expected a real number",
                    index=i,
                    position=j,
                )
            what = "NaN" if x != x else "infinite or beyond float4 range"
            raise _refuse(f"vector {i}[{j}] is {what} ({x!r})", index=i, position=j)


def coerce_vectors(raw: Any, *, dim: int, count: int, source: str) -> list[list[float]]:
    """Check an embedder's raw output and return it as plain ``list[list[float]]``.

    Used by embedders wrapping code they do not control (a model, a user function, a
    server). Bad output is the embedder's failure, not the caller's, so it surfaces
    as :class:`EmbeddingError` naming ``source``.
    """
    if hasattr(raw, "tolist"):  # numpy / torch arrays
        raw = raw.tolist()
    try:
        check_vectors(raw, dim, count=count)
    except ValidationFailed as exc:
        raise EmbeddingError(f"{source} returned invalid embeddings: {exc}") from exc
    return [[float(x) for x in vector] for vector in raw]


def import_optional(module: str, *, extra: str) -> ModuleType:
    """Import an optional dependency, or explain which extra installs it."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependency(
            f'{module} is not installed; install it with: pip install "memstate-pg[{extra}]"',
            package=module,
        ) from exc


async def aembed(embedder: Embedder, texts: Sequence[str]) -> list[list[float]]:
    """Embed ``texts`` from async code without blocking the event loop.

    Uses the embedder's own ``aembed`` coroutine when it has one (e.g. an async HTTP
    client); otherwise runs the synchronous ``embed`` in a worker thread, because a
    local model or even a slow hash of a large batch would stall every other task.
    """
    batch = coerce_texts(texts)
    if not batch:
        return []
    native = getattr(embedder, "aembed", None)
    if callable(native):
        result = native(batch)
        if inspect.isawaitable(result):
            result = await result
        return result
    return await asyncio.to_thread(embedder.embed, batch)
