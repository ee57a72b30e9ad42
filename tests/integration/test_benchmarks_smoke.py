"""Smoke test of the benchmark harness (`python -m benchmarks --quick`): tiny sizes, one
run, every workload, so the harness cannot rot. No timing assertions: only that each
workload ran (or was skipped with a reason) and the report has its expected shape."""

from __future__ import annotations

import json

import pytest

from benchmarks import harness
from benchmarks.__main__ import main

EXPECTED = {
    "commit_single",
    "commit_batch",
    "search_hashing_300",
    "search_random_300",
    "search_hashing_600",
    "search_random_600",
    "filtered_hashing_600",
    "filtered_random_600",
    "pernamespace_20x30",
    "mixed",
    "mirror_write",
    "sync",
    "reconcile",
    "judged_qdrant",
    "judged_chroma",
}
DELEGATED = {"sync", "langgraph_store"}  # other owners' benchmarks: may be absent or broken


@pytest.fixture
def report(pg_admin_dsn, tmp_path_factory, monkeypatch):
    out = tmp_path_factory.mktemp("bench")
    monkeypatch.setenv("MEMSTATE_DSN", pg_admin_dsn)
    main(["--quick", "--out", str(out), "--no-results", "--no-chart"])
    return json.loads((out / "latest.json").read_text()), out


@pytest.mark.timeout(120)
def test_quick_run_writes_a_complete_report(report):
    data, out = report
    assert data["schema"] == harness.SCHEMA_VERSION
    env = data["env"]
    for key in ("date", "postgresql", "pgvector", "dim", "machine", "sizes", "quick"):
        assert key in env
    assert env["quick"] is True and env["dim"] == 384
    by_name = {r["name"]: r for r in data["results"]}
    assert set(by_name) >= EXPECTED, sorted(by_name)
    for r in data["results"]:
        if r["name"] not in DELEGATED:
            assert not (r["skipped"] or "").startswith("failed"), (r["name"], r["skipped"])
        for key in (
            "title",
            "unit",
            "higher_is_better",
            "params",
            "series",
            "notes",
            "targets",
            "env",
        ):
            assert key in r
        assert r["env"]["postgresql"] and r["env"]["pgvector"] and r["env"]["dim"] == 384
        if r["skipped"] or r["name"] in DELEGATED:
            continue
        assert r["series"], r["name"]
        assert sum(s["baseline"] for s in r["series"]) == 1, r["name"]
        for s in r["series"]:
            assert set(s["stats"]) >= {"median", "p95", "min", "max", "n"}
            assert s["stats"]["n"] >= 1
            assert "ratio_to_baseline" in s
    for name in ("search_hashing_300", "filtered_hashing_600"):
        ours = next(s for s in by_name[name]["series"] if s["label"].startswith("MemoryStore"))
        assert 0.0 <= ours["extra"]["recall_tie"] <= 1.0
    assert "facts" in by_name["search_hashing_600"]["params"]
    assert (out / "latest.json").exists()
    again = harness.report_dict(harness.results_from_report(data), data["env"])
    assert [r["name"] for r in again["results"]] == [r["name"] for r in data["results"]]


def test_results_page_is_header_plus_tables(tmp_path):
    result = harness.BenchResult("x", "X", "ops/s", True, "per run", params={"facts": 3})
    result.add("base", [1.0, 2.0, 3.0], baseline=True)
    result.add("ours", [2.0, 4.0, 6.0])
    block = harness.markdown([result], {"date": "2026-01-01T00:00:00", "dim": 384})
    assert "| ours | 4.00 |" in block and "2.00×" in block

    page = tmp_path / "sub" / "RESULTS.md"
    assert harness.write_results(page, block) is True
    text = page.read_text()
    assert text.startswith("# Benchmark results\n") and text.endswith(block)
    assert harness.write_results(page, block) is False  # unchanged: not rewritten
    assert page.read_text() == text


def test_chart_is_written(tmp_path):
    pytest.importorskip("matplotlib")
    results = []
    for name, unit in (("a", "ms"), ("b", "ops/s")):
        r = harness.BenchResult(
            name, name.upper(), unit, unit != "ms", "per run", params={"facts": 3}
        )
        r.add("base", [1.0, 2.0], baseline=True)
        r.add("ours", [1.5, 2.5])
        results.append(r)
    results.append(harness.BenchResult("c", "C", "", True, "", skipped="absent"))
    paths = harness.write_chart(results, tmp_path, "stamp", {"date": "2026-01-01"})
    assert [p.name for p in paths] == ["results-stamp.png", "latest.png"]
    assert all(p.stat().st_size > 1000 for p in paths)


def test_results_page_names_only_code_that_exists():
    """benchmarks/RESULTS.md is regenerated from latest.json; no row may name a module,
    file or function that is gone (as the binary-vector prototype in
    benchmarks/workloads/proposals.py and `memstate_pg.core` once were)."""
    import importlib.util
    import re
    from pathlib import Path

    root = Path(harness.__file__).resolve().parents[1]
    page = (root / "benchmarks" / "RESULTS.md").read_text()
    assert page.startswith(harness.RESULTS_HEADER)
    data = json.loads((root / "benchmarks" / "results" / "latest.json").read_text())
    assert harness.markdown(harness.results_from_report(data), data["env"]) in page
    files = set(re.findall(r"\b((?:benchmarks|memstate_pg|tests|examples)/[\w/]+\.\w+)", page))
    assert [f for f in sorted(files) if not (root / f).exists()] == []
    modules = set(re.findall(r"\b(memstate_pg(?:\.\w+)+)", page))
    missing = []
    for dotted in sorted(modules):
        parts = dotted.split(".")
        # the longest importable prefix, then attributes
        for cut in range(len(parts), 0, -1):
            if importlib.util.find_spec(".".join(parts[:cut])) is not None:
                obj = importlib.import_module(".".join(parts[:cut]))
                try:
                    for attr in parts[cut:]:
                        obj = getattr(obj, attr)
                except AttributeError:
                    missing.append(dotted)
                break
        else:
            missing.append(dotted)
    assert missing == []
