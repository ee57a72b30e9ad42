"""Constraints hold across processes: the database enforces them, not a Python lock."""

from __future__ import annotations

import multiprocessing as mp

import psycopg
import pytest

from memstate_pg import ConflictError, Fact, MemoryStore

PROCESSES = 8
COMMITS = 200


def _hammer_singleton(dsn: str, worker: int, barrier) -> list[int]:
    from tests.support.helpers import register_test_types

    store = MemoryStore(dsn, min_size=1, max_size=1)
    register_test_types(store)
    barrier.wait()
    try:
        for i in range(COMMITS):
            store.commit(
                Fact(type="profile", payload={"field": "city", "value": f"w{worker}-{i}"}),
                namespace="race",
            )
    finally:
        store.close()
    return []


def _hammer_immutable(dsn: str, fid: str, barrier) -> int:
    from tests.support.helpers import register_test_types

    store = MemoryStore(dsn, min_size=1, max_size=1)
    register_test_types(store)
    barrier.wait()
    refused = 0
    try:
        for i in range(20):
            try:
                store.update(fid, {"payload": {"text": f"rewrite {i}"}})
            except ConflictError:
                refused += 1
    finally:
        store.close()
    return refused


def test_singleton_under_8_processes(mem: MemoryStore, dsn: str):
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(PROCESSES)
        with ctx.Pool(PROCESSES) as pool:
            pool.starmap(_hammer_singleton, [(dsn, w, barrier) for w in range(PROCESSES)])
    facts = mem.query("profile", namespace="race")
    assert len(facts) == 1  # exactly one live fact
    fid = facts[0].id
    history = mem.history(fid)
    total = PROCESSES * COMMITS
    assert [v.version for v in history] == list(range(1, total + 1))  # every version, no gaps
    assert facts[0].version == total  # no lost update
    written = {v.payload["value"] for v in history}
    assert written == {f"w{w}-{i}" for w in range(PROCESSES) for i in range(COMMITS)}
    with psycopg.connect(dsn) as conn:
        assert (
            conn.execute(
                "SELECT count(*) FROM memstate.commits WHERE namespace = 'race'"
            ).fetchone()[0]
            == total
        )


def test_immutable_under_concurrent_processes(mem: MemoryStore, dsn: str):
    fid = mem.commit(Fact(type="event", payload={"text": "signed up"}), namespace="imm")
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(4)
        with ctx.Pool(4) as pool:
            refused = pool.starmap(_hammer_immutable, [(dsn, str(fid), barrier) for _ in range(4)])
    assert refused == [20, 20, 20, 20]
    assert mem.get(fid).version == 1 and mem.get(fid).payload["text"] == "signed up"


@pytest.mark.parametrize("n", [2])
def test_singleton_first_insert_race(mem: MemoryStore, dsn: str, n):
    """Many processes create the *first* fact of a key at once: one wins, the rest update it."""
    ctx = mp.get_context("spawn")
    with ctx.Manager() as manager:
        barrier = manager.Barrier(PROCESSES)
        with ctx.Pool(PROCESSES) as pool:
            pool.starmap(_first_insert, [(dsn, w, barrier) for w in range(PROCESSES)])
    facts = mem.query("profile", namespace="first")
    assert len(facts) == 1 and facts[0].version == PROCESSES


def _first_insert(dsn: str, worker: int, barrier) -> None:
    from tests.support.helpers import register_test_types

    store = MemoryStore(dsn, min_size=1, max_size=1)
    register_test_types(store)
    barrier.wait()
    try:
        store.commit(
            Fact(type="profile", payload={"field": "lang", "value": f"w{worker}"}),
            namespace="first",
        )
    finally:
        store.close()
