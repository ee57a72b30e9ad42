"""Reconciliation: compare a mirror with Postgres by (fact_id, version), and repair drift.

Two passes, each over pages of `page_size` ids, so memory stays O(page_size) whatever the
number of facts (across pages only counters are kept, and the ids of ghosts found, to
count each once when pass 2 rescans; at most 100,000 of those):

1. **Postgres -> mirror.** Keyset pages (by fact_id) over the live facts in the mirror's
   scope; ``mirror.versions(ids)`` tells which are *missing* (absent) or *stale* (another
   version).
2. **Mirror -> Postgres.** ``mirror.scan_tagged(page_size)`` pages over every point; ids
   that are not live in Postgres, or live but outside the mirror's namespaces/types, are
   *ghosts*. Points tagged with another mirror's name (two mirrors sharing a collection)
   are left alone.

A run always ends: the scan may take the pages ``mirror.count()`` announced plus a margin,
the run at most `timeout` seconds, and it stops between pages when `should_stop()` says so.

Every difference is re-read from Postgres before it is counted, so a change that
committed while the page was being compared (and that the worker is delivering) is not
reported as drift. Differences still in flight at that moment are counted and repaired,
which is harmless: repairs are idempotent.

Repairs do not fight the sync worker: they go through the same per-fact lock
(try-lock: a fact a worker holds right now is left to it) and write the fact's *current*
state, read under the lock, exactly like a worker batch. So a repair can never put an older
version over a newer one.

Deleting ghosts while scanning can make an offset-paged scan (Chroma) skip points that
moved up; when a pass deleted anything, pass 2 runs again (up to 3 times), counting only
ghosts it has not counted before.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

import psycopg
from psycopg.rows import dict_row

from .._core.checks import check_mirror_name
from ..errors import NotFound, PermissionDenied
from ..mirrors.base import Mirror
from ..models import ReconcileReport
from . import outbox
from .apply import changes_for, read_states, write_changes
from .outbox import MAX_RECORD_BYTES, NIL_UUID, MirrorConfig, q

__all__ = ["ConnectionFactory", "Progress", "reconcile", "repair_facts"]

ConnectionFactory = Callable[[], contextlib.AbstractContextManager[psycopg.Connection]]
Progress = Callable[[int, "int | None"], None]

MAX_RESCANS = 3
GHOST_MEMORY = 100_000  # ghost ids remembered to avoid double counts across rescans

log = logging.getLogger("memstate_pg.sync")


class _Stop(Exception):
    """A reconciliation cut short (budget, deadline or stop flag); the text says which."""


def _rows(conn: psycopg.Connection, name: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    with conn.cursor(row_factory=dict_row) as cur:
        cur.execute(q(name), params)
        return cur.fetchall()


def _as_uuid(value: str) -> UUID | None:
    """The fact id a mirror id stands for; None unless it is a UUID in canonical form (the
    only form the worker writes; anything else was put there by someone else)."""
    try:
        parsed = UUID(value)
    except (ValueError, TypeError, AttributeError):
        return None
    return parsed if str(parsed) == value else None


def repair_facts(
    conn: psycopg.Connection,
    config: MirrorConfig,
    mirror: Mirror,
    fact_ids: Sequence[UUID],
    *,
    max_record_bytes: int = MAX_RECORD_BYTES,
) -> set[str]:
    """Make the mirror hold the current state of `fact_ids` (upsert live facts in scope,
    delete the others), under the worker's per-fact locks. Facts a worker holds right now,
    and facts larger than `max_record_bytes`, are skipped. Returns the ids the mirror
    acknowledged."""
    if not fact_ids:
        return set()
    with conn.transaction():
        held = outbox.lock_facts(conn, config.name, list(fact_ids))
        sizes = outbox.fact_sizes(conn, [f for f in fact_ids if f in held])
        locked = [f for f in fact_ids if f in held and sizes.get(f, 0) <= max_record_bytes]
        if not locked:
            return set()
        states = read_states(conn, locked)
        outcome = write_changes(mirror, changes_for(config, locked, states))
    return outcome.ok


def reconcile(
    connect: ConnectionFactory,
    name: str,
    mirror: Mirror,
    *,
    repair: bool = True,
    page_size: int = 1000,
    progress: Progress | None = None,
    timeout: float | None = None,
    should_stop: Callable[[], bool] | None = None,
) -> ReconcileReport:
    """Compare mirror `name` with Postgres and (with `repair`) fix what differs.

    `connect()` yields an *autocommit* psycopg connection (each repair is its own short
    transaction). `progress(done, total)` is called after every page; `total` counts the
    live facts in scope plus the mirror's points (None if the mirror cannot count). The
    report is also stored in memstate.mirrors (last_reconciled_at, last_reconcile).

    A reconciliation always ends: the scan of the mirror may take as many pages as its
    count() announced (plus a margin), the whole run at most `timeout` seconds, and it
    stops between two pages once `should_stop()` is true. A run cut short returns (and
    stores) what it found so far, and logs why.
    """
    if page_size < 1:
        raise ValueError("page_size must be at least 1")
    if timeout is not None and timeout <= 0:
        raise ValueError("timeout must be positive")
    check_mirror_name(name)
    started = time.perf_counter()
    deadline = None if timeout is None else time.monotonic() + timeout
    with connect() as conn:
        config = outbox.load_config(conn, name)
        if config is None:
            raise NotFound(f"no mirror {name!r} in memstate.mirrors")
        _require_full_sight(conn, name)
        run = _Reconciliation(
            conn,
            config,
            mirror,
            repair=repair,
            page_size=page_size,
            progress=progress,
            deadline=deadline,
            should_stop=should_stop,
        )
        try:
            run.postgres_to_mirror()
            run.mirror_to_postgres()
        except _Stop as stop:
            run.stopped = str(stop)
            log.warning("reconcile of %s stopped early: %s", name, stop)
        run.report.seconds = round(time.perf_counter() - started, 6)
        if run.stopped is not None and "stopped" in type(run.report).model_fields:
            run.report.stopped = run.stopped
        conn.execute(q("save_reconcile"), {"name": name, "report": run.report.model_dump_json()})
    return run.report


class _Reconciliation:
    """The state of one reconciliation: counters, progress, and the ghosts already seen."""

    def __init__(
        self,
        conn: psycopg.Connection,
        config: MirrorConfig,
        mirror: Mirror,
        *,
        repair: bool,
        page_size: int,
        progress: Progress | None,
        deadline: float | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> None:
        self.conn = conn
        self.deadline = deadline
        self.should_stop = should_stop
        self.stopped: str | None = None
        self.points: int | None = None  # the mirror's count(), for the scan's page budget
        self.config = config
        self.mirror = mirror
        self.repair = repair
        self.page_size = page_size
        self.progress = progress
        self.report = ReconcileReport(mirror=config.name)
        self.scope = config.scope_params()
        self.done = 0
        self.total: int | None = _rows(conn, "scope_count", self.scope)[0]["n"]
        self._add_mirror_count()

    def _add_mirror_count(self) -> None:
        try:
            self.points = self.mirror.count()
        except Exception:  # the mirror cannot count: a bar without a total, no page budget
            self.points = None
        if self.total is not None:
            self.total = None if self.points is None else self.total + self.points

    def _check(self) -> None:
        """Between two pages: stop when asked to, or when the time is up."""
        if self.should_stop is not None and self.should_stop():
            raise _Stop("asked to stop")
        if self.deadline is not None and time.monotonic() > self.deadline:
            raise _Stop("out of time")

    def _scan_budget(self) -> int | None:
        """Pages one scan may take: what count() announced, plus a margin for points
        written meanwhile. A scan that goes on past it is not a scan of this mirror."""
        if self.points is None or self.points < 0:
            return None
        pages = math.ceil(self.points / self.page_size)
        return pages + max(2, pages // 2)

    def _tick(self, n: int) -> None:
        self.done += n
        if self.total is not None and self.done > self.total:
            self.total = self.done
        if self.progress is not None:
            self.progress(self.done, self.total)

    def postgres_to_mirror(self) -> None:
        """Pass 1: every live fact in scope, against the version the mirror holds."""
        start, exclude = NIL_UUID, None
        while True:
            self._check()
            rows = _rows(
                self.conn,
                "live_page",
                {**self.scope, "start": start, "exclude": exclude, "limit": self.page_size},
            )
            if not rows:
                return
            start = exclude = rows[-1]["fact_id"]
            expected = {str(r["fact_id"]): r["version"] for r in rows}
            held = self.mirror.versions(list(expected))
            self.report.checked += len(rows)
            differing = [UUID(fid) for fid, v in expected.items() if held.get(fid) != v]
            if differing:
                drift = self._confirm(differing, held)
                if self.repair:
                    self.report.repaired += len(
                        repair_facts(self.conn, self.config, self.mirror, drift)
                    )
            self._tick(len(rows))
            if len(rows) < self.page_size:
                return

    def _confirm(self, differing: list[UUID], held: dict[str, int]) -> list[UUID]:
        """Re-read the differing facts; count and return those that still differ."""
        fresh = {r["fact_id"]: r for r in _rows(self.conn, "live_versions", {"ids": differing})}
        drift = []
        for fid in differing:
            now = fresh.get(fid)
            if now is None or not self.config.in_scope(
                now["namespace"], now["type"], now["embedding_model"]
            ):
                continue  # deleted meanwhile: pass 2 (or the worker) deals with its point
            seen = held.get(str(fid))
            if seen is None:
                self.report.missing += 1
            elif seen != now["version"]:
                self.report.stale += 1
            else:
                continue  # the worker delivered it meanwhile
            drift.append(fid)
        return drift

    def mirror_to_postgres(self) -> None:
        """Pass 2: every point of the mirror, against the live facts in scope (ghosts)."""
        counted: dict[str, bool] = {}  # ghost id -> repaired, at most GHOST_MEMORY of them
        for _ in range(MAX_RESCANS):
            deleted = 0
            budget = self._scan_budget()
            for n, tagged in enumerate(self.mirror.scan_tagged(self.page_size), 1):
                if budget is not None and n > budget:
                    raise _Stop(
                        f"the scan went past {budget} pages while the mirror counts "
                        f"{self.points} points"
                    )
                self._check()
                # the points of another mirror sharing the collection are not ours to judge
                page = [(f, v) for f, v, tag in tagged if tag is None or tag == self.config.name]
                ghosts, foreign = _ghosts(self.conn, self.config, [fid for fid, _ in page])
                found = [*ghosts, *foreign]
                new = [g for g in found if g not in counted]
                self.report.checked += len(new)
                self.report.ghosts += len(new)
                todo = [g for g in found if not counted.get(g)]
                fixed: set[str] = set()
                if self.repair and todo:
                    fixed = repair_facts(
                        self.conn,
                        self.config,
                        self.mirror,
                        [UUID(g) for g in todo if g not in foreign],
                    )
                    fixed |= _delete_foreign(self.mirror, [g for g in todo if g in foreign])
                    self.report.repaired += len(fixed)
                    deleted += len(fixed)
                if len(counted) < GHOST_MEMORY:
                    counted.update((g, g in fixed or counted.get(g, False)) for g in found)
                self._tick(len(tagged))
            if not deleted or len(counted) >= GHOST_MEMORY:
                return
            self._add_mirror_count()  # deleting may have hidden points from an offset scan


def _require_full_sight(conn: psycopg.Connection, name: str) -> None:
    """Under Row Level Security (sql/rls.sql) a role that cannot see every namespace the
    mirror covers would take the points of the others for ghosts and delete them: refuse."""
    row = conn.execute(
        "SELECT pg_catalog.to_regprocedure('memstate.can_reconcile(text)')"
    ).fetchone()
    assert row is not None, "SELECT without FROM returns one row"
    if row[0] is None:
        return  # RLS was never installed
    row = conn.execute("SELECT memstate.can_reconcile(%s::text)", [name]).fetchone()
    assert row is not None, "SELECT without FROM returns one row"
    if not row[0]:
        raise PermissionDenied(
            f"this role cannot see every namespace mirror {name!r} covers: reconcile it "
            "with a role granted them all (see SECURITY.md)"
        )


def _ghosts(
    conn: psycopg.Connection, config: MirrorConfig, ids: list[str]
) -> tuple[list[str], set[str]]:
    """Split a page of mirror ids into ghosts with a UUID (not live, or out of scope) and
    foreign ids that can never be a fact (not a UUID)."""
    parsed = {fid: _as_uuid(fid) for fid in ids}
    foreign = {fid for fid, u in parsed.items() if u is None}
    wanted = [u for u in parsed.values() if u is not None]
    live = (
        {r["fact_id"]: r for r in _rows(conn, "live_versions", {"ids": wanted})} if wanted else {}
    )
    ghosts = []
    for fid, u in parsed.items():
        if u is None:
            continue
        row = live.get(u)
        if row is None or not config.in_scope(
            row["namespace"], row["type"], row["embedding_model"]
        ):
            ghosts.append(fid)
    return ghosts, foreign


def _delete_foreign(mirror: Mirror, ids: list[str]) -> set[str]:
    """Delete points whose id is not a fact id (planted by another tool). Best effort."""
    fixed = set()
    for fid in ids:
        with contextlib.suppress(Exception):
            mirror.delete([fid])
            fixed.add(fid)
    return fixed
