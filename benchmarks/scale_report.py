"""The scale benchmark's results: their own JSON and their own section of RESULTS.md.

`python -m benchmarks --only scale` takes most of an hour, so it does not run with the
others; its results go to ``results/scale-<stamp>.json`` and ``results/scale-latest.json``
(never into ``latest.json``), and every regeneration of RESULTS.md (a full run, a
scale-only run, or ``--results-from``) appends the section built here from
``scale-latest.json``: a summary table ("Scale: 1M facts") and the detailed tables.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from benchmarks import harness

LATEST = "scale-latest.json"


ORDER = (
    "scale_build",
    "scale_search",
    "scale_filtered",
    "scale_namespace",
    "scale_reconcile",
    "scale_commit",
    "scale_compact",
    "scale_replica",
)


def write_json(
    results: list[harness.BenchResult], env: dict[str, Any], out_dir: Path, stamp: str
) -> list[Path]:
    """Write the run's results; sections this run did not measure (--scale-sections) are
    kept from the previous scale-latest.json, each with the date of the run it came from."""
    out_dir.mkdir(parents=True, exist_ok=True)
    fresh = {r.name for r in results}
    kept: list[harness.BenchResult] = []
    if (out_dir / LATEST).exists():
        try:
            prev = json.loads((out_dir / LATEST).read_text())
            kept = [
                r
                for r in harness.results_from_report(prev)
                if r.name not in fresh and r.name in ORDER
            ]
        except (ValueError, KeyError, TypeError):
            kept = []
        for r in kept:
            r.env.setdefault(
                "measured",
                {"date": prev["env"].get("date"), "git_commit": prev["env"].get("git_commit")},
            )
    every = sorted(
        results + kept, key=lambda r: ORDER.index(r.name) if r.name in ORDER else len(ORDER)
    )
    if kept:
        env = {**env, "scale_kept": sorted(r.name for r in kept)}
    text = json.dumps(harness.report_dict(every, env), indent=2, default=str, allow_nan=True)
    paths = [out_dir / f"scale-{stamp}.json", out_dir / LATEST]
    for p in paths:
        p.write_text(text)
    return paths


def _num(v: Any, fmt: str = ",.0f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return format(v, fmt)


def summary_rows(results: list[harness.BenchResult]) -> list[tuple[str, str]]:
    """(what, figure) lines of the summary table, from whatever sections ran."""
    by = {r.name: r for r in results}
    rows: list[tuple[str, str]] = []
    b = by.get("scale_build")
    if b and not b.skipped:
        for s in b.series:
            if s.label.startswith("HNSW"):
                rows.append(
                    (
                        s.label,
                        f"{_num(s.values[0], ',.0f')} s, index {s.extra.get('index_gib', 0):.2f} GiB",
                    )
                )
            else:
                rows.append((s.label, f"{_num(s.values[0], ',.0f')} s"))

    def latency(
        name: str, label: str | tuple[str, ...], what: str, versus: str | None = None
    ) -> None:
        r = by.get(name)
        if r is None:
            return
        if r.skipped:
            rows.append((what, r.skipped))
            return
        s = next(
            filter(None, map(r.series_by, (label,) if isinstance(label, str) else label)), None
        )
        base = (r.series_by(versus) if versus else None) or r.baseline()
        if s is None:
            return
        st = s.summary()
        ratio = (
            s.summary()["median"] / base.summary()["median"]
            if base is not None and base.values and s.values
            else None
        )
        text = (
            f"p50 {st['median']:.2f} ms, p95 {st['p95']:.2f} ms, tie-aware recall@10 "
            f"{s.extra.get('recall_tie', float('nan')):.3f}"
        )
        if base is not None and base is not s and ratio is not None:
            bs = base.summary()
            text += (
                f"; {base.label}: p50 {bs['median']:.2f} ms, recall "
                f"{base.extra.get('recall_tie', float('nan')):.3f} ({ratio:.2f}× its p50)"
            )
        rows.append((what, text))

    latency(
        "scale_search",
        "MemoryStore.search (vector given, ef_search=40)",
        "search, unfiltered (1M in one namespace)",
    )
    latency(
        "scale_search",
        "MemoryStore.search (vector given, ef_search=100)",
        "search, unfiltered, ef_search=100",
        versus="raw pgvector SQL (ef_search=100)",
    )
    latency("scale_filtered", "MemoryStore.search(filters=…)", "search, 1% payload filter")
    latency(
        "scale_namespace",
        ("MemoryStore.search in the namespace", "MemoryStore.search, per namespace"),
        "search in one of 10,000 namespaces",
    )
    c = by.get("scale_commit")
    if c is not None:
        if c.skipped:
            rows.append(("single commits", c.skipped))
        else:
            ours = c.series_by("MemoryStore.commit (vector given)")
            base = c.baseline()
            if ours and base:
                rows.append(
                    (
                        "single commits into the 1M table",
                        f"{ours.summary()['median']:,.0f}/s vs raw floor {base.summary()['median']:,.0f}/s "
                        f"({c.ratio(ours):.2f}×)",
                    )
                )
    rc = by.get("scale_reconcile")
    if rc is not None:
        if rc.skipped:
            rows.append(("reconcile", rc.skipped))
        for s in rc.series if not rc.skipped else []:
            rows.append(
                (
                    s.label,
                    f"{s.extra.get('seconds', float('nan')):.0f} s ({s.values[0]:,.0f} facts/s), "
                    f"resident set +{_num(s.extra.get('rss_added_mb'))} MB over "
                    f"{_num(s.extra.get('rss_before_mb'))} MB"
                    + (
                        f", tracemalloc peak {rc.params['tracemalloc_peak_mb']} MB"
                        if "drifted" in s.label and "tracemalloc_peak_mb" in rc.params
                        else ""
                    ),
                )
            )
    cp = by.get("scale_compact")
    if cp is not None:
        if cp.skipped:
            rows.append(("compact", cp.skipped))
        for s in cp.series if not cp.skipped else []:
            rows.append(
                (
                    s.label,
                    f"{s.extra.get('seconds', float('nan')):.0f} s, "
                    f"{_num(s.extra.get('versions_deleted'))} versions deleted ({s.values[0]:,.0f}/s)",
                )
            )
    rp = by.get("scale_replica")
    if rp is not None:
        if rp.skipped:
            rows.append(("replica lag", rp.skipped))
        for s in rp.series if not rp.skipped else []:
            st = s.summary()
            rows.append(
                (
                    s.label,
                    f"p50 {st['median']:.1f}, p95 {st['p95']:.1f}, max {st['max']:.1f} {rp.unit}",
                )
            )
    total = next((r.params.get("scale_seconds_total") for r in results), None)
    if total is not None:
        reused = by.get("scale_build") and by["scale_build"].params.get("reused")
        rows.append(
            (
                "whole scale run",
                f"{total / 60:.1f} min{' (databases reused: no load or build)' if reused else ''}",
            )
        )
    return rows


def section(out_dir: Path) -> str:
    """The RESULTS.md section from results/scale-latest.json ('' if there is none)."""
    path = Path(out_dir) / LATEST
    if not path.exists():
        return ""
    report = json.loads(path.read_text())
    results = harness.results_from_report(report)
    env = report["env"]
    m = env.get("machine", {})
    b = next((r for r in results if r.name == "scale_build"), None)
    settings = (b.params.get("server_settings") if b else None) or {}
    lines = [
        "",
        "## Scale: 1M facts",
        "",
        f"_`python -m benchmarks --only scale` on {env.get('date', '?')[:16]} UTC: {m.get('cpu', '?')}, "
        f"{m.get('cores', '?')} cores, {m.get('memory_gb', '?')} GB; PostgreSQL {env.get('postgresql')}, "
        f"pgvector {env.get('pgvector')}, 384-d clustered vectors (benchmarks/scale_data.py); "
        f"server settings {', '.join(f'{k}={v}' for k, v in sorted(settings.items()))}; "
        f"commit {env.get('git_commit') or '?'}. From benchmarks/results/{LATEST}._",
        "",
        "| | |",
        "|---|---|",
    ]
    lines += [f"| {what} | {fig} |" for what, fig in summary_rows(results)]
    if env.get("scale_kept"):
        lines += [
            "",
            f"_Sections {', '.join(env['scale_kept'])} are kept from an earlier scale run "
            "(their dates are under their tables)._",
        ]
    lines += ["", "### Scale: the tables", "", *tables(results, env)]
    return "\n".join(lines).rstrip() + "\n"


def tables(results: list[harness.BenchResult], env: dict[str, Any]) -> list[str]:
    """One table per section, in RESULTS.md's format (harness.markdown's per-result part;
    the targets table is not repeated here). Refuses (harness.StaleRows) rows naming code
    that does not exist, like the other tables."""
    harness.check_rows(results)
    lines: list[str] = []
    for r in results:
        better = "higher" if r.higher_is_better else "lower"
        lines += [
            f"**{r.title}** ({r.unit}, {better} is better; {harness.params_text(r.params)})",
            "",
        ]
        if r.skipped:
            lines += [f"skipped: {r.skipped}", ""]
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
                f" {harness._fmt(s.extra[k], '') if isinstance(s.extra.get(k), int | float) else '-'} |"
                for k in extra
            )
            lines.append(
                f"| {s.label} | {harness._fmt(st['median'], r.unit)} | "
                f"{harness._fmt(st['p95'], r.unit)} | {harness._fmt(st['min'], r.unit)}–"
                f"{harness._fmt(st['max'], r.unit)} | {rtxt} |{ex}"
            )
        lines += [f"\n_note: {n}_" for n in r.notes] + [""]
    return lines
