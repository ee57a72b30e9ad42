"""The compaction operation (memstate_pg.compaction) driven without a database: its batches
resume after the last fact id / seq, stop at a short batch, and a bound store compacts only
its own namespace."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import uuid4

import pytest

from memstate_pg import PermissionDenied, ValidationFailed
from memstate_pg._core.ops import StoreCore
from memstate_pg._core.protocol import Exec, Request
from memstate_pg.compaction import compact
from memstate_pg.embedders import HashingEmbedder
from tests.unit.test_ops import drive


def script(version_batches: list[dict[str, Any]], commit_batches: list[dict[str, Any]]):
    versions, commits = iter(version_batches), iter(commit_batches)

    def respond(request: Request) -> Any:
        assert isinstance(request, Exec)
        q = request.query
        if "now() -" in q:
            return {"before": "2026-01-01T00:00:00Z"}
        if "compact_begin" in q:
            return [{"namespace": "a", "horizon_seq": 7}]
        if "count(DISTINCT" in q:
            return {"facts": 5, "commits": 3}
        if "compact_versions" in q:
            return next(versions)
        if "compact_commits" in q:
            return next(commits)
        if "compact_housekeeping" in q:
            return {"dead_outbox": 0, "reembed_staging": 0, "lg_clocks": 0}
        if "compact_finish" in q:
            return None
        raise AssertionError(q)

    return respond


def test_batches_resume_after_the_last_id_and_stop_at_a_short_batch() -> None:
    core = StoreCore(embedder=HashingEmbedder(dim=8))
    first, second = uuid4(), uuid4()
    respond = script(
        [
            {"last_fact": first, "facts": 2, "versions_deleted": 3, "vectors_materialised": 1},
            {"last_fact": second, "facts": 2, "versions_deleted": 2, "vectors_materialised": 0},
            {"last_fact": None, "facts": 0, "versions_deleted": 0, "vectors_materialised": 0},
        ],
        [
            {"last_seq": 4, "scanned": 2, "commits_deleted": 2},
            {"last_seq": 7, "scanned": 1, "commits_deleted": 0},
        ],
    )
    seen_progress: list[tuple[int, int | None]] = []
    report, seen = drive(
        compact(
            core,
            keep_versions=2,
            older_than=timedelta(days=1),
            batch_size=2,
            progress=lambda d, t: seen_progress.append((d, t)),
        ),
        respond,
    )
    batches = [r.params for r in seen if isinstance(r, Exec) and "compact_versions" in r.query]
    assert [b["after"] for b in batches] == [
        "00000000-0000-0000-0000-000000000000",
        str(first),
        str(second),
    ]
    commit_pages = [r.params for r in seen if isinstance(r, Exec) and "compact_commits" in r.query]
    assert [p["after"] for p in commit_pages] == [0, 4]
    assert (report.versions_deleted, report.vectors_materialised, report.commits_deleted) == (
        5,
        1,
        2,
    )
    assert all(b["ns"] is None for b in batches)  # an unbound store: every namespace
    assert seen_progress[0] == (0, 8) and seen_progress[-1][0] == 7


def test_a_bound_store_compacts_its_own_namespace_only() -> None:
    core = StoreCore(embedder=HashingEmbedder(dim=8), namespace="mine")
    respond = script(
        [{"last_fact": None, "facts": 0, "versions_deleted": 0, "vectors_materialised": 0}],
        [{"last_seq": None, "scanned": 0, "commits_deleted": 0}],
    )
    _, seen = drive(compact(core, keep_versions=1, older_than="7d"), respond)
    assert {r.params["ns"] for r in seen if isinstance(r, Exec) and "ns" in (r.params or {})} == {
        "mine"
    }
    with pytest.raises(PermissionDenied):
        drive(compact(core, keep_versions=1, older_than="7d", namespace="other"), respond)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"keep_versions": 0, "older_than": "1d"},
        {"keep_versions": 1, "older_than": "0s"},
        {"keep_versions": 1, "older_than": "tomorrow"},
        {"keep_versions": 1, "older_than": timedelta(seconds=-1)},
        {"keep_versions": 1, "older_than": "1d", "batch_size": 0},
    ],
)
def test_bad_arguments_are_refused_before_any_request(kwargs: dict[str, Any]) -> None:
    core = StoreCore(embedder=HashingEmbedder(dim=8))
    with pytest.raises(ValidationFailed):
        drive(compact(core, **kwargs), lambda r: pytest.fail(f"request made: {r}"))
