"""The generated benchmark pages cannot go stale: benchmarks/RESULTS.md and README's
summary are what the generator makes of benchmarks/results/latest.json, and no row names
code that does not exist (any more) — the generator refuses such rows. No database."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks import harness, scale_report
from benchmarks import targets as tg

ROOT = Path(harness.__file__).resolve().parents[1]
LATEST = ROOT / "benchmarks" / "results" / "latest.json"


@pytest.fixture(scope="module")
def latest():
    report = json.loads(LATEST.read_text())
    return report, harness.results_from_report(report)


def page_row_texts(page: str) -> list[str]:
    """The texts of a results page that can name code: table titles (**…**), the first
    cell of every table row, notes and targets (_note: …_, _target …_)."""
    out = re.findall(r"^\*\*(.+?)\*\*", page, flags=re.M)
    for line in page.splitlines():
        if line.startswith("| ") and not line.startswith("| |") and "---" not in line:
            out.append(line.split("|")[1].strip())
        elif line.startswith(("_note: ", "_target ")):
            out.append(line.strip("_"))
    return out


def test_results_page_is_generated_from_latest_json(latest):
    report, results = latest
    page = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    scale = scale_report.section(ROOT / "benchmarks" / "results")  # its own JSON
    assert page == harness.RESULTS_HEADER + "\n" + harness.markdown(results, report["env"]) + scale


def test_no_row_of_the_results_page_names_missing_code():
    page = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    texts = page_row_texts(page)
    assert len(texts) > 20  # the parser sees the rows
    assert harness.stale_references(texts) == []


def test_the_page_parser_catches_a_stale_row():
    page = (
        "**Filtered search** (ms)\n\n| | median |\n|---|---:|\n"
        "| MemoryStore.search(filters=…) with proposed memstate.search | 1.0 |\n"
        "| raw SQL | 1.0 |\n\n_note: prototype: benchmarks/workloads/proto_search.sql_\n"
    )
    problems = harness.stale_references(page_row_texts(page))
    assert any("with proposed" in p and "prototype" in p for p in problems)
    assert any("benchmarks/workloads/proto_search.sql does not exist" in p for p in problems)


def test_readme_summary_is_generated_from_latest_json(latest):
    report, results = latest
    readme = (ROOT / "README.md").read_text()
    verdicts = tg.evaluate_all(results, report["env"], report["env"].get("workloads"))
    assert harness.readme_summary_of(readme) == harness.readme_summary(verdicts, report["env"])
    assert "[benchmarks/RESULTS.md](benchmarks/RESULTS.md)" in harness.readme_summary_of(readme)


def test_stored_verdicts_match_the_declarations(latest):
    """The JSON's targets are those the declarations give on its results (a changed
    declaration means a regenerated page)."""
    report, results = latest
    if "targets" not in report:
        pytest.skip("report written before targets were stored")
    again = [
        v.to_dict() for v in tg.evaluate_all(results, report["env"], report["env"].get("workloads"))
    ]
    # the figure is recomputed from the stored (rounded) medians: equal to 0.1 %
    figures = [t.pop("figure") for t in report["targets"]], [t.pop("figure") for t in again]
    assert report["targets"] == again
    assert figures[0] == pytest.approx(figures[1], rel=1e-3, nan_ok=True)


@pytest.mark.parametrize(
    "label, why",
    [
        ("MemoryStore.search(filters=…) with proposed memstate.search", "prototype"),
        ("binary vectors (prototype)", "prototype"),
        ("search via benchmarks/workloads/proposals.py", "does not exist"),
        ("memstate_pg.core.search", "does not import"),
        ("benchmarks.workloads.proposals", "does not import"),
        ("MemoryStore.serch (vector given)", "MemoryStore.serch is not in"),
        ("FooMirror.upsert (our adapter)", "FooMirror.upsert is not in"),
        ("raw SQL calling memstate.search_proto", "memstate.search_proto is not in"),
    ],
)
def test_generator_refuses_rows_naming_missing_code(label, why):
    r = harness.BenchResult("x", "X", "ms", False, "per query")
    r.add("baseline", [1.0], baseline=True)
    r.add(label, [2.0])
    with pytest.raises(harness.StaleRows, match=re.escape(why)):
        harness.markdown([r], {"date": "2026-11-28"})


@pytest.mark.parametrize(
    "label",
    [
        "MemoryStore.search (vector given)",
        "MemoryStore.commit_many (vectors given)",
        "ChromaMirror.upsert (our adapter)",
        "reconcile(repair=True), clean, InMemoryMirror as shipped",
        "LangGraph PostgresStore (pgvector HNSW) batch of PutOps",
        "MemState 0.5.1 Postgres + Chroma hook",
        "MemStateStore",
        "Sync worker throughput and lag (benchmarks/sync.py)",
        "memstate.search with memstate_pg.mirrors.ChromaMirror",
    ],
)
def test_generator_accepts_rows_naming_live_code(label):
    r = harness.BenchResult("x", "X", "ms", False, "per query")
    r.add("baseline", [1.0], baseline=True)
    r.add(label, [2.0])
    assert f"| {label} |" in harness.markdown([r], {"date": "2026-11-28"})


def test_readme_summary_replaces_only_its_span(tmp_path):
    page = tmp_path / "README.md"
    page.write_text(
        f"# x\n\nbefore\n\n{harness.SUMMARY_BEGIN}\nold\n{harness.SUMMARY_END}\n\nafter\n"
    )
    assert harness.write_readme_summary(page, "new line\n") is True
    assert page.read_text() == (
        f"# x\n\nbefore\n\n{harness.SUMMARY_BEGIN}\nnew line\n{harness.SUMMARY_END}\n\nafter\n"
    )
    assert harness.write_readme_summary(page, "new line\n") is False
    assert harness.readme_summary_of(page.read_text()) == "new line\n"
    (tmp_path / "bare.md").write_text("no markers\n")
    with pytest.raises(ValueError, match="no benchmark summary markers"):
        harness.write_readme_summary(tmp_path / "bare.md", "x\n")


def test_a_subset_run_keeps_the_other_workloads_tables_marked(tmp_path):
    from argparse import Namespace

    from rich.console import Console

    from benchmarks.__main__ import kept_results

    def result(name: str, workload: str | None) -> harness.BenchResult:
        r = harness.BenchResult(name, name.title(), "ops/s", True, "per run")
        r.add("base", [1.0], baseline=True, runs=1)
        if workload:
            r.env["workload"] = workload
        return r

    old_env = {"date": "2026-11-21T23:52:24+00:00", "git_commit": "4166c8b", "quick": False}
    old = [
        result("mixed", None),  # stored before results named their workload
        result("search_hashing_10000", "search"),
        result("gone", "a_workload_since_removed"),
    ]
    (tmp_path / "latest.json").write_text(json.dumps(harness.report_dict(old, old_env, [])))
    args = Namespace(out=tmp_path, fresh=False, quick=False)
    kept = kept_results(args, ["search"], Console(file=None, quiet=True))
    assert [r.name for r in kept] == ["mixed"]
    assert kept[0].env["measured"] == {"date": old_env["date"], "git_commit": "4166c8b"}
    page = harness.markdown(kept, {"date": "2026-11-28T20:00:00+00:00", "workloads": ["search"]})
    assert "_kept from an earlier run: 2026-11-21T23:52, commit 4166c8b_" in page
    assert kept_results(Namespace(out=tmp_path, fresh=True, quick=False), ["search"], None) == []
    quick = harness.report_dict(old, {**old_env, "quick": True}, [])
    (tmp_path / "latest.json").write_text(json.dumps(quick))
    assert kept_results(args, ["search"], None) == []
