"""Search served by a mirror, judged by Postgres (`search(q, via=name)`), under a running
writer and a lagging sync worker.

Per mirror (Qdrant local mode, Chroma local persistent): a database of `n` notes
(hashing vectors), the mirror registered and synced, then for `mixed_seconds` per run:

* a writer thread updates random notes (new text: a new vector), deletes some and adds
  new ones, one commit at a time, as fast as it can;
* a slow worker thread syncs 10 rows a second: the mirror lags further
  behind every second;
* the reader runs each query three ways, same vector, same moment: the mirror's own query
  (what a reader of the mirror alone gets), `search(vec, via=mirror)` (judged) and the
  plain pgvector `search(vec)`.

Reported: latency per query of the three (ms, pooled over the runs) and the share of stale
hits corrected. A hit (fact, version) is *stale* when the writer's commit of a newer
version, or of the delete, had returned before the query started (so any snapshot the
query takes must see it). The mirror-only answers are scored that way too: that is the
stale share a mirror-only reader would get. Target: no stale hit in a judged answer
(100 % corrected).
"""

from __future__ import annotations

import importlib
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from benchmarks import data
from benchmarks.context import BenchContext
from benchmarks.harness import BenchResult
from benchmarks.peers import PeerUnavailable
from memstate_pg import Fact, HashingEmbedder, MemoryStore
from memstate_pg.mirrors import ChromaMirror, Mirror, QdrantMirror
from memstate_pg.sync import SyncWorker

K = 10
DELETED = 1 << 30  # the "version" a delete gives a fact in the writer's log
WORKER_BATCH = 10
WORKER_PAUSE = 1.0  # seconds between the slow worker's batches


def run(ctx: BenchContext) -> list[BenchResult]:
    n = max(200, ctx.sizes.small // 2)
    queries = max(10, ctx.sizes.queries // 2)
    mirrors: list[tuple[str, str, str, Callable[[str], Mirror]]] = [
        (
            "judged_qdrant",
            "Qdrant local",
            "qdrant_client",
            lambda tmp: QdrantMirror.from_location(":memory:", "judged"),
        ),
        (
            "judged_chroma",
            "Chroma local",
            "chromadb",
            lambda tmp: ChromaMirror.from_path(tmp, "judged"),
        ),
    ]
    results = []
    for name, label, module, make in mirrors:
        res = BenchResult(
            name,
            f"Search via {label}, judged by Postgres ({n:,} facts, writer + lagging worker)",
            "ms",
            False,
            "per query",
            params={
                "facts": n,
                "k": K,
                "dim": ctx.dim,
                "queries_per_run": queries,
                "seconds_per_run": ctx.sizes.mixed_seconds,
                "runs": ctx.sizes.runs,
                "worker": f"{WORKER_BATCH} rows per {WORKER_PAUSE}s",
            },
        )
        try:
            importlib.import_module(module)
            _one(ctx, res, label, make, n, queries)
        except (ImportError, PeerUnavailable) as exc:
            res.skipped = f"{label}: {exc}"
        results.append(res)
    return results


class Log:
    """The writer's commits: fact id -> [(version, perf_counter when the commit returned)]."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.changes: dict[str, list[tuple[int, float]]] = {}

    def record(self, fid: str, version: int) -> None:
        t = time.perf_counter()
        with self.lock:
            self.changes.setdefault(fid, []).append((version, t))

    def stale(self, fid: str, version: int, started: float) -> bool:
        """A newer version (or the delete) of `fid` was committed before `started`."""
        with self.lock:
            return any(v > version and t < started for v, t in self.changes.get(fid, ()))


def _writer(
    mem: MemoryStore,
    ids: list[str],
    log: Log,
    nq: int,
    seed: int,
    stop: threading.Event,
    errors: list[BaseException],
    writes: list[int],
) -> None:
    """Commit changes one by one until `stop`: 70% updates (a new text, so a new vector),
    15% deletes, 15% new facts."""
    rng = random.Random(seed)
    try:
        while not stop.is_set():
            writes[0] += 1
            roll = rng.random()
            fid = rng.choice(ids)
            text = f"{data.query_text(rng.randrange(nq))} #{seed}.{writes[0]}"
            if roll < 0.7:
                log.record(fid, int(mem.update(fid, {"payload": {"text": text}})))
            elif roll < 0.85:
                mem.delete(fid)
                log.record(fid, DELETED)
                ids.remove(fid)
            else:
                ids.append(str(mem.commit(Fact(type="note", payload={"text": text}))))
    except BaseException as exc:  # noqa: BLE001 - re-raised by the reader
        errors.append(exc)


def _slow_worker(mem: MemoryStore, stop: threading.Event, errors: list[BaseException]) -> None:
    """A sync worker that falls behind: one small batch every WORKER_PAUSE seconds."""
    try:
        with SyncWorker(mem, ["m"], batch_size=WORKER_BATCH) as slow:
            while not stop.wait(WORKER_PAUSE):
                slow.run_once()
    except BaseException as exc:  # noqa: BLE001 - re-raised by the reader
        errors.append(exc)


def _one(
    ctx: BenchContext,
    res: BenchResult,
    label: str,
    make: Callable[[str], Mirror],
    n: int,
    nq: int,
) -> None:
    import tempfile

    emb = HashingEmbedder(dim=ctx.dim)
    qvecs = [list(map(float, v)) for v in emb.embed([data.query_text(j) for j in range(nq)])]
    lat: dict[str, list[float]] = {"pgvector": [], "mirror": [], "via": []}
    totals = dict.fromkeys(
        ("mirror_hits", "mirror_stale", "via_hits", "via_stale", "corrected", "from_outbox"), 0
    )
    totals.update(from_pgvector=0, fallbacks=0, lag_end=0, writes=0)
    with (
        tempfile.TemporaryDirectory(prefix="judged-") as tmp,
        ctx.database(f"judged_{label.split()[0].lower()}") as dsn,
        MemoryStore(dsn, embedder=emb, min_size=1, max_size=4) as mem,
    ):
        mirror = make(tmp)
        ctx.log(f"judged/{label}: loading {n:,} notes…")
        ids = []
        for start in range(0, n, 500):
            batch = [
                Fact(type="note", payload={"text": data.fact_text("judged", i)})
                for i in range(start, min(n, start + 500))
            ]
            ids += [str(f) for f in mem.commit_many(batch)]
        mem.add_mirror(mirror, "m")
        with SyncWorker(mem, ["m"], batch_size=500) as w:
            if not w.drain(600):
                raise PeerUnavailable("the initial sync did not finish")
        log = Log()
        for r in range(-1, ctx.sizes.runs):
            measured = r >= 0
            stop = threading.Event()
            errors: list[BaseException] = []

            writes = [0]
            threads = [
                threading.Thread(target=_writer, args=(mem, ids, log, nq, r, stop, errors, writes)),
                threading.Thread(target=_slow_worker, args=(mem, stop, errors)),
            ]
            for t in threads:
                t.start()
            deadline = time.perf_counter() + ctx.sizes.mixed_seconds
            q = 0
            while time.perf_counter() < deadline or q == 0:
                vec = qvecs[q % nq]
                q += 1
                t0 = time.perf_counter()
                alone = mirror.query(vec, K, namespace="default")
                t1 = time.perf_counter()
                via = mem.search(vec, k=K, via="m")
                t2 = time.perf_counter()
                mem.search(vec, k=K)
                t3 = time.perf_counter()
                if not measured:
                    continue
                lat["mirror"].append((t1 - t0) * 1000)
                lat["via"].append((t2 - t1) * 1000)
                lat["pgvector"].append((t3 - t2) * 1000)
                totals["mirror_hits"] += len(alone)
                totals["mirror_stale"] += sum(log.stale(h.fact_id, h.version, t0) for h in alone)
                totals["via_hits"] += len(via)
                totals["via_stale"] += sum(
                    log.stale(str(h.fact.id), h.fact.version, t1) for h in via
                )
                report: dict[str, Any] = via.report()  # type: ignore[attr-defined]
                totals["corrected"] += report["corrected"]
                totals["from_outbox"] += report["from_outbox"]
                totals["from_pgvector"] += report["from_pgvector"]
                totals["fallbacks"] += report["fallback"] is not None
            stop.set()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
            if measured:
                totals["writes"] += writes[0]
                totals["lag_end"] = max(totals["lag_end"], mem.status()["m"].pending)
        mirror.close()
    suffix = f" ({label})"
    res.add("pgvector search", lat["pgvector"], baseline=True, runs=ctx.sizes.runs)
    res.add(f"{label} query alone", lat["mirror"], runs=ctx.sizes.runs)
    res.add(f"search(via={label.split()[0]}), judged", lat["via"], runs=ctx.sizes.runs)
    stale_alone, stale_via = totals["mirror_stale"], totals["via_stale"]
    share = 1.0 - stale_via / stale_alone if stale_alone else None
    res.target(
        f"stale hits corrected{suffix}",
        share,
        "100% (no stale hit in a judged answer)",
        stale_via == 0,
    )
    if label.startswith("Qdrant"):
        res.notes.append(
            "Qdrant runs in local in-process mode (numpy, payload filters evaluated in "
            "Python, calls serialised with the worker's writes): not a Qdrant server's speed"
        )
    res.notes.append(
        f"{label}: mirror alone served {stale_alone} stale hits of {totals['mirror_hits']} "
        f"({stale_alone / max(1, totals['mirror_hits']):.1%}); judged answers: {stale_via} stale "
        f"of {totals['via_hits']}; candidates corrected {totals['corrected']}, hits from the "
        f"outbox lag {totals['from_outbox']}, from pgvector {totals['from_pgvector']}, "
        f"fallbacks {totals['fallbacks']}; {totals['writes']} writes, outbox backlog at the "
        f"end of a run up to {totals['lag_end']} rows"
    )
