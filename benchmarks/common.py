"""Shared pieces of the benchmarks: a database to run on, timing statistics, tables."""

from __future__ import annotations

import os
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table

console = Console(width=120)


@contextmanager
def bench_database(name: str):
    """A fresh database named `name` on $MEMSTATE_DSN's server, else on an embedded server
    in a temporary directory. Yields its DSN; drops it afterwards."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    admin = os.environ.get("MEMSTATE_DSN")
    tmp = None
    if not admin:
        from memstate_pg import embedded

        tmp = tempfile.mkdtemp(prefix="memstate-bench-")
        admin = embedded.start(tmp)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    params = conninfo_to_dict(admin)
    params["dbname"] = name
    try:
        yield make_conninfo(**params)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
        if tmp:
            from memstate_pg import embedded

            embedded.stop(tmp)


def server_versions(dsn: str) -> dict[str, str]:
    with psycopg.connect(dsn) as conn:
        pg = conn.execute("SHOW server_version").fetchone()[0]
        vec = conn.execute(
            "SELECT extversion FROM pg_extension WHERE extname = 'vector'"
        ).fetchone()
    return {"postgresql": pg, "pgvector": vec[0] if vec else "?"}


def timed(fn: Callable[[], int]) -> float:
    """Runs fn (which returns how many operations it did) and returns operations/s."""
    t0 = time.perf_counter()
    n = fn()
    return n / (time.perf_counter() - t0)


def summary(values: Sequence[float]) -> dict[str, float]:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return {
        "median": statistics.median(ordered),
        "p95": p95,
        "min": ordered[0],
        "max": ordered[-1],
        "runs": len(ordered),
    }


def rate_table(
    title: str, rows: list[tuple[str, dict[str, float], float | None]], unit: str
) -> Table:
    table = Table(title=title, title_justify="left")
    for col in ("", f"median {unit}", "min", "max", "runs", "ratio to baseline"):
        table.add_column(col, justify="right" if col else "left")
    for label, s, ratio in rows:
        table.add_row(
            label,
            f"{s['median']:,.0f}",
            f"{s['min']:,.0f}",
            f"{s['max']:,.0f}",
            str(s["runs"]),
            "baseline" if ratio is None else f"{ratio:.2f}x",
        )
    return table
