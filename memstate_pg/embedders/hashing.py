"""A deterministic, offline embedder based on feature hashing.

It needs no model, no network and nothing beyond the standard library, which
makes it the default for tests, demos and air-gapped installs. Its quality is
that of a bag of words: texts sharing words (and word pairs) point the same way;
paraphrases with different words do not. That is enough for "which stored facts
mention Berlin?" and keeps every run reproducible.

Each NFKC-normalised, case-folded word n-gram is hashed with BLAKE2b (stable
across processes and machines, unlike the salted built-in ``hash``) to a bucket
and a sign; the signs make unrelated features cancel out on average instead of
piling up, so cosine similarity tracks shared features. Vectors are L2-normalised.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import unicodedata
from collections.abc import Sequence
from typing import Any

from memstate_pg.embedders.base import coerce_texts, validate_dim, validate_model_name
from memstate_pg.errors import ValidationFailed

__all__ = ["HashingEmbedder"]

_WORD = re.compile(r"\w+")
_EMPTY_MARKER = "\x00empty"
"""Feature used for texts with no words; ``\\w`` never matches NUL, so no real token collides."""
_PERSON = b"memstate-hash-v1"
"""BLAKE2b personalisation: changing it changes every vector, so it is part of "v1"."""
_CACHE_SIZE = 1 << 16


class HashingEmbedder:
    """Feature-hashing embedder: ``HashingEmbedder(dim=384, *, seed=0, ngram=(1, 2))``.

    ``ngram`` is the inclusive range of word n-gram lengths used as features. ``seed``
    picks an independent hash family (same texts, different but equally valid space).
    Both change the vector space, so both appear in ``model`` when not the default.
    """

    def __init__(self, dim: int = 384, *, seed: int = 0, ngram: tuple[int, int] = (1, 2)):
        self.dim = validate_dim(dim)
        if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64:
            raise ValidationFailed(f"seed must be an int in 0..2**64-1, got {seed!r}")
        lo, hi = _check_ngram(ngram)
        self.seed = seed
        self.ngram = (lo, hi)
        name = f"hashing-v1-{dim}"
        if seed:
            name += f"-s{seed}"
        if self.ngram != (1, 2):
            name += f"-n{lo}-{hi}"
        self.model = validate_model_name(name)
        key = seed.to_bytes(8, "little") if seed else b""
        # Per-instance cache: token -> (bucket, sign). Agent memories reuse a small
        # vocabulary, so most tokens after the first few commits are cache hits.
        self._slot = functools.lru_cache(maxsize=_CACHE_SIZE)(
            functools.partial(_slot, key=key, dim=self.dim)
        )
        self._empty = self._vector({})

    def __repr__(self) -> str:
        return f"HashingEmbedder(dim={self.dim}, seed={self.seed}, ngram={self.ngram})"

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Return one unit vector per text; texts without words share one fixed vector."""
        return [self._embed_one(text) for text in coerce_texts(texts)]

    def _embed_one(self, text: str) -> list[float]:
        counts: dict[int, float] = {}
        get = counts.get
        for bucket, sign in map(self._slot, self._features(text)):
            counts[bucket] = get(bucket, 0.0) + sign
        if not counts:
            return list(self._empty)
        return self._vector(counts)

    def _features(self, text: str) -> list[str]:
        # NFKC first, so composed and decomposed accents ("é" vs "e\u0301") hash alike.
        words = _WORD.findall(unicodedata.normalize("NFKC", text).casefold())
        lo, hi = self.ngram
        features: list[str] = []
        for n in range(lo, hi + 1):
            if n == 1:
                features.extend(words)
            else:
                features.extend(map(" ".join, zip(*(words[k:] for k in range(n)), strict=False)))
        return features

    def _vector(self, counts: dict[int, float]) -> list[float]:
        norm = math.sqrt(sum(v * v for v in counts.values()))
        if norm == 0.0:
            # No features, or signed features that cancelled exactly: fall back to the
            # empty-text vector rather than all zeros (cosine with zero is NaN).
            bucket, sign = self._slot(_EMPTY_MARKER)
            counts, norm = {bucket: sign}, 1.0
        vector = [0.0] * self.dim
        for bucket, value in counts.items():
            vector[bucket] = value / norm
        return vector


def _slot(token: str, *, key: bytes, dim: int) -> tuple[int, float]:
    digest = hashlib.blake2b(token.encode("utf-8"), digest_size=8, key=key, person=_PERSON)
    h = int.from_bytes(digest.digest(), "little")
    return (h >> 1) % dim, (1.0 if h & 1 else -1.0)


def _check_ngram(ngram: Any) -> tuple[int, int]:
    try:
        lo, hi = ngram
    except (TypeError, ValueError):
        raise ValidationFailed(f"ngram must be a (min, max) pair, got {ngram!r}") from None
    if any(isinstance(n, bool) or not isinstance(n, int) for n in (lo, hi)) or not 1 <= lo <= hi:
        raise ValidationFailed(f"ngram must satisfy 1 <= min <= max, got {ngram!r}")
    return lo, hi
