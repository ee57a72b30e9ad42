"""Embedders named on a command line: `--embedder hashing[:DIM] | sentence-transformers:MODEL
| openai:MODEL` (OpenAI's base URL from OPENAI_BASE_URL). Shared by `memstate-pg mcp` and
`memstate-pg reembed`."""

from __future__ import annotations

import os

from .base import Embedder

SPEC_HELP = "hashing[:DIM], sentence-transformers:MODEL or openai:MODEL"


def embedder_from_spec(spec: str | None) -> Embedder | None:
    """The embedder a spec names (None for an empty spec); ValueError for a bad spec,
    ImportError (MissingDependency) when its extra is not installed."""
    if not spec:
        return None
    kind, _, arg = spec.partition(":")
    from . import HashingEmbedder, OpenAIEmbedder, SentenceTransformerEmbedder

    if kind == "hashing":
        try:
            return HashingEmbedder(dim=int(arg) if arg else 384)
        except ValueError:
            raise ValueError(f"--embedder {spec!r}: the dimension must be a number") from None
    if kind == "sentence-transformers" and arg:
        return SentenceTransformerEmbedder(arg)
    if kind == "openai" and arg:
        base = os.environ.get("OPENAI_BASE_URL", "https://api.openai.com/v1")
        return OpenAIEmbedder(arg, base_url=base)
    raise ValueError(f"--embedder {spec!r}: use {SPEC_HELP}")


__all__ = ["SPEC_HELP", "embedder_from_spec"]
