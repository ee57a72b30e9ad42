"""Registry and backfill operations, written as core.py operations (generators that yield
``Exec`` requests), so the sync and the async store run the very same code.

Backfill: registering a mirror on a database that already holds facts enqueues one outbox
row per live fact in the mirror's scope, in keyset pages by fact_id, each page its own
short transaction (``INSERT … SELECT … WHERE NOT EXISTS``, see sql/sync_queries.sql
``backfill_page``). It is resumable: a run that stopped half way (crash, Ctrl-C) can be
started again and enqueues only the facts that have no pending row for the mirror yet.
Changes committed meanwhile are enqueued by the outbox trigger as usual; the odd duplicate
row is coalesced by the worker.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from typing import Any

from ..core import Exec, Op
from ..errors import NotFound, ValidationFailed
from ..mirrors.base import Mirror
from ..types import check_name
from .outbox import NIL_UUID, MirrorConfig, q

__all__ = [
    "op_backfill",
    "op_dead_rows",
    "op_mirror_config",
    "op_register_mirror",
    "op_remove_mirror",
    "op_requeue",
]

_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")
DEFAULT_PAGE = 5000


def check_mirror_name(name: Any) -> str:
    """A registered mirror's name: 1 to 63 of A-Z a-z 0-9 _ . - (the registry's CHECK)."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValidationFailed(f"mirror name {name!r} must be 1 to 63 of A-Z a-z 0-9 _ . -")
    return name


def _names(label: str, values: Sequence[str] | str | None, *, allow_none: bool) -> list[str] | None:
    if values is None:
        return None if allow_none else []
    if isinstance(values, str):
        values = [values]
    try:
        out = list(values)
    except TypeError:
        raise ValidationFailed(f"{label} must be a list of strings") from None
    for value in out:
        check_name(label, value)
    if allow_none and not out:
        raise ValidationFailed(f"{label}=[] would take nothing: pass None for all")
    return out


def op_register_mirror(
    mirror: Mirror,
    name: str,
    *,
    metadata_fields: Sequence[str] = (),
    namespaces: Sequence[str] | None = None,
    types: Sequence[str] | None = None,
) -> Op:
    """Insert or update the registry row of a mirror (enabled). Returns True if new."""
    if not isinstance(mirror, Mirror):
        raise ValidationFailed(f"add_mirror() takes a Mirror, not {type(mirror).__name__}")
    check_mirror_name(name)
    row = yield Exec(
        q("upsert_mirror"),
        {
            "name": name,
            "kind": mirror.kind,
            "namespaces": _names("namespaces", namespaces, allow_none=True),
            "types": _names("types", types, allow_none=True),
            "metadata_fields": _names("metadata_fields", metadata_fields, allow_none=False),
            "options": json.dumps(mirror.describe(), default=str),
        },
    )
    return bool(row["created"])


def op_mirror_config(name: str) -> Op:
    check_mirror_name(name)
    row = yield Exec(q("mirror_config"), {"name": name})
    if row is None:
        raise NotFound(f"no mirror {name!r} in memstate.mirrors")
    return MirrorConfig.from_row(row)


def op_backfill(
    name: str,
    *,
    page_size: int = DEFAULT_PAGE,
    progress: Callable[[int, int | None], None] | None = None,
) -> Op:
    """Enqueue every live fact in the scope of mirror `name` that has no pending row yet.
    Returns the number of rows enqueued. `progress(scanned, total)` after every page."""
    if page_size < 1:
        raise ValidationFailed("page_size must be at least 1")
    config: MirrorConfig = yield from op_mirror_config(name)
    scope = config.scope_params()
    total = (yield Exec(q("scope_count"), scope))["n"]
    if progress is not None:
        progress(0, total)
    scanned = queued = 0
    start, exclude = NIL_UUID, None
    while True:
        row = yield Exec(
            q("backfill_page"),
            {**scope, "mirror": name, "start": start, "exclude": exclude, "limit": page_size},
        )
        if not row["scanned"]:
            break
        scanned += row["scanned"]
        queued += row["queued"]
        start = exclude = row["last_id"]
        if progress is not None:
            progress(scanned, max(total, scanned))
        if row["scanned"] < page_size:
            break
    if queued:
        yield Exec(q("notify"), None, "none")
    return queued


def op_remove_mirror(name: str) -> Op:
    check_mirror_name(name)
    row = yield Exec(q("delete_mirror"), {"name": name})
    if row is None:
        raise NotFound(f"no mirror {name!r} in memstate.mirrors")


def op_requeue(name: str, *, dead_only: bool = True) -> Op:
    """Make dead rows (and, unless dead_only, rows waiting in backoff) ready again, with
    their attempts reset. Returns how many."""
    yield from op_mirror_config(name)
    row = yield Exec(q("requeue"), {"mirror": name, "dead_only": dead_only})
    if row["n"]:
        yield Exec(q("notify"), None, "none")
    return int(row["n"])


def op_dead_rows(name: str, limit: int = 50) -> Op:
    yield from op_mirror_config(name)
    rows = yield Exec(q("dead_rows"), {"mirror": name, "limit": limit}, "all")
    return rows
