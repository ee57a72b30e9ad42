"""The drift experiment: naive dual write vs memstate-pg's outbox, under injected faults.

Both sides apply the same workload — creates, then *updates and deletes* of those facts —
while the vector store misbehaves: a call fails before writing, fails after writing (the
write landed but the call raised), times out, the store is down for a stretch, or the
process doing the vector writes dies mid-way.

* **naive dual write**: write Postgres, commit, then write the vector store; an error is
  logged and the app moves on (what most agent code does). A crash between the two writes
  skips the vector write.
* **memstate-pg**: `MemoryStore.commit/delete` (one transaction with the outbox row), and
  a `SyncWorker` running alongside, then `drain()`. A crash is a worker whose database
  sessions are terminated at random instants (`pg_terminate_backend`: its claim
  transactions die mid-batch, exactly as with SIGKILL) — or, for a mirror other processes
  can reach, a real `memstate-pg sync` process killed with SIGKILL.

Afterwards the mirror is compared with Postgres **by id and version**, not by count:
missing (live in Postgres, absent from the mirror), stale (present at another version),
ghosts (in the mirror, not live in Postgres); lost writes are acknowledged writes that
Postgres does not hold; time to converge is from the end of the workload until the mirror
holds exactly the live set.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import psycopg
from pydantic import BaseModel

from ..embedders import HashingEmbedder
from ..errors import MemStateError
from ..mirrors import FlakyMirror, Mirror, MirrorRecord
from ..models import Constraint, Fact
from ..store import MemoryStore


@dataclass(frozen=True)
class Scenario:
    name: str
    fail_before: float = 0.0
    fail_after: float = 0.0
    timeout: float = 0.0
    down_stretch: bool = False  # the mirror is down for the middle third of the workload
    crash: bool = False  # the process writing the mirror dies at random instants


SCENARIOS = (
    Scenario("fail before write", fail_before=0.2),
    Scenario("fail after write", fail_after=0.2),
    Scenario("timeout", timeout=0.2),
    Scenario("down a while", down_stretch=True),
    Scenario("killed mid-batch", crash=True),
)


@dataclass
class Outcome:
    approach: str
    scenario: str
    facts_in_postgres: int = 0
    points_in_mirror: int = 0
    missing: int = 0
    stale: int = 0
    ghosts: int = 0
    lost_writes: int = 0
    converge_seconds: float | None = None  # None: never (no mechanism to converge)
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def drift(self) -> int:
        return self.missing + self.stale + self.ghosts


class Item(BaseModel):
    key: str
    text: str


def workload(n: int, updates: int, deletes: int, seed: int = 7) -> list[tuple[str, str, str]]:
    """(op, key, text): n creates, then updates and deletes of those keys, shuffled."""
    rng = random.Random(seed)
    ops = [("put", f"k{i}", f"memory {i} about topic {i % 17}") for i in range(n)]
    live = [f"k{i}" for i in range(n)]
    tail: list[tuple[str, str, str]] = []
    for j in range(updates + deletes):
        if not live:
            break
        key = rng.choice(live)
        if j < deletes:
            live.remove(key)
            tail.append(("delete", key, ""))
        else:
            tail.append(("put", key, f"{key} revised {j}: topic {rng.randrange(17)}"))
    rng.shuffle(tail)
    # a delete of an already deleted key is dropped; a put after a delete re-creates it
    return ops + tail


def compare(expected: Mapping[str, int | None], mirror: Mirror) -> tuple[int, int, int, int]:
    """(missing, stale, ghosts, points) of `mirror` against {fact_id: version}."""
    seen: dict[str, int] = {}
    for page in mirror.scan(1000):
        seen.update(page)
    missing = sum(1 for k in expected if k not in seen)
    stale = sum(1 for k, v in expected.items() if k in seen and seen[k] != v)
    ghosts = sum(1 for k in seen if k not in expected)
    return missing, stale, ghosts, len(seen)


def _flaky(inner: Mirror, sc: Scenario, seed: int) -> FlakyMirror:
    return FlakyMirror(
        inner,
        fail_before=sc.fail_before,
        fail_after=sc.fail_after,
        timeout=sc.timeout,
        timeout_seconds=0.02,
        seed=seed,
    )


def _down_window(sc: Scenario, i: int, total: int) -> bool:
    return sc.down_stretch and total // 3 <= i < 2 * total // 3


# --- naive dual write ------------------------------------------------------------------


def run_naive(
    dsn: str,
    mirror: Mirror,
    sc: Scenario,
    ops: list[tuple[str, str, str]],
    *,
    seed: int = 1,
    embedder: HashingEmbedder | None = None,
) -> Outcome:
    emb = embedder or HashingEmbedder(dim=64)
    flaky = _flaky(mirror, sc, seed)
    rng = random.Random(seed)
    out = Outcome("naive", sc.name)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE SCHEMA IF NOT EXISTS naive")
        conn.execute("DROP TABLE IF EXISTS naive.facts")
        conn.execute(
            "CREATE TABLE naive.facts (key text PRIMARY KEY, id uuid NOT NULL, version int NOT NULL,"
            " text text NOT NULL)"
        )
        for i, (op, key, text) in enumerate(ops):
            flaky.set_down(_down_window(sc, i, len(ops)))
            if op == "put":
                row = conn.execute(
                    "INSERT INTO naive.facts AS f (key, id, version, text) VALUES (%s, %s, 1, %s) "
                    "ON CONFLICT (key) DO UPDATE SET version = f.version + 1, text = excluded.text "
                    "RETURNING id, version",
                    (key, uuid.uuid4(), text),
                ).fetchone()
                assert row is not None, "an upsert with RETURNING returns its row"
            else:
                row = conn.execute(
                    "DELETE FROM naive.facts WHERE key = %s RETURNING id, version", (key,)
                ).fetchone()
                if row is None:
                    continue
            if sc.crash and rng.random() < 0.1:
                continue  # the process died after COMMIT, before the vector write
            try:
                if op == "put":
                    flaky.upsert(
                        [
                            MirrorRecord(
                                str(row[0]),
                                row[1],
                                "bench",
                                "item",
                                emb.embed([text])[0],
                                emb.model,
                                text,
                                {"key": key},
                            )
                        ]
                    )
                else:
                    flaky.delete([str(row[0])])
            except (MemStateError, TimeoutError, OSError):
                out.extra["errors_swallowed"] = out.extra.get("errors_swallowed", 0) + 1
        flaky.set_down(False)
        expected = {str(r[0]): r[1] for r in conn.execute("SELECT id, version FROM naive.facts")}
    out.facts_in_postgres = len(expected)
    out.missing, out.stale, out.ghosts, out.points_in_mirror = compare(expected, mirror)
    out.converge_seconds = 0.0 if out.drift == 0 else None
    return out


# --- memstate-pg ---------------------------------------------------------------------


@contextmanager
def _session_killer(
    dsn: str, application_name: str, *, every: float, seed: int
) -> Iterator[dict[str, int]]:
    """Terminates the worker's database sessions at random instants: its open claim
    transaction dies mid-batch, as if the process had been SIGKILLed."""
    stop = threading.Event()
    stats = {"kills": 0}
    rng = random.Random(seed)

    def loop():
        with psycopg.connect(dsn, autocommit=True) as conn:
            while not stop.wait(rng.uniform(0.3, 1.7) * every):
                row = conn.execute(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                    "WHERE application_name = %s AND pid <> pg_backend_pid()",
                    (application_name,),
                ).fetchone()
                assert row is not None, "an aggregate without GROUP BY returns one row"
                n = row[0]
                stats["kills"] += int(bool(n))

    thread = threading.Thread(target=loop, daemon=True)
    thread.start()
    try:
        yield stats
    finally:
        stop.set()
        thread.join(timeout=10)


def _with_app_name(dsn: str, name: str) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(dsn, application_name=name)


def run_memstate(
    dsn: str,
    mirror: Mirror,
    sc: Scenario,
    ops: list[tuple[str, str, str]],
    *,
    seed: int = 1,
    embedder: HashingEmbedder | None = None,
    mirror_spec: str | None = None,
    converge_timeout: float = 120.0,
) -> Outcome:
    """`mirror_spec` (NAME=KIND:LOCATION, see memstate_pg.sync.specs): for the crash
    scenario, run the worker as a real `memstate-pg sync` process and SIGKILL it."""
    from ..sync import SyncWorker

    emb = embedder or HashingEmbedder(dim=64)
    flaky = _flaky(mirror, sc, seed)
    out = Outcome("memstate-pg", sc.name)
    mem = MemoryStore(dsn, embedder=emb, max_size=2)
    mem.register_schema("item", Item, constraint=Constraint(singleton_key="key"), text_field="text")
    name = "bench"
    ns = f"bench-{uuid.uuid4().hex[:8]}"  # each run starts from an empty namespace
    mem.add_mirror(flaky, name=name, metadata_fields=["key"], namespaces=[ns], backfill=False)
    acked: dict[str, tuple[str, int]] = {}  # key -> (fact id, version) the caller was told
    app = f"memstate-bench-worker-{os.getpid()}"
    worker = SyncWorker(
        mem,
        {name: flaky},
        poll_interval=0.2,
        backoff_base=0.05,
        backoff_max=0.5,
        max_attempts=1000,
        dsn=_with_app_name(dsn, app),
    )
    stop = threading.Event()
    proc_kill = sc.crash and mirror_spec is not None
    thread = None
    if not proc_kill:
        thread = threading.Thread(target=_run_worker, args=(worker, stop), daemon=True)
        thread.start()
    killer = _session_killer(dsn, app, every=0.1, seed=seed) if sc.crash and not proc_kill else None
    kstats = killer.__enter__() if killer else None
    procs = _ProcessKiller(dsn, mirror_spec, seed) if proc_kill else None
    try:
        for i, (op, key, text) in enumerate(ops):
            flaky.set_down(_down_window(sc, i, len(ops)))
            if procs:
                procs.tick(i)
            if op == "put":
                fid = mem.commit(
                    Fact(type="item", payload={"key": key, "text": text}), namespace=ns
                )
                acked[key] = (str(fid), 0)
            elif key in acked:
                try:
                    mem.delete(acked.pop(key)[0])
                except MemStateError:
                    pass
        flaky.set_down(False)
    finally:
        if killer is not None and kstats is not None:
            killer.__exit__(None, None, None)
            out.extra["sessions_killed"] = kstats["kills"]
        if procs:
            out.extra["processes_killed"] = procs.finish()
    t0 = time.perf_counter()
    stop.set()
    if thread:
        thread.join(timeout=30)
    drained = worker.drain(timeout=converge_timeout)
    expected = {str(f.id): f.version for f in mem.query(namespace=ns)}
    out.converge_seconds = time.perf_counter() - t0 if drained else None
    worker.close()
    # lost writes: the caller was told a key holds a fact that Postgres does not have
    out.lost_writes = sum(1 for fid, _ in acked.values() if fid not in expected)
    out.facts_in_postgres = len(expected)
    out.missing, out.stale, out.ghosts, out.points_in_mirror = compare(expected, mirror)
    out.extra["faults"] = dict(flaky.faults)
    mem.remove_mirror(name)
    mem.close()
    return out


def _run_worker(worker: Any, stop: threading.Event) -> None:
    while not stop.is_set():
        try:
            worker.run_once()
        except Exception:  # a terminated session: the worker's next batch reconnects
            time.sleep(0.05)
        stop.wait(0.02)


class _ProcessKiller:
    """Runs `memstate-pg sync` as a separate process and SIGKILLs it at random points."""

    def __init__(self, dsn: str, spec: str | None, seed: int) -> None:
        self.dsn, self.spec, self.rng, self.kills = dsn, spec, random.Random(seed), 0
        self.proc = self._start()

    def _start(self) -> subprocess.Popen:
        return subprocess.Popen(
            [
                sys.executable,
                "-m",
                "memstate_pg",
                "sync",
                "--dsn",
                self.dsn,
                "--mirror",
                str(self.spec),
                "--poll-interval",
                "0.2",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def tick(self, i: int) -> None:
        if i and i % 40 == 0:
            time.sleep(self.rng.uniform(0.0, 0.3))  # let it get mid-batch
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.kills += 1
            self.proc = self._start()

    def finish(self) -> int:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        return self.kills + 1


def run_all(
    dsn: str,
    mirrors: dict[str, Callable[[], tuple[Mirror, str | None]]],
    *,
    n: int,
    updates: int,
    deletes: int,
    scenarios=SCENARIOS,
    seed: int = 7,
    progress: Callable[[str], None] | None = None,
) -> list[dict[str, Any]]:
    """Every scenario on every mirror, both approaches. `mirrors`: label -> factory
    returning (a fresh empty Mirror, its spec for other processes or None)."""
    ops = workload(n, updates, deletes, seed)
    rows = []
    for label, factory in mirrors.items():
        for sc in scenarios:
            if progress:
                progress(f"{label}: {sc.name}")
            m, _ = factory()
            naive = run_naive(dsn, m, sc, ops, seed=seed)
            m.close()
            m, spec = factory()
            ours = run_memstate(dsn, m, sc, ops, seed=seed, mirror_spec=spec)
            m.close()
            rows.append({"mirror": label, "scenario": sc.name, "naive": naive, "memstate": ours})
    return rows


def outcome_table(rows: list[dict[str, Any]], title: str):
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col in (
        "mirror",
        "fault",
        "approach",
        "in Postgres",
        "in mirror",
        "missing",
        "stale",
        "ghosts",
        "lost writes",
        "converged",
    ):
        table.add_column(col, justify="left" if col in ("mirror", "fault", "approach") else "right")
    for r in rows:
        for o in (r["naive"], r["memstate"]):
            bad = "[red]" if o.drift else "[green]"
            table.add_row(
                r["mirror"],
                r["scenario"],
                o.approach,
                str(o.facts_in_postgres),
                str(o.points_in_mirror),
                f"{bad}{o.missing}",
                f"{bad}{o.stale}",
                f"{bad}{o.ghosts}",
                str(o.lost_writes),
                "never" if o.converge_seconds is None else f"{o.converge_seconds:.2f} s",
            )
    return table
