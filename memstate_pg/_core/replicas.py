"""Read replicas with read-your-writes: the bookkeeping beside the runners.

A store made with `replicas=[dsn, ...]` keeps one pool per PostgreSQL streaming standby.
Reads (`run_read` / `arun_read` in runner.py) go to a replica, writes to the primary:

- After a write transaction of the store commits, the runner asks the primary, on the same
  connection, for ``pg_current_wal_insert_lsn()``: a WAL position at or past the end of the
  commit record. The store keeps the newest such LSN; `write_token` is it as a cookie-safe
  string, so another process can pass it as `after=token` to any read.
- A read needs the replica to have replayed ``max(store's LSN, after)``: the replica's
  ``pg_last_wal_replay_lsn()`` is polled (cheaply, backing off to 20 ms) for at most
  `replica_wait` seconds; past that the read goes to the primary. Once a commit record has
  been replayed, every new snapshot on the standby sees that commit. A probe's answer
  stands for up to a second (half of `replica_max_lag` if less) for reads that need no
  newer position, so a store that does not write pays one extra statement a second.
- A replica that cannot be reached (or whose connection dies under a read) is skipped for
  `DOWN_RETRY` seconds; one whose connections are all in use is passed over ("busy"); one
  that lags more than `replica_max_lag` seconds, one that is not in recovery, and a read
  cancelled by a recovery conflict go to the primary too. Each miss is counted by reason
  (`REASONS`) in `status().replicas`.
- Lag, measured on the standby alone (any role may): 0 while it has replayed all the WAL
  it received, else the age of its last replayed commit; judged once the standby has
  replayed what the read needs. After a primary stood idle, a probe during the replay of
  another process's new commit overstates it: that read goes to the primary (counted as
  lagging), which is safe.

Without replicas none of this runs: a write costs no extra statement.
"""

from __future__ import annotations

import itertools
import re
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import dict_row
from psycopg_pool import ConnectionPool

from ..errors import ValidationFailed
from ..models import MirrorStatus
from .pools import ConnectHealth, make_pool
from .protocol import Exec, Op

#: Why a read did not go to a replica.
REASONS = ("down", "busy", "lagging", "behind", "conflict", "not_standby")

DOWN_RETRY = 5.0  # seconds a replica that could not be reached is left alone

# The WAL insert position after our commit: at or past the commit record's end. When a record
# ends exactly at a page boundary the insert position is reported past the next page's header
# (24 bytes; 40 at a segment's start), a position a standby reaches only with the next record:
# step back over the header so an idle standby that has replayed our commit is not waited for.
RECORD_LSN = (
    "SELECT pg_catalog.pg_current_wal_insert_lsn()::text AS lsn,"
    " pg_catalog.current_setting('wal_block_size')::int AS block,"
    " pg_catalog.pg_size_bytes(pg_catalog.current_setting('wal_segment_size')) AS segment"
)

# On a replica: how far it has replayed, and how old that is while WAL waits to be replayed
# (0 when everything received is replayed; infinity when nothing tells us).
PROBE = """
SELECT pg_catalog.pg_last_wal_replay_lsn()::text AS replay,
       CASE WHEN pg_catalog.pg_last_wal_receive_lsn() IS NULL
                 OR pg_catalog.pg_last_wal_receive_lsn() > pg_catalog.pg_last_wal_replay_lsn()
            THEN coalesce(extract(epoch FROM pg_catalog.clock_timestamp()
                                  - pg_catalog.pg_last_xact_replay_timestamp())::float8,
                          'infinity'::float8)
            ELSE 0 END AS lag
"""

_TOKEN = re.compile(r"^[0-9A-Fa-f]{16}$")
_PG_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")


def lsn_int(text: str) -> int:
    """A pg_lsn's text ('16/B374D848') as an integer."""
    found = _PG_LSN.match(text)
    if found is None:
        raise ValueError(f"not a pg_lsn: {text!r}")
    return (int(found.group(1), 16) << 32) | int(found.group(2), 16)


def format_token(lsn: int) -> str:
    """A write token: the LSN as 16 hex digits (safe in a cookie, a URL, a header)."""
    return f"{lsn:016X}"


def parse_token(token: str | None) -> int:
    """The LSN of a write token (or of a pg_lsn text); 0 for None."""
    if token is None:
        return 0
    if isinstance(token, str):
        token = token.strip()
        if _TOKEN.match(token):
            return int(token, 16)
        if _PG_LSN.match(token):
            return lsn_int(token)
    raise ValidationFailed(
        f"after= takes a write token (16 hex digits, from write_token), not {token!r}"
    )


def commit_lsn(row: dict[str, Any]) -> int:
    """The LSN to wait for, from a RECORD_LSN row (see there)."""
    lsn = lsn_int(row["lsn"])
    block, segment = int(row["block"]), int(row["segment"])
    if segment and lsn % segment == 40:
        return lsn - 40
    if block and lsn % block == 24:
        return lsn - 24
    return lsn


def label(dsn: str) -> str:
    """A replica's name in status(): host:port/dbname (never a password)."""
    try:
        params = conninfo_to_dict(dsn)
    except psycopg.Error:
        return "replica"
    host = params.get("host") or params.get("hostaddr") or "localhost"
    port = params.get("port") or "5432"
    return f"{host}:{port}/{params.get('dbname') or params.get('user') or ''}"


@dataclass
class ReplicaStatus:
    """What one replica did for this store (see `status().replicas`)."""

    name: str
    reads: int = 0  # reads it served
    fallbacks: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    replayed: str | None = None  # the newest replay position seen, as a write token
    lag: float | None = None  # seconds, at the latest probe
    down: bool = False  # skipped now: it could not be reached a moment ago
    last_error: str | None = None


class StoreStatus(dict[str, MirrorStatus]):
    """`status()`: the mirrors by name (a dict, as before) and, for a store with read
    replicas, `replicas` (one ReplicaStatus each) and `primary_reads` (reads that no replica
    could serve, see ReplicaStatus.fallbacks for why)."""

    def __init__(
        self,
        mirrors: dict[str, MirrorStatus],
        replicas: list[ReplicaStatus] | None = None,
        primary_reads: int = 0,
    ) -> None:
        super().__init__(mirrors)
        self.replicas: list[ReplicaStatus] = replicas or []
        self.primary_reads = primary_reads


@dataclass
class Replica:
    """One standby: its pool and what we know of it."""

    name: str
    pool: Any
    owned: bool
    health: ConnectHealth
    reads: int = 0
    fallbacks: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    replayed: int = 0  # newest replay LSN seen (a standby's replay position only grows)
    lag: float | None = None
    checked_at: float = float("-inf")  # monotonic time of the latest good probe
    down_until: float = 0.0
    last_error: str | None = None


def check_settings(wait: float, max_lag: float) -> None:
    if isinstance(wait, bool) or not isinstance(wait, int | float) or not 0 <= wait <= 60:
        raise ValueError("replica_wait must be a number of seconds in [0, 60]")
    if isinstance(max_lag, bool) or not isinstance(max_lag, int | float) or not max_lag > 0:
        raise ValueError("replica_max_lag must be a positive number of seconds")


class ReplicaSet:
    """The replicas of a store, the newest LSN it wrote, the counters. Thread-safe."""

    def __init__(self, replicas: Sequence[Replica], *, wait: float, max_lag: float) -> None:
        check_settings(wait, max_lag)
        self.replicas = list(replicas)
        self.wait = float(wait)
        self.max_lag = float(max_lag)
        # how long a probe's answer stands for reads that need no newer LSN than it saw
        self.check_every = min(1.0, self.max_lag / 2)
        self.written = 0
        self.unrecorded = False  # a write committed but its LSN could not be read
        self.primary_reads = 0
        self._lock = threading.Lock()
        self._turn = itertools.count()

    # -- writes ----------------------------------------------------------------------

    def recorded(self, row: dict[str, Any] | None) -> None:
        """A write committed; `row` is its RECORD_LSN row (None: it could not be read, then
        reads go to the primary until a later write's LSN is known)."""
        with self._lock:
            if row is None:
                self.unrecorded = True
                return
            self.written = max(self.written, commit_lsn(row))
            self.unrecorded = False

    @property
    def token(self) -> str | None:
        return format_token(self.written) if self.written else None

    # -- reads -----------------------------------------------------------------------

    def needed(self, after: str | None) -> int | None:
        """The LSN a read must see (0: none); None when only the primary will do."""
        wanted = parse_token(after)
        with self._lock:
            if self.unrecorded:
                return None
            return max(self.written, wanted)

    def order(self) -> list[Replica]:
        """The replicas to try, in turn (round robin)."""
        n = len(self.replicas)
        start = next(self._turn) % n
        return self.replicas[start:] + self.replicas[:start]

    def fresh(self, replica: Replica, needed: int) -> bool:
        """No probe needed: the latest one saw `needed` replayed and a small lag, lately."""
        return (
            needed <= replica.replayed and time.monotonic() - replica.checked_at < self.check_every
        )

    def probed(self, replica: Replica, row: dict[str, Any] | None, needed: int) -> str | None:
        """Judge a PROBE row: None (read there now), "wait" (it has not replayed `needed`
        yet: probe again until the deadline), or the reason to read elsewhere. Lag is judged
        once `needed` is replayed: while the standby replays our own write, the age of its
        previous commit says nothing about how stale it is."""
        if row is None or row["replay"] is None:
            return "not_standby"
        lag = float(row["lag"])
        with self._lock:
            replica.replayed = max(replica.replayed, lsn_int(row["replay"]))
            replica.lag = lag
            if replica.replayed < needed:
                return "wait"
            if lag > self.max_lag:
                return "lagging"
            replica.checked_at = time.monotonic()
        return None

    def served(self, replica: Replica) -> None:
        with self._lock:
            replica.reads += 1

    def missed(self, replica: Replica, reason: str, error: BaseException | None = None) -> None:
        with self._lock:
            replica.fallbacks[reason] += 1
            if reason == "down":
                replica.down_until = time.monotonic() + DOWN_RETRY
                replica.checked_at = float("-inf")
            if error is not None:
                replica.last_error = " ".join(str(error).split()) or type(error).__name__

    def skipped(self, replica: Replica) -> bool:
        """Left alone: it could not be reached a moment ago (counted as down)."""
        if time.monotonic() < replica.down_until:
            with self._lock:
                replica.fallbacks["down"] += 1
            return True
        return False

    def to_primary(self) -> None:
        with self._lock:
            self.primary_reads += 1

    def status(self, mirrors: dict[str, MirrorStatus]) -> StoreStatus:
        now = time.monotonic()
        with self._lock:
            replicas = [
                ReplicaStatus(
                    name=r.name,
                    reads=r.reads,
                    fallbacks=dict(r.fallbacks),
                    replayed=format_token(r.replayed) if r.replayed else None,
                    lag=r.lag,
                    down=now < r.down_until,
                    last_error=r.last_error,
                )
                for r in self.replicas
            ]
            return StoreStatus(mirrors, replicas, self.primary_reads)


def fence() -> Op[dict[str, Any]]:
    """The primary's WAL position now, as a RECORD_LSN row (see `MemoryStore.fence`)."""
    row = yield Exec(RECORD_LSN)
    return row  # type: ignore[no-any-return]


def make_replicas(
    pool_type: type[Any],
    replicas: Sequence[Any],
    *,
    owner: str,
    configure: Any,
    min_size: int,
    max_size: int,
    ef_search: int | None,
    connect_timeout: float,
    wait: float,
    max_lag: float,
) -> ReplicaSet | None:
    """The store's ReplicaSet (None without replicas): one pool per replica DSN (or the
    caller's pool as it is), with the primary's settings and a short checkout wait, so a
    read passes over a replica that has no connection to give."""
    if isinstance(replicas, str | bytes) or not isinstance(replicas, Sequence):
        raise TypeError(f"{owner}(replicas=...) takes a list of DSNs or pools")
    if not replicas:
        return None
    check_settings(wait, max_lag)  # before any pool exists
    made: list[Replica] = []
    try:
        for i, given in enumerate(replicas):
            health = ConnectHealth(connect_timeout, watched=isinstance(given, str))
            pool, owned, dsn = make_pool(
                pool_type,
                given,
                owner=owner,
                health=health,
                configure=configure,
                min_size=min_size,
                max_size=max_size,
                ef_search=ef_search,
                connect_timeout=connect_timeout,
                name=f"memstate-replica-{i}",
                timeout=max(float(wait), 0.1),
            )
            made.append(Replica(label(dsn) if dsn else f"replica-{i}", pool, owned, health))
    except BaseException:  # a later replica refused: close the sync pools already open
        for r in made:
            if r.owned and isinstance(r.pool, ConnectionPool):
                r.pool.close()
        raise
    return ReplicaSet(made, wait=wait, max_lag=max_lag)


def conflict(exc: BaseException) -> bool:
    """A read cancelled by a recovery conflict on a standby (SQLSTATE class 40)."""
    cause = exc if isinstance(exc, psycopg.Error) else exc.__cause__
    sqlstate = getattr(cause, "sqlstate", None) or getattr(exc, "sqlstate", None)
    return bool(sqlstate) and str(sqlstate).startswith("40")


# --- measuring ----------------------------------------------------------------------


@dataclass(frozen=True)
class ReplicaLag:
    """How far a standby trails its primary (see `replica_lag`)."""

    bytes: int  # WAL the primary had written that the standby had not replayed yet
    seconds: float  # until the standby had replayed the primary's position of that moment


def replica_lag(
    primary: psycopg.Connection[Any], replica: psycopg.Connection[Any], *, timeout: float = 30
) -> ReplicaLag:
    """Measure replay lag now: the primary's WAL insert position, the replica's replay
    position at that moment (the difference in bytes), then the time until the replica has
    replayed the primary's position (polled every millisecond; `timeout` caps it, then
    TimeoutError). Both connections in autocommit mode; any role may run it. For the scale
    benchmark: call it while a commit load runs."""
    with primary.cursor(row_factory=dict_row) as cur:
        row = cur.execute(RECORD_LSN).fetchone()
    assert row is not None
    target = commit_lsn(row)
    started = time.monotonic()
    first: int | None = None
    while True:
        with replica.cursor(row_factory=dict_row) as cur:
            got = cur.execute(PROBE).fetchone()
        text = got["replay"] if got else None
        if text is None:
            raise ValueError("the replica connection is not to a standby in recovery")
        replayed = lsn_int(text)
        if first is None:
            first = replayed
        if replayed >= target:
            return ReplicaLag(max(0, target - first), time.monotonic() - started)
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"the replica did not replay {format_token(target)} in {timeout} s")
        time.sleep(0.001)


__all__ = [
    "REASONS",
    "Replica",
    "ReplicaLag",
    "ReplicaSet",
    "ReplicaStatus",
    "StoreStatus",
    "commit_lsn",
    "fence",
    "format_token",
    "parse_token",
    "replica_lag",
]
