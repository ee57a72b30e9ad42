"""Building Mirror objects from text: CLI mirror specs and the registry's stored options.

A *mirror spec* names a registered mirror and where its store lives::

    NAME=chroma:path:/var/lib/chroma          embedded, on-disk Chroma (one process only)
    NAME=chroma:http://127.0.0.1:8000         a Chroma server (`chroma run`)
    NAME=chroma:memory                        in-process ephemeral Chroma (demos, tests)
    NAME=qdrant:http://127.0.0.1:6333         a Qdrant server
    NAME=qdrant:path:/var/lib/qdrant          Qdrant local mode on disk (one process only)
    NAME=qdrant::memory:                      Qdrant local mode in memory (demos, tests)

A spec may end with ``?collection=C`` (default: the `collection` argument, else the
mirror's NAME: two mirrors on one store never share a collection by default).

`mirror_from_options` rebuilds a mirror from what ``Mirror.describe()`` stored in
memstate.mirrors.options when it was registered, so ``memstate-pg sync`` can run without
specs for mirrors whose store other processes can reach (a server URL or a path).
"""

from __future__ import annotations

from typing import Any

from ..errors import ValidationFailed
from ..mirrors.base import Mirror

__all__ = ["mirror_from_location", "mirror_from_options", "parse_mirror_spec"]


def mirror_from_location(kind: str, location: str, collection: str = "memory") -> Mirror:
    """A ChromaMirror or QdrantMirror for `location` (see the module docstring)."""
    if kind == "chroma":
        from ..mirrors.chroma import ChromaMirror, ephemeral_client

        if location.startswith(("http://", "https://")):
            return ChromaMirror.from_url(location, collection)
        if location.startswith("path:"):
            return ChromaMirror.from_path(location[len("path:") :], collection)
        if location in ("memory", ":memory:"):
            return ChromaMirror(ephemeral_client(), collection)
    elif kind == "qdrant":
        from ..mirrors.qdrant import QdrantMirror

        if location.startswith(("http://", "https://")):
            return QdrantMirror.from_url(location, collection)
        if location.startswith("path:"):
            return QdrantMirror.from_location(location[len("path:") :], collection)
        if location == ":memory:":
            return QdrantMirror.from_location(":memory:", collection)
    else:
        raise ValidationFailed(f"unknown mirror kind {kind!r}: chroma or qdrant")
    raise ValidationFailed(
        f"bad {kind} location {location!r}: use http(s)://host:port, path:DIR or "
        + ("memory" if kind == "chroma" else ":memory:")
    )


def parse_mirror_spec(spec: str, *, collection: str | None = None) -> tuple[str, Mirror]:
    """``NAME=KIND:LOCATION[?collection=C]`` -> (name, Mirror); the collection defaults to
    `collection`, else NAME."""
    name, sep, rest = spec.partition("=")
    kind, sep2, location = rest.partition(":")
    if not sep or not sep2 or not name or not location:
        raise ValidationFailed(
            f"bad mirror spec {spec!r}: expected NAME=chroma:LOCATION or NAME=qdrant:LOCATION"
        )
    if "?collection=" in location:
        location, _, collection = location.rpartition("?collection=")
    name = name.strip()
    return name, mirror_from_location(kind.strip().lower(), location, collection or name)


def mirror_from_options(kind: str, options: dict[str, Any]) -> Mirror | None:
    """Rebuild a mirror from its registry options, or None when its store is private to
    the process that registered it (in-memory stores, custom mirrors)."""
    collection = options.get("collection", "memory")
    if kind == "chroma":
        from ..mirrors.chroma import ChromaMirror

        extra = {k: options[k] for k in ("distance", "batch_size") if options.get(k) is not None}
        if options.get("url"):
            return ChromaMirror.from_url(options["url"], collection, **extra)
        if options.get("path"):
            return ChromaMirror.from_path(options["path"], collection, **extra)
    elif kind == "qdrant":
        from ..mirrors.qdrant import QdrantMirror

        extra = {
            k: options[k] for k in ("distance", "batch_size", "dim") if options.get(k) is not None
        }
        if options.get("url"):
            return QdrantMirror.from_url(options["url"], collection, **extra)
        if options.get("path"):
            return QdrantMirror.from_location(options["path"], collection, **extra)
    return None
