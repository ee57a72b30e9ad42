"""The systems we compare with, each behind a small adapter with the same few methods.

Peers whose packages are missing (the `bench` extra is not installed) raise
`PeerUnavailable` on construction; workloads then skip them with a note.
"""

from __future__ import annotations


class PeerUnavailable(RuntimeError):
    """A peer's package is not installed (or cannot run here)."""


SKIP: dict[str, str] = {}
"""Modules whose peers are left out of this run, with the reason (see Sizes.peers)."""


def require(module: str, extra: str = "bench"):
    """Import `module` or raise PeerUnavailable naming the extra that provides it (or why
    this run leaves it out, see SKIP)."""
    import importlib

    if module in SKIP:
        raise PeerUnavailable(SKIP[module])
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PeerUnavailable(f"{module} is not installed (pip install -e '.[{extra}]')") from exc
    except Exception as exc:  # noqa: BLE001 - e.g. memstate 0.5.1 without aiosqlite: AttributeError
        raise PeerUnavailable(f"{module} fails to import: {exc!r}") from exc
