"""Retention for long-running agents: compaction of the version log.

`MemoryStore.compact(keep_versions=N, older_than=timedelta(days=30))` (and
`AsyncMemoryStore.compact`, `memstate-pg compact`) keeps the current state of every live
fact, every version newer than the window, the state at the window's start and at least the
N newest versions of each fact; it removes older versions, the history of facts deleted
before the window (their delete version, the tombstone, stays), and the commits left without
any version. Each namespace gets a *horizon* (memstate.compactions): the newest commit made
before the window. Afterwards `as_of(seq)` works for seq >= horizon, `rollback`/`revert` for
commits after it, exactly as before; older points raise `HistoryCompacted` (SQLSTATE MSH01).

The work is done by owner-only SQL functions (sql/functions.sql, "Retention"), batch by
batch, each batch its own short transaction, so writers keep writing and a stopped run simply
starts again (a run re-does nothing that is done). The operation is sans-IO (see
memstate_pg._core.protocol): the stores run it with their runners.
"""

from __future__ import annotations

import re
import time
from datetime import timedelta
from typing import Any

from pydantic import BaseModel

from ._core.checks import check_int
from ._core.ops import ProgressFn, StoreCore
from ._core.protocol import Exec, Op
from .errors import ValidationFailed
from .types import check_name

DEFAULT_BATCH = 2000  # facts (version phase) or commits (commit phase) per transaction
NIL_UUID = "00000000-0000-0000-0000-000000000000"

_UNITS = {"w": 604800, "d": 86400, "h": 3600, "m": 60, "s": 1}
_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*(w|d|h|m|s)")


def parse_duration(text: str) -> timedelta:
    """'30d', '12h', '1d12h', '90m', '45s', '2w' -> timedelta (ValidationFailed otherwise)."""
    compact = str(text).strip().lower().replace(" ", "")
    if not compact or _DURATION.sub("", compact):
        raise ValidationFailed(
            f"{text!r} is not a duration: write e.g. 30d, 12h, 1d12h, 90m, 45s or 2w"
        )
    seconds = sum(float(n) * _UNITS[u] for n, u in _DURATION.findall(compact))
    return timedelta(seconds=seconds)


class NamespaceHorizon(BaseModel):
    namespace: str
    horizon_seq: int
    # dry run only: what the namespace holds in scope and what would go
    facts: int | None = None
    versions: int | None = None
    versions_deleted: int | None = None
    commits_deleted: int | None = None


class CompactReport(BaseModel):
    """What a compaction did (or, with dry_run, would do)."""

    dry_run: bool
    keep_versions: int
    older_than_seconds: float
    namespaces: list[NamespaceHorizon]
    facts_scanned: int = 0
    versions_deleted: int = 0
    vectors_materialised: int = 0
    commits_deleted: int = 0
    dead_outbox_rows: int = 0  # deleted with drop_dead_outbox, else only counted
    dead_outbox_deleted: bool = False
    reembed_staging_deleted: int = 0
    lg_clocks_deleted: int = 0
    seconds: float = 0.0

    @property
    def versions_per_second(self) -> float:
        return self.versions_deleted / self.seconds if self.seconds > 0 else 0.0


def compact(
    core: StoreCore,
    *,
    keep_versions: int,
    older_than: timedelta | str,
    namespace: str | None = None,
    batch_size: int = DEFAULT_BATCH,
    dry_run: bool = False,
    drop_dead_outbox: bool = False,
    progress: ProgressFn | None = None,
) -> Op[CompactReport]:
    """The compaction operation (see the module docstring). `namespace=None`: the store's
    namespace when it is bound to one, else every namespace."""
    check_int("keep_versions", keep_versions, 1, 1_000_000)
    check_int("batch_size", batch_size, 1, 1_000_000)
    window = parse_duration(older_than) if isinstance(older_than, str) else older_than
    if not isinstance(window, timedelta) or window <= timedelta(0):
        raise ValidationFailed("older_than must be a positive duration (timedelta or '30d')")
    if namespace is not None:
        check_name("namespace", namespace)
        ns: str | None = core._ns(namespace)
    else:
        ns = core.namespace
    started = time.monotonic()
    row = yield Exec("SELECT now() - %(window)s::interval AS before", {"window": window})
    before = row["before"]
    report: dict[str, Any] = {
        "dry_run": dry_run,
        "keep_versions": keep_versions,
        "older_than_seconds": window.total_seconds(),
    }
    if dry_run:
        rows = yield Exec(
            "SELECT * FROM memstate.compact_plan(%(ns)s, %(keep)s, %(before)s)",
            {"ns": ns, "keep": keep_versions, "before": before},
            "all",
        )
        plan = [NamespaceHorizon(**r) for r in rows]
        hk = yield Exec(
            "SELECT * FROM memstate.compact_housekeeping(%(ns)s, %(before)s, %(drop)s, true)",
            {"ns": ns, "before": before, "drop": drop_dead_outbox},
        )
        return CompactReport(
            **report,
            namespaces=plan,
            facts_scanned=sum(p.facts or 0 for p in plan),
            versions_deleted=sum(p.versions_deleted or 0 for p in plan),
            commits_deleted=sum(p.commits_deleted or 0 for p in plan),
            dead_outbox_rows=hk["dead_outbox"],
            reembed_staging_deleted=hk["reembed_staging"],
            lg_clocks_deleted=hk["lg_clocks"],
            seconds=time.monotonic() - started,
        )

    # 1. the horizons, committed before anything goes (as_of/undo beyond them are refused)
    rows = yield Exec(
        "SELECT namespace, horizon_seq FROM memstate.compact_begin(%(ns)s, %(keep)s, %(before)s)",
        {"ns": ns, "keep": keep_versions, "before": before},
        "all",
    )
    horizons = [NamespaceHorizon(**r) for r in rows]
    totals = yield Exec(
        "SELECT (SELECT count(DISTINCT v.fact_id) FROM memstate.fact_versions v "
        "        JOIN memstate.compactions h ON h.namespace = v.namespace "
        "        WHERE %(ns)s::text IS NULL OR v.namespace = %(ns)s) AS facts, "
        "       (SELECT count(*) FROM memstate.commits c "
        "        JOIN memstate.compactions h ON h.namespace = c.namespace "
        "        WHERE c.seq <= h.horizon_seq AND (%(ns)s::text IS NULL OR c.namespace = %(ns)s))"
        "       AS commits",
        {"ns": ns},
    )
    total = int(totals["facts"]) + int(totals["commits"])
    done = 0
    if progress is not None:
        progress(0, total)
    facts_scanned = versions_deleted = vectors_materialised = 0

    # 2. versions, batch by batch (each Exec is its own transaction on an autocommit connection)
    after: str | None = NIL_UUID
    while True:
        b = yield Exec(
            "SELECT * FROM memstate.compact_versions(%(ns)s, %(keep)s, %(after)s::uuid, %(n)s)",
            {"ns": ns, "keep": keep_versions, "after": after, "n": batch_size},
        )
        facts_scanned += b["facts"]
        versions_deleted += b["versions_deleted"]
        vectors_materialised += b["vectors_materialised"]
        done += b["facts"]
        if progress is not None:
            progress(min(done, total), max(total, done))
        if b["last_fact"] is None or b["facts"] < batch_size:
            break
        after = str(b["last_fact"])

    # 3. commits left without any version
    commits_deleted = 0
    last_seq = 0
    while True:
        b = yield Exec(
            "SELECT * FROM memstate.compact_commits(%(ns)s, %(after)s, %(n)s)",
            {"ns": ns, "after": last_seq, "n": batch_size},
        )
        commits_deleted += b["commits_deleted"]
        done += b["scanned"]
        if progress is not None:
            progress(min(done, total), max(total, done))
        if b["last_seq"] is None or b["scanned"] < batch_size:
            break
        last_seq = int(b["last_seq"])

    # 4. housekeeping, and the end
    hk = yield Exec(
        "SELECT * FROM memstate.compact_housekeeping(%(ns)s, %(before)s, %(drop)s, false)",
        {"ns": ns, "before": before, "drop": drop_dead_outbox},
    )
    yield Exec("SELECT memstate.compact_finish(%(ns)s)", {"ns": ns}, "none")
    return CompactReport(
        **report,
        namespaces=horizons,
        facts_scanned=facts_scanned,
        versions_deleted=versions_deleted,
        vectors_materialised=vectors_materialised,
        commits_deleted=commits_deleted,
        dead_outbox_rows=hk["dead_outbox"],
        dead_outbox_deleted=drop_dead_outbox,
        reembed_staging_deleted=hk["reembed_staging"],
        lg_clocks_deleted=hk["lg_clocks"],
        seconds=time.monotonic() - started,
    )


def run_compact(dsn: str, **options: Any) -> CompactReport:
    """Compact the database at `dsn` (as its owner) and return the report; for scripts and
    the scale benchmark (`report.seconds`, `report.versions_per_second`). Options as
    `MemoryStore.compact`."""
    from .embedders import HashingEmbedder
    from .store import MemoryStore

    with MemoryStore(dsn, embedder=HashingEmbedder(), min_size=1, max_size=2) as store:
        return store.compact(**options)


__all__ = ["CompactReport", "NamespaceHorizon", "compact", "parse_duration", "run_compact"]
