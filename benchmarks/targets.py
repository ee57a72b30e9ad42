"""The performance targets (issue 15), declared once, and their verdicts on a run's results.

Each `Target` names the series it measures by the label its workload gives it, the series
it is divided by (the baseline measured in the same run) or none for an absolute figure,
the goal and its direction, and the conditions the figure must be measured under (tie-aware
recall@10, number of interleaved runs, data sizes). `evaluate` gives every target one of:

* ``met`` / ``not met`` — measured under the target's conditions;
* ``not run`` — its workload did not run, or did not produce the series (never "met");
* ``no verdict`` — measured, but not under the conditions (quick mode, fewer runs, other
  sizes): the figure is shown, the verdict is not given.

`python -m benchmarks` prints the table at the end of a run and stores it in the JSON and
in RESULTS.md; `python -m benchmarks --targets` runs only the workloads these rows need.
Ratios are ``median(series) / median(baseline)`` of the series' own unit, so for a rate
(commits/s) "≥ 0.9" means at least 0.9 times as fast, and for a latency (ms) "≤ 1.2" means
at most 1.2 times as slow.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from benchmarks.harness import BenchResult, Series, workload_of

MET, NOT_MET, NOT_RUN, NO_VERDICT = "met", "not met", "not run", "no verdict"
STATUSES = (MET, NOT_MET, NOT_RUN, NO_VERDICT)

OPS: dict[str, Callable[[float, float], bool]] = {
    ">=": operator.ge,
    "<=": operator.le,
    ">": operator.gt,
    "<": operator.lt,
}
SYMBOL = {">=": "≥", "<=": "≤", ">": ">", "<": "<"}
RECALL_EPS = 1e-9  # "recall 1.0" is a mean of 1.0s; no rounding may turn it into a miss


@dataclass(frozen=True)
class Target:
    """One row of the target table.

    The figure is `series`'s `stat` (over its pooled values), divided by `baseline`'s when a
    baseline is named; or, with `param`, a value read from the result's params by that path
    (for delegated benchmarks that report figures, not series). `result` is the
    BenchResult's name; None means the first result holding `series` (and `baseline`).
    `requires` are (params path, value) pairs the result must have been measured with.
    """

    key: str
    path: str  # the row, in its words
    workload: str  # the benchmarks/workloads name that measures it
    goal: float
    op: str  # ">=", "<=", ">", "<"
    series: str = ""
    baseline: str | None = None
    result: str | None = None
    stat: str = "median"
    param: tuple[str, ...] = ()
    unit: str = ""  # unit of an absolute figure ("ms"); ratios are "×"
    recall: float | None = None  # minimum tie-aware recall@10 of the series
    runs: int = 5  # minimum interleaved runs
    requires: tuple[tuple[tuple[str, ...], Any], ...] = ()
    sizes: tuple[str, ...] = ()  # Sizes fields that may not be below Sizes.targets()'s
    limits: tuple[tuple[tuple[str, ...], float], ...] = ()  # params path, most allowed

    def __post_init__(self) -> None:
        if self.op not in OPS:
            raise ValueError(f"target {self.key}: op {self.op!r} not in {sorted(OPS)}")
        if bool(self.series) == bool(self.param):
            raise ValueError(f"target {self.key}: give a series label or a param path")
        if self.param and (self.baseline or not self.result):
            raise ValueError(f"target {self.key}: a param figure needs a result, no baseline")

    @property
    def is_ratio(self) -> bool:
        return self.baseline is not None

    def goal_text(self) -> str:
        unit = "×" if self.is_ratio else (f" {self.unit}" if self.unit else "")
        text = f"{SYMBOL[self.op]} {self.goal:g}{unit}"
        if self.recall is not None:
            text += f", recall ≥ {self.recall:g}"
        return text

    def figure_text(self, value: float | None) -> str:
        if value is None or math.isnan(value):
            return "-"
        if self.is_ratio:
            return f"{value:.2f}×"
        return f"{value:.3g}{f' {self.unit}' if self.unit else ''}"


TARGETS: tuple[Target, ...] = (
    Target(
        "commit_single",
        "single commit vs raw floor (same tables, same indexes)",
        "commits",
        0.9,
        ">=",
        series="MemoryStore.commit (vector given)",
        baseline="raw psycopg floor (3 inserts, pipelined)",
        result="commit_single",
        sizes=("single",),
    ),
    Target(
        "commit_8_writers",
        "single commit, 8 concurrent writers, vs the raw floor with 8 writers",
        "commits",
        0.9,
        ">=",
        series="MemoryStore.commit (vector given), 8 writers",
        baseline="raw psycopg floor, 8 writers",
    ),
    Target(
        "commit_many",
        "commit_many (1000 facts) vs binary COPY of the same rows",
        "commits",
        0.9,
        ">=",
        series="MemoryStore.commit_many (vectors given)",
        baseline="raw psycopg binary COPY",
        result="commit_batch",
        requires=((("batch",), 1000),),
    ),
    Target(
        "langgraph_put",
        "MemStateStore put vs LangGraph PostgresStore",
        "delegated",
        1.0,
        ">=",
        series="MemStateStore",
        baseline="PostgresStore",
        result="langgraph_store_put_per_s",
    ),
    Target(
        "langgraph_batch_put",
        "MemStateStore batch put vs LangGraph PostgresStore",
        "delegated",
        1.0,
        ">=",
        series="MemStateStore",
        baseline="PostgresStore",
        result="langgraph_store_batch_put_per_s",
    ),
    Target(
        "search_10k",
        "search p50 vs raw pgvector SQL, 10k",
        "search",
        1.2,
        "<=",
        series="MemoryStore.search (vector given)",
        baseline="raw pgvector SQL (ef_search=40)",
        result="search_hashing_10000",
        recall=0.95,
        sizes=("queries",),
    ),
    Target(
        "search_100k",
        "search p50 vs raw pgvector SQL, 100k",
        "search",
        1.2,
        "<=",
        series="MemoryStore.search (vector given)",
        baseline="raw pgvector SQL (ef_search=40)",
        result="search_hashing_100000",
        recall=0.95,
        sizes=("queries",),
    ),
    Target(
        "filtered_100k",
        "1%-filtered search at 100k",
        "filtered",
        10.0,
        "<",
        series="MemoryStore.search(filters=…) as shipped",
        result="filtered_hashing_100000",
        unit="ms",
        recall=0.95,
        sizes=("filtered_queries",),
    ),
    Target(
        "per_namespace",
        "per-namespace search (2,000 namespaces × 100 facts) vs exact top-10 in raw SQL",
        "pernamespace",
        1.2,
        "<=",
        series="MemoryStore.search (vector given)",
        baseline="raw SQL, exact top-10 of the namespace",
        recall=1.0,
    ),
    Target(
        "sync_lag",
        "sync lag p99 at 200 commits/s, Chroma embedded",
        "sync",
        100.0,
        "<",
        param=("report", "lag", "p99_ms"),
        result="sync",
        unit="ms",
        requires=((("report", "lag", "rate"), 200.0),),
        # "with the committers on schedule": benchmarks/sync.py warns beyond 0.5 s behind
        limits=((("report", "lag", "behind_s"), 0.5),),
    ),
    Target(
        "chroma_mirror_write",
        "ChromaMirror write vs raw Chroma client",
        "sync",
        0.8,
        ">=",
        series="ChromaMirror.upsert (our adapter)",
        baseline="raw Chroma client upsert (local persistent)",
        result="mirror_write",
        sizes=("mirror_points",),
    ),
)


@dataclass
class Verdict:
    key: str
    path: str
    goal: str
    status: str
    figure: float | None = None
    figure_text: str = "-"
    recall: float | None = None
    runs: int | None = None
    result: str | None = None
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _dig(obj: Any, path: Sequence[str]) -> Any:
    for part in path:
        if not isinstance(obj, dict) or part not in obj:
            return None
        obj = obj[part]
    return obj


def _find(target: Target, results: Sequence[BenchResult]) -> BenchResult | None:
    if target.result is not None:
        return next((r for r in results if r.name == target.result), None)
    wanted = [target.series] + ([target.baseline] if target.baseline else [])
    return next((r for r in results if not r.skipped and all(r.series_by(w) for w in wanted)), None)


def _stat(series: Series, stat: str) -> float | None:
    if not series.values:
        return None
    value = series.summary()[stat]
    return None if isinstance(value, float) and math.isnan(value) else float(value)


def _runs_of_param(result: BenchResult, path: tuple[str, ...]) -> int | None:
    """The runs behind a param figure: a sibling "runs" (a list of per-run figures or a
    count), else the result's own "runs" param."""
    runs = _dig(result.params, (*path[:-1], "runs"))
    if runs is None:
        runs = result.params.get("runs")
    if isinstance(runs, list):
        return len(runs)
    return runs if isinstance(runs, int) and not isinstance(runs, bool) else None


def _below_target_sizes(target: Target, env: dict[str, Any]) -> str:
    """Which of the target's size knobs the run set below `Sizes.targets()` ('' if none;
    runs that did not record their sizes are taken at their word)."""
    from benchmarks.context import Sizes

    want, got = Sizes.targets(), env.get("sizes") or {}
    small = [
        f"{name}={got[name]} < {getattr(want, name)}"
        for name in target.sizes
        if isinstance(got.get(name), int | float) and got[name] < getattr(want, name)
    ]
    return ", ".join(small)


def evaluate(
    target: Target,
    results: Sequence[BenchResult],
    env: dict[str, Any] | None = None,
    ran: Sequence[str] | None = None,
) -> Verdict:
    """The verdict of one target on a run's results. `ran`: the workloads the run ran
    (None: unknown), for the reason of a "not run"."""
    env = env or {}
    v = Verdict(target.key, target.path, target.goal_text(), NOT_RUN)
    if ran is not None and target.workload not in ran:
        v.reason = f"workload {target.workload} did not run"
        return v
    res = _find(target, results)
    if res is None:
        what = target.result or " and ".join(filter(None, [target.series, target.baseline]))
        v.reason = f"no result {what!r}"
        skipped = [r for r in results if r.skipped and workload_of(r) == target.workload]
        if skipped:
            v.reason += f" ({skipped[0].name}: {skipped[0].skipped})"
        return v
    v.result = res.name
    if res.skipped:
        v.reason = f"{res.name}: {res.skipped}"
        return v
    if target.param:
        raw = _dig(res.params, target.param)
        if not isinstance(raw, int | float) or isinstance(raw, bool):
            v.reason = f"{res.name} has no figure {'.'.join(target.param)}"
            return v
        figure: float | None = float(raw)
        v.runs = _runs_of_param(res, target.param)
    else:
        ours = res.series_by(target.series)
        if ours is None:
            v.reason = f"{res.name} has no series {target.series!r}"
            return v
        figure = _stat(ours, target.stat)
        v.runs = ours.runs or None
        if target.baseline is not None:
            base = res.series_by(target.baseline)
            if base is None:
                v.reason = f"{res.name} has no baseline series {target.baseline!r}"
                return v
            b = _stat(base, target.stat)
            figure = None if figure is None or not b else figure / b
            if base.runs and (v.runs is None or base.runs < v.runs):
                v.runs = base.runs
        if target.recall is not None:
            rec = ours.extra.get("recall_tie")
            v.recall = float(rec) if isinstance(rec, int | float) else None
    if figure is None or math.isnan(figure):
        v.reason = f"{res.name}: no values"
        return v
    v.figure, v.figure_text = figure, target.figure_text(figure)
    # conditions: the figure stands; without them there is no verdict
    v.status = NO_VERDICT
    if env.get("quick"):
        v.reason = "quick mode: tiny sizes, one run"
        return v
    small = _below_target_sizes(target, env)
    if small:
        v.reason = f"sizes below the targets': {small}"
        return v
    for path, want in target.requires:
        got = _dig(res.params, path)
        if got != want:
            v.reason = f"measured with {'.'.join(path)}={got}, the target is at {want}"
            return v
    for path, most in target.limits:
        got = _dig(res.params, path)
        if not isinstance(got, int | float) or isinstance(got, bool):
            v.reason = f"{'.'.join(path)} not recorded, must be ≤ {most:g}"
            return v
        if got > most:
            v.reason = f"measured with {'.'.join(path)}={got:.3g} > {most:g}"
            return v
    if v.runs is None or v.runs < target.runs:
        v.reason = f"{v.runs or 'unknown'} run(s), the target needs ≥ {target.runs}"
        return v
    if target.recall is not None and v.recall is None:
        v.reason = "no recall measured"
        return v
    if target.recall is not None and v.recall is not None and v.recall < target.recall - RECALL_EPS:
        v.status = NOT_MET
        v.reason = f"recall {v.recall:.3f} < {target.recall:g}"
        return v
    v.status = MET if OPS[target.op](figure, target.goal) else NOT_MET
    return v


def evaluate_all(
    results: Sequence[BenchResult],
    env: dict[str, Any] | None = None,
    ran: Sequence[str] | None = None,
    targets: Sequence[Target] = TARGETS,
) -> list[Verdict]:
    return [evaluate(t, results, env, ran) for t in targets]


def workloads_needed(targets: Sequence[Target] = TARGETS) -> list[str]:
    """The workloads the targets need, in declaration order, once each."""
    return list(dict.fromkeys(t.workload for t in targets))


def verdicts_from_report(report: dict[str, Any]) -> list[Verdict]:
    """The stored verdicts of a report (results JSON), as Verdicts."""
    return [Verdict(**v) for v in report.get("targets", [])]


def headline(env: dict[str, Any]) -> str:
    """Date, load average at start and end, commit: the line above a targets table."""
    load = env.get("loadavg") or {}

    def fmt(x: Any) -> str:
        return "/".join(f"{v:.2f}" for v in x) if isinstance(x, list | tuple) else "?"

    wall = env.get("total_seconds")
    loads = (
        f"load average (1/5/15 min) {fmt(load.get('start'))} at start, "
        f"{fmt(load.get('end'))} at end"
        if load
        else "load average not recorded"
    )
    return (
        f"{str(env.get('date', '?'))[:16].replace('T', ' ')} UTC, commit "
        f"{env.get('git_commit') or '?'}, {loads}"
        + (f", {wall / 60:.1f} min wall" if isinstance(wall, int | float) else "")
        + (f", {env['mode']} mode" if env.get("mode") else "")
    )


def load_warning(env: dict[str, Any]) -> str:
    """A sentence when the 1-minute load average exceeded the cores at the start or end of
    the run (other processes competed for the CPU: the verdicts stand, noisier); else ''."""
    cores = (env.get("machine") or {}).get("cores")
    load = env.get("loadavg") or {}
    peaks = [x[0] for x in (load.get("start"), load.get("end")) if isinstance(x, list | tuple)]
    if not cores or not peaks or max(peaks) <= cores:
        return ""
    return (
        f"The load average ({max(peaks):.1f}) exceeded the {cores} cores: other processes "
        "competed for the CPU during the run, so single figures are noisy (ratios are of "
        "interleaved runs, but a re-run can move them by more than the margin to the goal)."
    )


def tally(verdicts: Sequence[Verdict]) -> str:
    counts = {s: sum(v.status == s for v in verdicts) for s in STATUSES}
    return ", ".join(f"{n} {s}" for s, n in counts.items() if n)


def markdown_table(verdicts: Sequence[Verdict]) -> list[str]:
    lines = [
        "| path | figure | goal | recall@10 | runs | verdict |",
        "|---|---:|---|---:|---:|---|",
    ]
    for v in verdicts:
        rec = "-" if v.recall is None else f"{v.recall:.2f}"
        status = v.status if not v.reason else f"{v.status} ({v.reason})"
        lines.append(
            f"| {v.path} | {v.figure_text} | {v.goal} | {rec} | {v.runs or '-'} | {status} |"
        )
    return lines


def rich_table(verdicts: Sequence[Verdict], env: dict[str, Any]):
    """The targets table for the console."""
    from rich.table import Table

    table = Table(
        title=f"Targets (issue 15) — {headline(env)}: {tally(verdicts)}", title_justify="left"
    )
    for col in ("path", "figure", "goal", "recall@10", "runs", "verdict", "why"):
        table.add_column(col, justify="right" if col in ("figure", "recall@10", "runs") else "left")
    colour = {MET: "green", NOT_MET: "red", NOT_RUN: "yellow", NO_VERDICT: "yellow"}
    for v in verdicts:
        table.add_row(
            v.path,
            v.figure_text,
            v.goal,
            "-" if v.recall is None else f"{v.recall:.2f}",
            str(v.runs or "-"),
            f"[{colour[v.status]}]{v.status}[/{colour[v.status]}]",
            v.reason,
        )
    return table
