"""The drift experiment of the demo and benchmarks/consistency.py, small: memstate-pg ends
with the mirror equal to Postgres by id and version under every fault; the naive dual
write does not (so the comparison can tell)."""

from __future__ import annotations

import logging
import uuid

import pytest

from memstate_pg.demos.consistency import SCENARIOS, compare, run_memstate, run_naive, workload
from memstate_pg.mirrors import ChromaMirror, InMemoryMirror
from memstate_pg.mirrors.chroma import ephemeral_client


@pytest.fixture(autouse=True)
def quiet():
    logging.getLogger("memstate_pg.sync").setLevel(logging.ERROR)


def test_workload_has_updates_and_deletes():
    ops = workload(20, 30, 5)
    assert sum(op == "delete" for op, _, _ in ops) == 5
    assert len(ops) == 55 and len({k for op, k, _ in ops if op == "put"}) == 20


@pytest.mark.parametrize("scenario", SCENARIOS, ids=[s.name for s in SCENARIOS])
def test_memstate_converges_where_naive_drifts(dsn: str, scenario):
    ops = workload(30, 45, 8, seed=11)
    ours = run_memstate(dsn, InMemoryMirror(), scenario, ops, seed=5)
    assert (ours.missing, ours.stale, ours.ghosts, ours.lost_writes) == (0, 0, 0, 0)
    assert ours.converge_seconds is not None and ours.points_in_mirror == ours.facts_in_postgres > 0
    naive = run_naive(dsn, InMemoryMirror(), scenario, ops, seed=5)
    if scenario.name != "fail after write":  # the write landed: naive happens to be right
        assert naive.drift > 0


def test_on_chroma_embedded(dsn: str):

    client = ephemeral_client()
    mirror = ChromaMirror(client, collection=f"t-{uuid.uuid4().hex[:8]}")
    ours = run_memstate(dsn, mirror, SCENARIOS[2], workload(25, 30, 5), seed=3)
    assert ours.drift == 0 and ours.lost_writes == 0
    assert compare({}, InMemoryMirror()) == (0, 0, 0, 0)
