"""`python -m benchmarks` (also `make bench`): every benchmark, one server, one report.

Runs the workloads of benchmarks/workloads on one PostgreSQL server ($MEMSTATE_DSN, else an
embedded server started for the run), prints a table per benchmark (median, p95, min–max,
ratio to the baseline measured in the same run), writes JSON and a PNG chart under
benchmarks/results/, and regenerates the tables in benchmarks/RESULTS.md.

    python -m benchmarks                 # full sizes (10k and 100k facts; ~35-40 min on 2 cores)
    python -m benchmarks --targets       # only what the targets need, at their sizes (~20 min)
    python -m benchmarks --quick         # tiny sizes, one run: a smoke test, not a measurement
    python -m benchmarks --only search,filtered --large 50000 --runs 7
    python -m benchmarks --results-from benchmarks/results/latest.json   # RESULTS.md only
    python -m benchmarks --only scale    # 2 x 1M facts, never in the default run (~50 min the
                                         # first time; then --scale-reuse, see workloads/scale.py)
    MEMSTATE_DSN=postgresql://… python -m benchmarks   # a server of yours (role may CREATE DATABASE)

Large datasets are bulk-loaded with COPY into memstate's tables, the HNSW index built once
afterwards with maintenance_work_mem = 1GB (see benchmarks/data.py): a 100k load takes
≈ 15 s plus ≈ 25-100 s of index build on 2 cores, instead of many minutes of commits.

Every run ends with the targets table (benchmarks/targets.py: figure, goal, met / not met /
not run / no verdict, with the date, load average and commit), also in the JSON and at the
top of RESULTS.md; the summary in README.md is regenerated from it. A run of a subset
(--targets, --only) keeps the tables of the other workloads from the previous
results/latest.json, each marked with the run it came from (--fresh: drop them).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import time
import traceback
from pathlib import Path

from rich.console import Console

from benchmarks import harness, scale_report
from benchmarks import targets as tg
from benchmarks.context import BenchContext, Sizes, server_info
from benchmarks.workloads import ON_REQUEST, WORKLOADS, runner


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    mode = ap.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true", help="tiny sizes and one run (smoke test)")
    mode.add_argument(
        "--targets",
        action="store_true",
        help="only the workloads the targets need, at the targets' sizes (benchmarks/targets.py)",
    )
    ap.add_argument("--only", help=f"comma-separated subset of: {', '.join(WORKLOADS)}")
    ap.add_argument("--skip", help="comma-separated workloads to leave out")
    ap.add_argument("--out", type=Path, default=harness.RESULTS_DIR, help="results directory")
    ap.add_argument(
        "--results",
        type=Path,
        default=harness.RESULTS_MD,
        help="the generated tables page (default benchmarks/RESULTS.md)",
    )
    ap.add_argument(
        "--no-results", action="store_true", help="do not write the tables page (--results)"
    )
    ap.add_argument(
        "--results-from",
        type=Path,
        metavar="JSON",
        help="only regenerate the tables page from a saved report (e.g. benchmarks/results/latest.json)",
    )
    ap.add_argument("--no-chart", action="store_true", help="skip the PNG chart")
    ap.add_argument(
        "--readme",
        type=Path,
        default=harness.README_MD,
        help="the page whose benchmark summary is regenerated with the tables page",
    )
    ap.add_argument(
        "--fresh",
        action="store_true",
        help="with --targets/--only: do not keep the other workloads' tables of the last run",
    )
    for f in dataclasses.fields(Sizes):
        if f.type in ("int", "float"):
            ap.add_argument(
                f"--{f.name.replace('_', '-')}",
                type=int if f.type == "int" else float,
                help=f"default {f.default} ({Sizes.quick().__dict__[f.name]} with --quick)",
            )
    ap.add_argument(
        "--ef-search", help="comma-separated hnsw.ef_search values to sweep (default 40,100,200)"
    )
    ap.add_argument(
        "--scale-dir",
        help="data dir of the scale workload's own server, kept between runs "
        f"(default {Sizes.scale_dir})",
    )
    ap.add_argument(
        "--scale-reuse",
        action="store_true",
        default=None,
        help="scale: reuse the loaded databases in --scale-dir when they match the sizes",
    )
    ap.add_argument(
        "--scale-sections",
        help="scale: comma-separated subset of build, search, filtered, namespace, reconcile, "
        "commit, compact, replica (default: all)",
    )
    ap.add_argument(
        "--delegate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run benchmarks/sync.py and benchmarks/langgraph_store.py too (default: not with --quick)",
    )
    return ap.parse_args(argv)


def sizes_from(args: argparse.Namespace) -> Sizes:
    sizes = Sizes.quick() if args.quick else Sizes.targets() if args.targets else Sizes()
    for f in dataclasses.fields(Sizes):
        value = getattr(args, f.name, None)
        if value is not None:
            setattr(sizes, f.name, value)
    if args.delegate is not None:
        sizes.delegate = args.delegate
    if args.ef_search:
        sizes.ef_search = tuple(int(x) for x in args.ef_search.split(","))
    return sizes


def selected(args: argparse.Namespace) -> list[str]:
    names = [n for n in WORKLOADS if n not in ON_REQUEST]
    if args.targets:
        # in run order; a target whose workload is not registered shows as "not run"
        needed = set(tg.workloads_needed())
        names = [n for n in WORKLOADS if n in needed]
    if args.only:
        names = [n.strip() for n in args.only.split(",") if n.strip()]
    skip = {n.strip() for n in (args.skip or "").split(",") if n.strip()}
    unknown = [n for n in [*names, *skip] if n not in WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; choose from {list(WORKLOADS)}")
    return [n for n in names if n not in skip]


def write_pages(
    args: argparse.Namespace,
    console: Console,
    results: list[harness.BenchResult],
    env: dict,
    verdicts: list[tg.Verdict],
    scale_dir: Path,
) -> None:
    """RESULTS.md (with the scale section from `scale_dir`, see benchmarks/scale_report.py)
    and README's summary, or one line saying why not (stale rows)."""
    try:
        block = harness.markdown(results, env, verdicts) + scale_report.section(scale_dir)
    except harness.StaleRows as exc:
        console.print(f"[red]RESULTS.md not written: {exc}[/red]")
        return
    done = harness.write_results(args.results, block)
    console.print(f"{'wrote' if done else 'unchanged:'} {args.results}")
    if args.readme.exists():
        done = harness.write_readme_summary(args.readme, harness.readme_summary(verdicts, env))
        console.print(f"{'wrote' if done else 'unchanged:'} {args.readme} (benchmark summary)")


def kept_results(
    args: argparse.Namespace, names: list[str], console: Console
) -> list[harness.BenchResult]:
    """The previous run's results of registered workloads this run does not run (for a run
    of a subset), each marked with the run it came from."""
    latest = args.out / "latest.json"
    if args.fresh or args.quick or not latest.exists():
        return []
    try:
        report = json.loads(latest.read_text())
        old = harness.results_from_report(report)
    except (ValueError, KeyError, TypeError) as exc:
        console.print(f"[yellow]not keeping earlier tables: {latest} unreadable ({exc})[/yellow]")
        return []
    if report.get("env", {}).get("quick"):
        return []
    kept = []
    for r in old:
        workload = harness.workload_of(r)
        if workload in WORKLOADS and workload not in names:
            r.env.setdefault(
                "measured",
                {"date": report["env"].get("date"), "git_commit": report["env"].get("git_commit")},
            )
            kept.append(r)
    return kept


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    console = Console(width=160)
    if args.results_from:
        report = json.loads(args.results_from.read_text())
        stored = harness.results_from_report(report)
        verdicts = tg.evaluate_all(stored, report["env"], report["env"].get("workloads"))
        judged = [v.to_dict() for v in verdicts]
        if report.get("targets") != judged:  # the declarations changed since the run
            report["targets"] = judged
            args.results_from.write_text(json.dumps(report, indent=2, default=str))
            console.print(f"re-judged the targets in {args.results_from}")
        write_pages(args, console, stored, report["env"], verdicts, args.results_from.parent)
        return report
    sizes = sizes_from(args)
    names = selected(args)
    iso, stamp = harness.now_stamp()
    results: list[harness.BenchResult] = []
    load_start = harness.load_average()
    started = time.perf_counter()
    commit = harness.git_commit()
    with BenchContext(sizes, args.quick, console) as ctx:
        info = server_info(ctx.admin_dsn)
        env = {
            "date": iso,
            "quick": args.quick,
            "dim": ctx.dim,
            **info,
            "machine": harness.machine_info(),
            "git_commit": commit,
            "mode": "quick" if args.quick else "targets" if args.targets else "full",
            "workloads": names,
            "sizes": dataclasses.asdict(sizes),
            "server": "MEMSTATE_DSN" if os.environ.get("MEMSTATE_DSN") else "embedded",
            "packages": harness.package_versions(
                [
                    "memstate-pg",
                    "psycopg",
                    "pgvector",
                    "memstate",
                    "langgraph-checkpoint-postgres",
                    "chromadb",
                    "qdrant-client",
                    "numpy",
                    "matplotlib",
                ]
            ),
        }
        console.print(
            f"PostgreSQL {info['postgresql']}, pgvector {info['pgvector']}, {ctx.dim}-d, "
            f"{env['machine']['cores']} cores; workloads: {', '.join(names)}"
            f"{' (quick mode)' if args.quick else ''}"
        )
        for name in names:
            t0 = time.perf_counter()
            try:
                got = runner(name)(ctx)
            except Exception as exc:  # noqa: BLE001 - one broken workload must not sink the run
                traceback.print_exc()
                got = [harness.BenchResult(name, name, "", True, "", skipped=f"failed: {exc!r}")]
            for r in got:
                r.params.setdefault("seconds", round(time.perf_counter() - t0, 1))
                r.env = {
                    "postgresql": info["postgresql"],
                    "pgvector": info["pgvector"],
                    "dim": r.params.get("dim", ctx.dim),
                    "workload": name,
                    "measured": {"date": iso, "git_commit": commit},
                }
                harness.print_result(console, r)
            results += got
    env["total_seconds"] = round(time.perf_counter() - started, 1)
    env["loadavg"] = {"start": load_start, "end": harness.load_average()}
    # the scale tables have their own JSON (results/scale-latest.json) and their own section
    # of RESULTS.md (benchmarks/scale_report.py), so a run of either kind keeps the other's
    scale = [r for r in results if r.name.startswith("scale_")]
    if scale:
        results = [r for r in results if r not in scale]
        names = [n for n in names if n != "scale"]
        console.print(
            "wrote "
            + ", ".join(str(p) for p in scale_report.write_json(scale, env, args.out, stamp))
        )
        if not names:  # a scale-only run: the other tables stay as the last run left them
            latest = args.out / "latest.json"
            if not args.no_results and not args.quick and latest.exists():
                last = json.loads(latest.read_text())
                stored = harness.results_from_report(last)
                verdicts = tg.evaluate_all(stored, last["env"], last["env"].get("workloads"))
                write_pages(args, console, stored, last["env"], verdicts, args.out)
            return harness.report_dict(scale, env)
    verdicts = tg.evaluate_all(results, env, names)
    console.print(tg.rich_table(verdicts, env))
    kept = kept_results(args, names, console) if args.targets or args.only else []
    if kept:
        env["kept"] = sorted({harness.workload_of(r) for r in kept})
        console.print(f"kept from the previous run: tables of {', '.join(env['kept'])}")
    report = harness.report_dict(results + kept, env, verdicts)
    paths = harness.write_json(report, args.out, stamp)
    if not args.no_chart:
        paths += harness.write_chart(results + kept, args.out, stamp, env)
    console.print("wrote " + ", ".join(str(p) for p in paths))
    if not args.no_results and not args.quick:
        write_pages(args, console, results + kept, env, verdicts, args.out)
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
