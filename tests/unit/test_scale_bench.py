"""The scale benchmark's plumbing, without a database: it runs only when asked, its data is
reproducible from the seed (reused databases rely on that for the ground truth), and its
results land in their own section of RESULTS.md, kept by every regeneration."""

from __future__ import annotations

import json

import numpy as np

from benchmarks import __main__ as bench_main
from benchmarks import harness, scale_data, scale_report


def test_scale_runs_only_when_named():
    assert "scale" not in bench_main.selected(bench_main.parse_args([]))
    assert bench_main.selected(bench_main.parse_args(["--only", "scale"])) == ["scale"]
    args = bench_main.parse_args(["--only", "scale", "--scale-facts", "5000", "--scale-reuse"])
    sizes = bench_main.sizes_from(args)
    assert (sizes.scale_facts, sizes.scale_reuse) == (5000, True)


def test_vectors_and_ids_are_reproducible():
    space = scale_data.VectorSpace()
    a = scale_data.generate("one", 500, 1, space)
    b = scale_data.generate("one", 500, 1, space)
    assert np.array_equal(a.matrix, b.matrix) and a.ids == b.ids
    assert np.allclose(np.linalg.norm(a.matrix, axis=1), 1.0, atol=1e-5)
    many = scale_data.generate("many", 500, 50, space)
    assert not np.array_equal(many.matrix, a.matrix)  # its own stream
    assert [scale_data.namespace_of(int(r), 50) for r in many.namespace_rows(7)] == ["t00007"] * 10


def test_vectors_are_clustered_not_uniform():
    """Nearest neighbours must stand out from the median distance (else recall@10 is
    HNSW's worst case, the uniform sphere)."""
    space = scale_data.VectorSpace()
    m = space.draw(20_000, stream=0)
    q = space.draw(20, stream=2)
    d = np.sort(1.0 - q @ m.T, axis=1)
    assert np.median(d[:, 9]) < 0.5 * np.median(d[:, d.shape[1] // 2])


def _result(name: str, label: str, values: list[float], **extra) -> harness.BenchResult:
    r = harness.BenchResult(name, name, "ms", False, "per query", params={"facts": 1000})
    r.add(label, values, baseline=True, runs=1, **extra)
    return r


def test_section_comes_from_its_own_json(tmp_path):
    assert scale_report.section(tmp_path) == ""
    env = {"date": "2026-11-28T21:00:00+00:00", "machine": {"cpu": "x", "cores": 2}}
    results = [
        _result("scale_search", "raw pgvector SQL (ef_search=40)", [1.0, 2.0], recall_tie=0.9),
        harness.BenchResult(
            "scale_compact", "c", "versions/s", True, "per run", skipped="not run: x"
        ),
    ]
    paths = scale_report.write_json(results, env, tmp_path, "stamp")
    assert {p.name for p in paths} == {"scale-stamp.json", scale_report.LATEST}
    assert "results" in json.loads((tmp_path / scale_report.LATEST).read_text())
    text = scale_report.section(tmp_path)
    assert text.startswith("\n## Scale: 1M facts")
    assert "| compact | not run: x |" in text
    assert "raw pgvector SQL (ef_search=40)" in text
