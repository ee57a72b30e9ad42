"""Benchmarks that other parts of the project own, run from the one entry point.

Each is imported lazily and skipped with a note when its module does not exist (yet):
  * benchmarks/langgraph_store.py — our `MemStateStore` (LangGraph BaseStore) against
    LangGraph's `PostgresStore`: put/s, batch put/s, search/s and search p50. Its `main`
    returns per-store medians; each metric becomes a table (baseline: PostgresStore).
A module may instead offer ``run(ctx) -> list[BenchResult]``, which is used as is.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from benchmarks.context import BenchContext
from benchmarks.harness import BenchResult


def load(module: str, name: str, title: str) -> tuple[object | None, list[BenchResult]]:
    """(module, []) or (None, [a skipped result saying why])."""
    try:
        return importlib.import_module(module), []
    except ImportError as exc:
        return None, [
            BenchResult(name, title, "", True, "", skipped=f"{module} not available ({exc})")
        ]


def call_main(mod, ctx: BenchContext, full: list[str], quick: list[str]):
    return mod.main(quick if ctx.quick else full)


def from_medians(
    name: str,
    title: str,
    medians: dict[str, dict[str, float]],
    baseline: str,
    params: dict,
    note: str,
) -> list[BenchResult]:
    """One table per metric from {peer: {metric: median}}; units from the metric name."""
    out = []
    metrics = next(iter(medians.values())).keys()
    for metric in metrics:
        unit = (
            "ms"
            if metric.endswith(" ms")
            else metric.rsplit(" ", 1)[-1]
            if "/" in metric
            else metric
        )
        res = BenchResult(
            f"{name}_{metric.replace(' ', '_').replace('/', '_per_')}",
            f"{title}: {metric}",
            unit,
            not metric.endswith(" ms"),
            "median of runs",
            params=dict(params),
        )
        for peer, figures in medians.items():
            res.add(peer, [figures[metric]], baseline=peer == baseline, runs=params.get("runs", 0))
        res.notes.append(note)
        out.append(res)
    return out


def langgraph_store(ctx: BenchContext) -> list[BenchResult]:
    title = "MemStateStore vs LangGraph PostgresStore (benchmarks/langgraph_store.py)"
    mod, skipped = load("benchmarks.langgraph_store", "langgraph_store", title)
    if mod is None:
        return skipped
    if hasattr(mod, "run"):
        return list(mod.run(ctx))
    runs = ctx.sizes.runs
    full = ["--dsn", ctx.admin_dsn, "--runs", str(runs), "--dims", str(ctx.dim)]
    quick = [
        "--dsn",
        ctx.admin_dsn,
        "--runs",
        "1",
        "--items",
        "50",
        "--queries",
        "20",
        "--dims",
        str(ctx.dim),
    ]
    medians = call_main(mod, ctx, full, quick)
    params = {"runs": 1 if ctx.quick else runs, "dim": ctx.dim, "items": 50 if ctx.quick else 1000}
    return from_medians(
        "langgraph_store",
        title,
        medians,
        "PostgresStore",
        params,
        "figures are medians computed by benchmarks/langgraph_store.py (values: one per table)",
    )


RUNNERS: dict[str, Callable[[BenchContext], list[BenchResult]]] = {
    "langgraph_store": langgraph_store
}


def guarded(name: str, title: str, fn: Callable[[], list[BenchResult]]) -> list[BenchResult]:
    """fn(), or a result marked failed: another owner's benchmark breaking must not take
    ours down with it."""
    import traceback

    try:
        return fn()
    except Exception as exc:  # noqa: BLE001 - reported in the result
        traceback.print_exc()
        return [BenchResult(name, title, "", True, "", skipped=f"failed: {exc!r}")]


def run(ctx: BenchContext) -> list[BenchResult]:
    out: list[BenchResult] = []
    for name, runner in RUNNERS.items():
        if not ctx.sizes.delegate:
            out.append(
                BenchResult(
                    name, name, "", True, "", skipped="not run in quick mode (--delegate to run)"
                )
            )
            continue
        out += guarded(name, name, lambda runner=runner: runner(ctx))
    return out
