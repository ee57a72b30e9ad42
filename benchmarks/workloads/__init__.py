"""The workloads of `python -m benchmarks`, by name, in run order.

Each is a module with ``run(ctx: BenchContext) -> list[BenchResult]``, imported only when
it runs. Order matters a little: the read-only workloads share the bulk-loaded datasets,
and the ones that write (mixed) get their own databases.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

WORKLOADS: dict[str, str] = {
    "commits": "benchmarks.workloads.commits",
    "search": "benchmarks.workloads.search",
    "filtered": "benchmarks.workloads.filtered",
    "pernamespace": "benchmarks.workloads.pernamespace",
    "mixed": "benchmarks.workloads.mixed",
    "sync": "benchmarks.workloads.sync",
    "reconcile": "benchmarks.workloads.reconcile",
    "delegated": "benchmarks.workloads.delegated",
    "judged": "benchmarks.workloads.judged",
    "scale": "benchmarks.workloads.scale",
}
ON_REQUEST = frozenset({"scale"})
"""Workloads that run only when named (--only): `scale` loads two 1M-fact databases."""


def runner(name: str) -> Callable:
    return importlib.import_module(WORKLOADS[name]).run
