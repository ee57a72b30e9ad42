"""The result model of the benchmark harness and its outputs: tables, JSON, PNG, README.

A workload returns `BenchResult`s. Each holds `Series` (one line of a table: a peer or a
variant), one of which is the baseline measured in the same run; ratios are
`median / baseline median` of the series' own unit, so for a rate (commits/s) above 1 is
faster than the baseline, and for a latency (ms) above 1 is slower. Every result carries
the environment (PostgreSQL and pgvector versions, vector dimension) and its data size.

Outputs, all under one directory (default ``benchmarks/results/``):
``results-<stamp>.json`` and ``latest.json``, ``results-<stamp>.png`` and ``latest.png``;
and, with `update_readme`, the table block of README.md between
``<!-- bench:start -->`` and ``<!-- bench:end -->`` (README is left alone without them).
"""

from __future__ import annotations

import json
import math
import platform
import statistics
import subprocess
import textwrap
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

README_START = "<!-- bench:start -->"
README_END = "<!-- bench:end -->"
RESULTS_DIR = Path(__file__).parent / "results"
SCHEMA_VERSION = 1


def stats(values: Sequence[float]) -> dict[str, float]:
    """median, p95 (nearest rank), min, max and count of `values`."""
    ordered = sorted(values)
    if not ordered:
        return {
            "median": math.nan,
            "p95": math.nan,
            "p99": math.nan,
            "min": math.nan,
            "max": math.nan,
            "n": 0,
        }
    p95 = ordered[min(len(ordered) - 1, max(0, math.ceil(0.95 * len(ordered)) - 1))]
    p99 = ordered[min(len(ordered) - 1, max(0, math.ceil(0.99 * len(ordered)) - 1))]
    return {
        "median": statistics.median(ordered),
        "p95": p95,
        "p99": p99,
        "min": ordered[0],
        "max": ordered[-1],
        "n": len(ordered),
    }


@dataclass
class Series:
    """One measured line: a peer or a variant. `values` are per-run rates, or per-query
    latencies pooled over all runs (see BenchResult.sample)."""

    label: str
    values: list[float]
    baseline: bool = False
    runs: int = 0
    extra: dict[str, Any] = field(default_factory=dict)  # e.g. recall, notes
    note: str = ""

    def summary(self) -> dict[str, float]:
        return stats(self.values)


@dataclass
class BenchResult:
    """The outcome of one benchmark: a titled table of series with one baseline."""

    name: str  # stable key, e.g. "commit_single"
    title: str
    unit: str  # "commits/s", "facts/s", "ms", ...
    higher_is_better: bool
    sample: str  # "per run" (one value per run) or "per query" (pooled)
    params: dict[str, Any] = field(default_factory=dict)  # data size, dim, k, batch, ...
    series: list[Series] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)
    skipped: str | None = None
    env: dict[str, Any] = field(default_factory=dict)  # server versions and dim, set by the runner

    def add(
        self,
        label: str,
        values: Sequence[float],
        *,
        baseline: bool = False,
        runs: int = 0,
        note: str = "",
        **extra: Any,
    ) -> Series:
        s = Series(
            label, [float(v) for v in values], baseline=baseline, runs=runs, note=note, extra=extra
        )
        self.series.append(s)
        return s

    def baseline(self) -> Series | None:
        return next((s for s in self.series if s.baseline), None)

    def ratio(self, s: Series) -> float | None:
        base = self.baseline()
        if base is None or s is base or not base.values or not s.values:
            return None
        b = base.summary()["median"]
        return s.summary()["median"] / b if b else None

    def series_by(self, label: str) -> Series | None:
        return next((s for s in self.series if s.label == label), None)

    def target(self, what: str, value: float | None, goal: str, met: bool | None) -> None:
        """Record a target of the issue and whether this run met it."""
        self.targets.append({"target": what, "value": value, "goal": goal, "met": met})

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for s_dict, s in zip(out["series"], self.series, strict=True):
            s_dict["values"] = [round(v, 4) for v in s.values]  # 0.1 µs resolution for ms
            s_dict["stats"] = s.summary()
            s_dict["ratio_to_baseline"] = self.ratio(s)
        return out


# --- environment ------------------------------------------------------------------------


def machine_info() -> dict[str, Any]:
    """What the numbers were measured on."""
    import os

    cpu = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next(
                (ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")), cpu
            )
    except OSError:
        pass
    mem_gb = None
    try:
        mem_gb = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {
        "platform": platform.platform(),
        "python": platform.python_version(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gb": mem_gb,
    }


def git_commit() -> str | None:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            timeout=5,
        )
        return out.stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        return None


def package_versions(names: Sequence[str]) -> dict[str, str | None]:
    from importlib import metadata

    out: dict[str, str | None] = {}
    for name in names:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


# --- printing -----------------------------------------------------------------------------


def _fmt(value: float, unit: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if unit == "ms" or abs(value) < 100:
        return f"{value:,.2f}"
    return f"{value:,.0f}"


def params_text(params: dict[str, Any]) -> str:
    """The short scalar parameters of a result (data size, dim, runs…), for titles."""
    return ", ".join(
        f"{k}={v}"
        for k, v in params.items()
        if isinstance(v, int | float | str) and len(str(v)) <= 40
    )


def rich_table(result: BenchResult) -> Table:
    better = "higher" if result.higher_is_better else "lower"
    size = params_text(result.params)
    table = Table(
        title=f"{result.title}  [{result.unit}, {better} is better; {size}]", title_justify="left"
    )
    has_extra = sorted(
        {k for s in result.series for k, v in s.extra.items() if isinstance(v, int | float)}
    )
    for col in ["", "median", "p95", "min", "max", "n", "vs baseline", *has_extra, "note"]:
        table.add_column(col, justify="left" if col in ("", "note") else "right", overflow="fold")
    for s in result.series:
        st = s.summary()
        r = result.ratio(s)
        table.add_row(
            s.label,
            _fmt(st["median"], result.unit),
            _fmt(st["p95"], result.unit),
            _fmt(st["min"], result.unit),
            _fmt(st["max"], result.unit),
            str(st["n"]),
            "baseline" if s.baseline else ("-" if r is None else f"{r:.2f}x"),
            *[
                _fmt(s.extra[k], "") if isinstance(s.extra.get(k), int | float) else "-"
                for k in has_extra
            ],
            s.note,
        )
    return table


def print_result(console: Console, result: BenchResult) -> None:
    if result.skipped:
        console.print(f"[yellow]{result.title}: skipped — {result.skipped}[/yellow]")
        return
    if result.series:
        console.print(rich_table(result))
    else:
        console.print(f"{result.title} [{params_text(result.params)}]")
    for t in result.targets:
        mark = {True: "[green]met[/green]", False: "[red]not met[/red]", None: "n/a"}[t["met"]]
        value = "-" if t["value"] is None else f"{t['value']:.3g}"
        console.print(f"  target {t['target']}: {value} (goal {t['goal']}) {mark}")
    for n in result.notes:
        console.print(f"  note: {n}")


# --- files ------------------------------------------------------------------------------


def report_dict(results: Sequence[BenchResult], env: dict[str, Any]) -> dict[str, Any]:
    return {"schema": SCHEMA_VERSION, "env": env, "results": [r.to_dict() for r in results]}


def results_from_report(report: dict[str, Any]) -> list[BenchResult]:
    """The BenchResults of a report written by `report_dict` (e.g. latest.json)."""
    out = []
    for r in report["results"]:
        fields = {k: v for k, v in r.items() if k != "series"}
        res = BenchResult(**fields)
        for s in r["series"]:
            res.add(
                s["label"],
                s["values"],
                baseline=s["baseline"],
                runs=s["runs"],
                note=s["note"],
                **s["extra"],
            )
        out.append(res)
    return out


def write_json(report: dict[str, Any], out_dir: Path, stamp: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2, default=str, allow_nan=True)
    paths = [out_dir / f"results-{stamp}.json", out_dir / "latest.json"]
    for p in paths:
        p.write_text(text)
    return paths


def write_chart(
    results: Sequence[BenchResult], out_dir: Path, stamp: str, env: dict[str, Any]
) -> list[Path]:
    """One bar chart per benchmark (median, whiskers min–max), in one PNG. Needs matplotlib
    (the `bench` extra); returns [] without it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    shown = [r for r in results if not r.skipped and r.series]
    if not shown:
        return []
    cols = 2
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(14, 3.2 * rows + 0.8), squeeze=False)
    for ax, r in zip(axes.flat, shown, strict=False):
        labels = [s.label for s in r.series]
        meds = [s.summary()["median"] for s in r.series]
        lo = [max(0.0, m - s.summary()["min"]) for m, s in zip(meds, r.series, strict=True)]
        hi = [max(0.0, s.summary()["max"] - m) for m, s in zip(meds, r.series, strict=True)]
        colors = ["#888888" if s.baseline else "#2b7bba" for s in r.series]
        y = range(len(labels))
        ax.barh(list(y), meds, xerr=[lo, hi], color=colors, capsize=3)
        ax.set_yticks(list(y), [textwrap.fill(lb, 45) for lb in labels], fontsize=7)
        ax.invert_yaxis()
        if r.unit == "ms":
            from matplotlib.ticker import NullFormatter, ScalarFormatter

            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ScalarFormatter())
            ax.xaxis.set_minor_formatter(NullFormatter())
        title = f"{r.title} ({r.unit}, {'higher' if r.higher_is_better else 'lower'} is better)"
        ax.set_title(textwrap.fill(title, 70), fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    for ax in list(axes.flat)[len(shown) :]:
        ax.axis("off")
    fig.suptitle(
        f"memstate-pg benchmarks — {env.get('date', '')} — PostgreSQL {env.get('postgresql')}, "
        f"pgvector {env.get('pgvector')}, {env.get('machine', {}).get('cores')} cores "
        "(grey: baseline; whiskers: min–max)",
        fontsize=9,
    )
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.5 / fig.get_figheight()))
    paths = [out_dir / f"results-{stamp}.png", out_dir / "latest.png"]
    out_dir.mkdir(parents=True, exist_ok=True)
    for p in paths:
        fig.savefig(p, dpi=110)
    plt.close(fig)
    return paths


# --- README -------------------------------------------------------------------------------


def markdown(results: Sequence[BenchResult], env: dict[str, Any]) -> str:
    """The README block: machine, date, versions, and one table per benchmark."""
    m = env.get("machine", {})
    lines = [
        f"_Generated by `python -m benchmarks` on {env.get('date', '?')[:10]}: {m.get('cpu', '?')}, "
        f"{m.get('cores', '?')} cores, {m.get('memory_gb', '?')} GB; PostgreSQL {env.get('postgresql')}, "
        f"pgvector {env.get('pgvector')}, {env.get('dim')}-d vectors, commit {env.get('git_commit') or '?'}"
        f"{' (quick mode: tiny sizes, not representative)' if env.get('quick') else ''}. "
        "Ratios are median ÷ baseline median in the same run._",
        "",
    ]
    if env.get("note"):
        lines += [f"_{env['note']}_", ""]
    if env.get("combined_from"):
        lines += [
            "_Tables combined from runs: "
            + "; ".join(f"{k} ({v[:16]})" for k, v in env["combined_from"].items())
            + "_",
            "",
        ]
    for r in results:
        size = params_text(r.params)
        lines.append(
            f"**{r.title}** ({r.unit}, {'higher' if r.higher_is_better else 'lower'} is better; {size})"
        )
        lines.append("")
        if r.skipped:
            lines += [f"skipped: {r.skipped}", ""]
            continue
        if not r.series:
            if isinstance(r.params.get("output"), str):
                lines += ["```", r.params["output"].strip(), "```"]
            lines += [f"_{n}_" for n in r.notes] + [""]
            continue
        extra = sorted(
            {k for s in r.series for k, v in s.extra.items() if isinstance(v, int | float)}
        )
        lines.append(
            "| | median | p95 | min–max | vs baseline |" + "".join(f" {k} |" for k in extra)
        )
        lines.append("|---|---:|---:|---:|---:|" + "---:|" * len(extra))
        for s in r.series:
            st = s.summary()
            ratio = r.ratio(s)
            rtxt = "baseline" if s.baseline else ("-" if ratio is None else f"{ratio:.2f}×")
            ex = "".join(
                f" {_fmt(s.extra[k], '') if isinstance(s.extra.get(k), int | float) else '-'} |"
                for k in extra
            )
            lines.append(
                f"| {s.label} | {_fmt(st['median'], r.unit)} | {_fmt(st['p95'], r.unit)} | "
                f"{_fmt(st['min'], r.unit)}–{_fmt(st['max'], r.unit)} | {rtxt} |{ex}"
            )
        for t in r.targets:
            met = {True: "met", False: "not met", None: "n/a"}[t["met"]]
            value = "-" if t["value"] is None else f"{t['value']:.3g}"
            lines.append(f"\n_target {t['target']}: {value} (goal {t['goal']}): {met}_")
        for n in r.notes:
            lines.append(f"\n_note: {n}_")
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def update_readme(readme: Path, block: str) -> bool:
    """Replace the text between the bench markers of `readme` with `block`. Returns False
    (and leaves the file untouched) when the file or either marker is missing."""
    if not readme.exists():
        return False
    text = readme.read_text()
    start = text.find(README_START)
    end = text.find(README_END, start + len(README_START)) if start >= 0 else -1
    if start < 0 or end < 0:
        return False
    new = text[: start + len(README_START)] + "\n" + block + text[end:]
    if new != text:
        readme.write_text(new)
    return True


def now_stamp() -> tuple[str, str]:
    """(ISO date-time, file-name stamp), UTC."""
    t = datetime.now(timezone.utc)
    return t.isoformat(timespec="seconds"), t.strftime("%Y%m%dT%H%M%SZ")
