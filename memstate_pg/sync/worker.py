"""SyncWorker: feeds mirrors from the transactional outbox.

One *batch* is one Postgres transaction on one mirror (see sql/sync_queries.sql):

1. claim the longest-ready rows ``FOR UPDATE SKIP LOCKED`` and try the lock of each of their
   facts (a row of memstate.sync_slots, ``FOR UPDATE SKIP LOCKED``); rows of a fact another
   worker or a repair holds are left alone, and the claim moves on past them (a few rounds),
   so a busy fact never stalls the queue behind it. Only memstate_sync may lock those rows:
   a tenant can neither take a fact's lock nor hold up a batch;
2. weigh the facts (bytes, computed by the server): the batch takes them in order up to
   ``max_batch_bytes`` (always the first), the rest waits for the next batch, and a fact
   larger than ``max_record_bytes`` is never read: its rows are parked dead with the reason;
3. read the *current* state of the facts taken (after the locks are held), so ten changes
   of one fact become one write of its latest version, and a fact that is gone becomes a
   delete;
4. write the mirror in its native batch size (bisecting a failed chunk, see apply.py);
5. delete the rows the mirror acknowledged, back off the others (exponential, with jitter;
   dead after ``max_attempts``), advance ``last_synced_seq``; COMMIT (without waiting for
   the WAL flush: an acknowledgement lost in a server crash only means a re-delivery).

Every step before COMMIT can die (SIGKILL, a lost connection): the transaction aborts, the
locks vanish, the rows are claimable again, and re-sending the current state is
idempotent. Any number of workers, in threads or processes, can run side by side.
The worker's connections run with ``search_path = pg_catalog, pg_temp``.

``run_forever`` LISTENs on channel ``memstate_outbox`` (the outbox trigger NOTIFYs it once
per writing statement) on a dedicated autocommit connection and falls back to polling every
``poll_interval`` seconds, so a lost notification costs latency, never data. Notifications
that arrived before a cycle starts are consumed by it (the cycle sees their rows), so only
a NOTIFY sent after that wakes the worker again. Anyone may NOTIFY the channel: beyond a
burst of ``WAKE_BURST``, cycles woken that way that find nothing are ``wake_interval``
apart (a token bucket), and a NOTIFY with rows behind it is served at once.
Scheduled reconciliations run beside the batches, in a thread, and always end.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg
from psycopg_pool import ConnectionPool

from ..errors import NotFound, ValidationFailed
from ..mirrors.base import Mirror
from . import outbox
from .apply import changes_for, read_states, write_changes
from .outbox import MAX_BATCH_BYTES, MAX_RECORD_BYTES, MirrorConfig

__all__ = ["BatchStats", "SyncWorker"]

log = logging.getLogger("memstate_pg.sync")

CHANNEL = "memstate_outbox"
# Errors that mean "the database is unreachable right now" (restart, network, pool
# timeout): the loops wait and retry. Anything else is a bug and propagates.
_CONNECTION_ERRORS = (psycopg.OperationalError, psycopg.InterfaceError)
DEFAULT_BATCH = 500  # when neither batch_size nor a mirror limit below it is given
CONFIG_TTL = 2.0  # seconds a mirror's registry row is cached
BUSY_WAIT = 0.02  # pause when the only ready rows belong to facts another worker holds
PIN_SEARCH_PATH = "SET search_path = pg_catalog, pg_temp"
STOP_EVENT_CHECK = 0.1  # how often the watcher thread of run_forever(stop_event) looks
RECONCILE_JOIN = 5.0  # seconds run_forever waits for a scheduled reconciliation to stop
WAKE_INTERVAL = 0.05  # at least this long between cycles woken by NOTIFY that found nothing
WAKE_BURST = 2  # ... beyond this many in a row (a token bucket: one token per wake_interval)
CLAIM_ROUNDS = 3  # claims per batch when facts held elsewhere leave it short


@dataclass(slots=True)
class BatchStats:
    """What one batch (or one cycle over all mirrors) did, in outbox rows."""

    claimed: int = 0  # rows claimed and locked by this worker
    acked: int = 0  # rows deleted after the mirror acknowledged
    failed: int = 0  # rows backed off (dead ones included)
    dead: int = 0  # rows parked as dead
    busy: int = 0  # rows left alone: their fact is being written by another worker

    def add(self, other: BatchStats) -> None:
        self.claimed += other.claimed
        self.acked += other.acked
        self.failed += other.failed
        self.dead += other.dead
        self.busy += other.busy


class SyncWorker:
    """Applies outbox rows to mirrors. See the module docstring for the protocol.

    `mirrors`: a dict name -> Mirror; or a list of names (looked up with
    ``store.mirror(name)``) and of Mirror objects registered with `store`; or None for
    ``store.mirrors()`` (else every enabled mirror of the registry that can be rebuilt from
    its options). The worker opens its own small connection pool on
    ``store.dsn`` (or `dsn`), so it never competes with the application for connections.
    """

    def __init__(
        self,
        store: Any,
        mirrors: Mapping[str, Mirror] | Sequence[str | Mirror] | Mirror | None = None,
        *,
        batch_size: int | None = None,
        max_attempts: int = 8,
        backoff_base: float = 0.5,
        backoff_max: float = 60.0,
        poll_interval: float = 1.0,
        reconcile_every: float | None = None,
        reconcile_timeout: float = 300.0,
        worker_id: str | None = None,
        dsn: str | None = None,
        max_batch_bytes: int = MAX_BATCH_BYTES,
        max_record_bytes: int = MAX_RECORD_BYTES,
        wake_interval: float = WAKE_INTERVAL,
    ) -> None:
        if batch_size is not None and batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        if backoff_base < 0 or backoff_max < 0:
            raise ValueError("backoff_base and backoff_max must not be negative")
        if poll_interval <= 0:
            raise ValueError("poll_interval must be positive")
        if reconcile_every is not None and reconcile_every <= 0:
            raise ValueError("reconcile_every must be positive")
        if reconcile_timeout <= 0:
            raise ValueError("reconcile_timeout must be positive")
        if max_batch_bytes < 1 or max_record_bytes < 1:
            raise ValueError("max_batch_bytes and max_record_bytes must be positive")
        if wake_interval < 0:
            raise ValueError("wake_interval must not be negative")
        self.store = store
        self.dsn: str = dsn or store.dsn
        self.batch_size = batch_size
        self.max_attempts = max_attempts
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.poll_interval = poll_interval
        self.reconcile_every = reconcile_every
        self.reconcile_timeout = reconcile_timeout
        self.max_batch_bytes = max_batch_bytes
        self.max_record_bytes = max_record_bytes
        self.wake_interval = wake_interval
        self.worker_id = (
            worker_id or f"{socket.gethostname()}:{os.getpid()}:{id(self) & 0xFFFF:04x}"
        )
        self._mirror_spec = mirrors
        self._mirrors: dict[str, Mirror] | None = None
        self._pool: ConnectionPool | None = None
        self._configs: dict[str, tuple[float, MirrorConfig]] = {}
        self._paused: dict[str, float] = {}  # mirror -> monotonic time it may be tried again
        self._next_reconcile: dict[str, float] = {}
        self._reconciler: threading.Thread | None = None
        self._stop = threading.Event()
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._closed = False

    # -- setup ----------------------------------------------------------------------------

    @property
    def mirrors(self) -> dict[str, Mirror]:
        """The mirrors this worker feeds, by registered name."""
        if self._mirrors is None:
            self._mirrors = self._resolve_mirrors()
        return self._mirrors

    def _resolve_mirrors(self) -> dict[str, Mirror]:
        spec = self._mirror_spec
        if isinstance(spec, Mapping):
            found = dict(spec)
        else:
            if spec is None:
                own = store_mirrors(self.store)
                if own:
                    return own
                with self._connection() as conn:
                    names = [n for n, c in outbox.load_configs(conn).items() if c.enabled]
                found = {}
                for name in names:  # every registered mirror this process can reach
                    try:
                        found[name] = lookup_mirror(self.store, name)
                    except NotFound as exc:
                        log.warning("not syncing %s: %s", name, exc)
            else:
                found = {}
                for item in [spec] if isinstance(spec, str | Mirror) else list(spec):
                    if isinstance(item, Mirror):
                        found[name_of(self.store, item)] = item
                    else:
                        found[item] = lookup_mirror(self.store, item)
        if not found:
            raise ValidationFailed(
                "no mirrors to sync: register one with add_mirror() (memstate-pg mirror add), "
                "or pass mirrors= (--mirror NAME=KIND:LOCATION)"
            )
        with self._connection() as conn:
            registered = outbox.load_configs(conn)
        unknown = sorted(set(found) - set(registered))
        if unknown:
            raise NotFound(
                f"mirror(s) {unknown} are not registered in memstate.mirrors: add_mirror() first"
            )
        return found

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        if self._closed:
            raise RuntimeError("this SyncWorker is closed")
        if self._pool is None:
            self._pool = ConnectionPool(
                self.dsn,
                min_size=1,
                max_size=3,  # batches, and a scheduled reconciliation beside them
                kwargs={"autocommit": True, "application_name": self._app_name("batch")},
                configure=_pin_search_path,
                check=ConnectionPool.check_connection,
                open=True,
                name=f"memstate-sync-{self.worker_id}",
            )
        with self._pool.connection() as conn:
            yield conn

    def _app_name(self, role: str) -> str:
        """application_name of the worker's connections (visible in pg_stat_activity)."""
        return f"memstate-sync {self.worker_id} {role}"[-63:]

    def close(self) -> None:
        """Close the worker's connections. A running `run_forever` is asked to stop first."""
        self.stop()
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        if not self._closed:
            self._closed = True
            os.close(self._wake_r)
            os.close(self._wake_w)

    def __enter__(self) -> SyncWorker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- one batch ------------------------------------------------------------------------

    def _config(self, conn: psycopg.Connection, name: str) -> MirrorConfig | None:
        cached = self._configs.get(name)
        now = time.monotonic()
        if cached is not None and now - cached[0] < CONFIG_TTL:
            return cached[1]
        config = outbox.load_config(conn, name)
        if config is None:
            self._configs.pop(name, None)
        else:
            self._configs[name] = (now, config)
        return config

    def _limit(self, mirror: Mirror) -> int:
        if self.batch_size is not None:
            return self.batch_size
        try:
            return max(1, min(int(mirror.max_batch_size), DEFAULT_BATCH))
        except Exception:  # the mirror cannot tell right now (server down): the batch fails anyway
            return DEFAULT_BATCH

    def process_batch(self, name: str) -> BatchStats:
        """Claim, apply and acknowledge one batch of mirror `name` (one transaction)."""
        stats = BatchStats()
        mirror = self.mirrors[name]
        limit = self._limit(mirror)
        with self._connection() as conn, conn.transaction():
            config = self._config(conn, name)
            if config is None or not config.enabled:
                return stats
            conn.execute(outbox.q("batch_settings"))
            mine, stats.busy = self._claim(conn, name, limit)
            if not mine:
                return stats
            fact_ids = list(dict.fromkeys(r.fact_id for r in mine))
            take, oversize = self._weigh(conn, fact_ids)
            parked = [r.id for r in mine if r.fact_id in oversize]
            for fid, size in oversize.items():
                outbox.park(
                    conn,
                    [r.id for r in mine if r.fact_id == fid],
                    f"fact {fid} is {size} bytes, more than this worker takes "
                    f"(max_record_bytes={self.max_record_bytes}): raise the limit and requeue",
                )
            mine = [r for r in mine if r.fact_id in take]  # the rest waits for the next batch
            stats.claimed = len(mine) + len(parked)
            states = read_states(conn, list(take))
            outcome = write_changes(mirror, changes_for(config, list(take), states))
            del states
            acked = [r.id for r in mine if str(r.fact_id) in outcome.ok]
            failures = {
                r.id: outcome.failed[str(r.fact_id)]
                for r in mine
                if str(r.fact_id) in outcome.failed
            }
            outbox.ack(conn, name, acked)
            result = outbox.fail(
                conn,
                failures,
                max_attempts=self.max_attempts,
                backoff_base=self.backoff_base,
                backoff_max=self.backoff_max,
            )
        stats.acked = len(acked)
        stats.failed = len(failures) + len(parked)
        stats.dead = result.dead + len(parked)
        if parked:
            log.warning(
                "mirror %s: %d row(s) of %d fact(s) larger than max_record_bytes=%d parked dead",
                name,
                len(parked),
                len(oversize),
                self.max_record_bytes,
            )
        if failures:
            log.warning(
                "mirror %s: %d row(s) failed (%d dead), %d acked: %s",
                name,
                len(failures),
                result.dead,
                len(acked),
                next(iter(outcome.failed.values())),
            )
            if not acked:  # nothing got through: the mirror is likely down, let it breathe
                self._paused[name] = time.monotonic() + result.min_delay
        return stats

    def _claim(
        self, conn: psycopg.Connection, name: str, limit: int
    ) -> tuple[list[outbox.ClaimedRow], int]:
        """Claim up to `limit` ready rows whose facts this batch could lock; returns them and
        the number of rows left alone because another writer holds their fact. A fact held
        elsewhere does not stall the queue: the claim moves on past it (a few rounds)."""
        mine: list[outbox.ClaimedRow] = []
        seen: list[UUID] = []
        busy = 0
        want = limit
        for _ in range(CLAIM_ROUNDS):
            rows = outbox.claim(conn, name, want, seen)
            if not rows:
                break
            new = list(dict.fromkeys(r.fact_id for r in rows))
            held = outbox.lock_facts(conn, name, new)
            seen.extend(new)
            for r in rows:
                if r.fact_id in held:
                    mine.append(r)
                else:
                    busy += 1
            if len(rows) < want or len(mine) >= limit:
                break
            want = limit - len(mine)
        return mine, busy

    def _weigh(
        self, conn: psycopg.Connection, fact_ids: list[UUID]
    ) -> tuple[dict[UUID, int], dict[UUID, int]]:
        """Split the facts of a batch into those it takes (in order, until max_batch_bytes;
        the first always) and those larger than max_record_bytes; the others wait."""
        sizes = outbox.fact_sizes(conn, fact_ids)  # deleted facts are absent: nothing to read
        take: dict[UUID, int] = {}
        oversize: dict[UUID, int] = {}
        total = 0
        for fid in fact_ids:
            size = sizes.get(fid, 0)
            if size > self.max_record_bytes:
                oversize[fid] = size
            elif not take or total + size <= self.max_batch_bytes:
                take[fid] = size
                total += size
        return take, oversize

    def _active(self) -> list[str]:
        now = time.monotonic()
        return [n for n in self.mirrors if self._paused.get(n, 0.0) <= now]

    def _cycle(self) -> BatchStats:
        total = BatchStats()
        for name in self._active():
            total.add(self.process_batch(name))
        return total

    def run_once(self) -> int:
        """Process one batch per mirror; returns the number of outbox rows acknowledged."""
        return self._cycle().acked

    # -- drain ----------------------------------------------------------------------------

    def pending(self) -> outbox.Pending:
        """Rows of this worker's mirrors that are not dead: how many, how many ready now."""
        with self._connection() as conn:
            return outbox.pending(conn, list(self.mirrors))

    def drain(self, timeout: float = 30.0) -> bool:
        """Work until no row of this worker's mirrors is left but dead ones. Rows in backoff
        are waited for. Returns False if `timeout` seconds pass first."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                stats = self._cycle()
                if (stats.acked or stats.failed) and time.monotonic() < deadline:
                    continue
                left = self.pending()
            except _CONNECTION_ERRORS as exc:  # Postgres restarting: wait and retry
                log.warning("drain: database unavailable (%s); retrying", exc)
                left = None
            if left is not None and left.pending == 0:
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            if left is None:
                pause = 0.2
            elif left.ready:  # locked by another worker, or this worker paused the mirror
                unpause = min(self._paused.values(), default=0.0) - time.monotonic()
                pause = max(BUSY_WAIT, min(unpause, 0.5))
            else:
                pause = min(left.next_in or BUSY_WAIT, 0.5)
            time.sleep(max(0.001, min(pause, remaining)))

    # -- run forever ----------------------------------------------------------------------

    def stop(self) -> None:
        """Ask `run_forever` to return after the batch in progress (thread- and signal-safe)."""
        self._stop.set()
        if not self._closed:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"x")

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def run_forever(self, stop_event: threading.Event | None = None) -> None:
        """Sync until `stop()`, `stop_event`, SIGTERM or SIGINT (the last two when called
        from the main thread). The batch in progress is finished, then connections close.
        A stop is final (even one that came before this call): start a new worker to resume.

        Idle, the worker runs a cycle when a NOTIFY arrives or every `poll_interval`
        seconds; beyond a burst of WAKE_BURST, cycles woken by NOTIFY that find nothing are
        at least `wake_interval` apart, so anyone who can NOTIFY the channel cannot make it
        spin, while a NOTIFY after an idle moment is served at once. Scheduled
        reconciliations (`reconcile_every`) run in a thread of their own, bounded by
        `reconcile_timeout`: they never hold up the batches of any mirror."""
        restore = self._install_signals()
        unwatch = self._watch(stop_event)
        listener: psycopg.Connection | None = None
        db_backoff = 0.1
        tokens, refilled = float(WAKE_BURST), time.monotonic()  # empty NOTIFY wakes allowed
        notified = False  # whether a NOTIFY woke the cycle about to run
        log.info("sync worker %s started for %s", self.worker_id, ", ".join(self.mirrors))
        try:
            while not self._should_stop(stop_event):
                try:
                    if listener is None:
                        listener = psycopg.connect(
                            self.dsn, autocommit=True, application_name=self._app_name("listen")
                        )
                        listener.execute(PIN_SEARCH_PATH)
                        listener.execute(f"LISTEN {CHANNEL}")
                    else:  # what was sent so far, this cycle sees: only later ones wake us
                        listener, _ = self._wait(listener, 0.0)
                    stats = self._cycle()
                    self._maybe_reconcile()
                    db_backoff = 0.1
                except _CONNECTION_ERRORS as exc:
                    log.warning(
                        "sync worker %s: database unavailable (%s); retrying", self.worker_id, exc
                    )
                    _close_quietly(listener)
                    listener = None
                    self._sleep(db_backoff, stop_event)
                    db_backoff = min(db_backoff * 2, 5.0)
                    continue
                if stats.acked or stats.failed:
                    notified = False
                    continue  # more may be waiting: look again before sleeping
                if notified:  # a NOTIFY woke a cycle that found nothing: spend a token
                    tokens -= 1.0
                timeout = BUSY_WAIT if stats.busy else self._idle_timeout()
                listener, notified = self._wait(listener, timeout)
                if notified and self.wake_interval > 0:
                    now = time.monotonic()
                    tokens = min(float(WAKE_BURST), tokens + (now - refilled) / self.wake_interval)
                    refilled = now
                    if tokens < 1.0:  # empty NOTIFY wakes in a row: do not spin on them
                        self._sleep((1.0 - tokens) * self.wake_interval, stop_event)
        finally:
            unwatch()
            _close_quietly(listener)
            self._join_reconciler()
            restore()
            log.info("sync worker %s stopped", self.worker_id)

    def _should_stop(self, stop_event: threading.Event | None) -> bool:
        return self._stop.is_set() or (stop_event is not None and stop_event.is_set())

    def _watch(self, stop_event: threading.Event | None) -> Callable[[], None]:
        """Turn `stop_event` into stop() (which wakes the loop at once) from a thread, so the
        loop itself sleeps for its whole poll_interval. Returns what ends the watch."""
        if stop_event is None:
            return lambda: None
        done = threading.Event()

        def watch() -> None:
            while not done.is_set():
                if stop_event.wait(STOP_EVENT_CHECK):
                    self.stop()
                    return

        thread = threading.Thread(target=watch, name=f"memstate-sync-stop-{self.worker_id}")
        thread.daemon = True
        thread.start()

        def unwatch() -> None:
            done.set()
            thread.join(1.0)

        return unwatch

    def _idle_timeout(self) -> float:
        timeout = self.poll_interval
        now = time.monotonic()
        wakes = [t for t in self._paused.values() if t > now]
        if wakes:
            timeout = min(timeout, min(wakes) - now)
        if self.reconcile_every is not None and self._next_reconcile:
            timeout = min(timeout, min(self._next_reconcile.values()) - now)
        return max(0.0, timeout)

    def _wait(
        self, listener: psycopg.Connection | None, timeout: float
    ) -> tuple[psycopg.Connection | None, bool]:
        """Sleep until a NOTIFY, `stop()`, or `timeout`. Returns the listener (None if lost)
        and whether a NOTIFY woke it."""
        fds = [self._wake_r] + ([listener.fileno()] if listener is not None else [])
        try:
            readable, _, _ = select.select(fds, [], [], timeout)
        except (OSError, ValueError):
            _close_quietly(listener)
            return None, False
        if self._wake_r in readable:
            with contextlib.suppress(BlockingIOError, OSError):
                os.read(self._wake_r, 4096)
        notified = False
        if listener is not None and listener.fileno() in readable:
            try:
                for _ in listener.notifies(timeout=0):
                    notified = True
            except psycopg.Error:
                _close_quietly(listener)
                return None, False
        return listener, notified

    def _sleep(self, seconds: float, stop_event: threading.Event | None) -> None:
        end = time.monotonic() + seconds
        while not self._should_stop(stop_event):
            left = end - time.monotonic()
            if left <= 0:
                return
            self._wait(None, left)  # stop() (and so stop_event, see _watch) wakes it

    def _install_signals(self) -> Callable[[], None]:
        """SIGTERM/SIGINT -> stop(), in the main thread only; returns what restores them."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        previous: dict[signal.Signals, Any] = {}

        def handler(signum: int, frame: object) -> None:
            log.info(
                "sync worker %s: %s received, stopping", self.worker_id, signal.Signals(signum).name
            )
            self.stop()

        for sig in (signal.SIGTERM, signal.SIGINT):
            previous[sig] = signal.signal(sig, handler)

        def restore() -> None:
            for sig, old in previous.items():
                signal.signal(sig, old)

        return restore

    # -- scheduled reconciliation ---------------------------------------------------------

    def _maybe_reconcile(self) -> None:
        """Start the reconciliations that are due, in a thread (one at a time)."""
        if self.reconcile_every is None or self._should_stop(None):
            return
        if self._reconciler is not None and self._reconciler.is_alive():
            return
        now = time.monotonic()
        due = [n for n in self.mirrors if self._next_reconcile.setdefault(n, now) <= now]
        if not due:
            return
        for name in due:
            self._next_reconcile[name] = now + self.reconcile_every
        self._reconciler = threading.Thread(
            target=self._reconcile_due,
            args=(due,),
            name=f"memstate-reconcile-{self.worker_id}",
            daemon=True,  # a mirror call that never returns must not keep the process alive
        )
        self._reconciler.start()

    def _reconcile_due(self, names: list[str]) -> None:
        for name in names:
            if self.stopping:
                return
            try:
                self.reconcile_if_due(name)
            except Exception as exc:  # the database went away: the next schedule retries
                log.warning("scheduled reconcile of %s failed: %s", name, exc)

    def _join_reconciler(self) -> None:
        thread = self._reconciler
        if thread is not None and thread is not threading.current_thread():
            thread.join(RECONCILE_JOIN)
            if thread.is_alive():
                log.warning(
                    "sync worker %s: a reconciliation is stuck in a mirror call; leaving it",
                    self.worker_id,
                )

    def reconcile_if_due(self, name: str) -> Any:
        """Reconcile mirror `name` unless another process did (or started to) within
        `reconcile_every` seconds. Returns the ReconcileReport, or None if skipped.

        Bounded: at most `reconcile_timeout` seconds, the pages the mirror's count()
        announces, and it stops between two pages when the worker is stopping."""
        from .reconcile import reconcile

        every = self.reconcile_every or 0.0
        with self._connection() as conn:
            config = outbox.load_config(conn, name)
            if config is None:
                return None
            if config.reconciled_ago is not None and config.reconciled_ago < every:
                return None
            leased = conn.execute(
                outbox.q("claim_reconcile"), {"mirror": name, "every": every}
            ).fetchone()
            if leased is None:
                return None  # another worker took it a moment ago
        try:
            report = reconcile(
                self._connection,
                name,
                self.mirrors[name],
                repair=True,
                timeout=self.reconcile_timeout,
                should_stop=lambda: self.stopping,
            )
        except Exception as exc:  # a failed check must not stop syncing
            log.warning("scheduled reconcile of %s failed: %s", name, exc)
            return None
        log.info("reconciled %s: %s", name, report)
        return report


def _pin_search_path(conn: psycopg.Connection) -> None:
    """Nothing the worker runs resolves a name through a schema a tenant could create in
    (its queries are qualified too; this covers what they call in turn)."""
    conn.execute(PIN_SEARCH_PATH)


def _close_quietly(conn: psycopg.Connection | None) -> None:
    if conn is not None:
        with contextlib.suppress(Exception):
            conn.close()


def store_mirrors(store: Any) -> dict[str, Mirror]:
    """The Mirror objects registered with `store` in this process."""
    getter = getattr(store, "mirrors", None)
    return dict(getter()) if callable(getter) else dict(getattr(store, "_mirrors", None) or {})


def name_of(store: Any, mirror: Mirror) -> str:
    """The name `mirror` (the object itself) is registered under with `store`."""
    names = [n for n, m in store_mirrors(store).items() if m is mirror]
    if len(names) != 1:
        where = (
            f"is registered as each of {names}" if names else "is not registered with this store"
        )
        raise NotFound(
            f"{mirror!r} {where}: pass mirrors={{name: mirror}}, or names"
            + ("" if names else " (store.add_mirror(mirror, name) registers it)")
        )
    return names[0]


def lookup_mirror(store: Any, name: str) -> Mirror:
    getter = getattr(store, "mirror", None)
    if callable(getter):
        return getter(name)
    found = (getattr(store, "_mirrors", None) or {}).get(name)
    if found is None:
        raise NotFound(f"no mirror {name!r} in this process: pass mirrors={{name: Mirror}}")
    return found
