"""Property: whatever sequence of commits, updates, deletes, rollbacks, reverts, session
promotions and discards happens, with whatever mirror failures (fail before / after the
write, timeouts that may or may not have written, outages) and partial syncs in between,
once the worker drains every mirror equals Postgres's live set by id, version and vector.

Each example gets its own namespace and its own mirrors (InMemory, Chroma embedded, Qdrant
local mode, each behind a FlakyMirror), registered for that namespace only, so examples
share one database without seeing each other.
"""

from __future__ import annotations

import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from memstate_pg import ConflictError, Fact, NotFound
from memstate_pg.mirrors import ChromaMirror, FlakyMirror, InMemoryMirror, Mirror, QdrantMirror
from memstate_pg.mirrors.chroma import ephemeral_client
from memstate_pg.sync import SyncWorker
from tests.support.sync_procs import SyncStore, drift, no_drift


@pytest.fixture(scope="module")
def chroma_client():
    return ephemeral_client()


sessions = st.sampled_from([None, None, "s1", "s2"])
op = st.one_of(
    st.tuples(st.just("commit"), st.text("abcxyz ", min_size=1, max_size=12), sessions),
    st.tuples(st.just("update"), st.integers(0, 50), st.text("abcxyz ", min_size=1, max_size=12)),
    st.tuples(st.just("delete"), st.integers(0, 50)),
    st.tuples(st.just("tx"), st.integers(1, 4), st.integers(0, 50)),
    st.tuples(st.just("rollback"), st.integers(1, 3)),
    st.tuples(st.just("revert_last_rollback")),
    st.tuples(st.just("promote"), st.sampled_from(["s1", "s2"])),
    st.tuples(st.just("discard"), st.sampled_from(["s1", "s2"])),
    st.tuples(st.just("sync")),
    st.tuples(st.just("outage"), st.booleans()),
)
faults = st.tuples(
    st.floats(0, 0.3), st.floats(0, 0.2), st.floats(0, 0.2)
)  # fail_before, fail_after, timeout (sum <= 0.7: every write succeeds eventually)


def apply(
    store: SyncStore, ns: str, step: tuple, flaky: list[FlakyMirror], worker: SyncWorker
) -> None:
    kind = step[0]
    live = [f.id for f in store.query(namespace=ns)] if kind in ("update", "delete", "tx") else []
    try:
        if kind == "commit":
            store.commit(
                Fact(type="note", payload={"text": step[1]}), namespace=ns, session_id=step[2]
            )
        elif kind == "update" and live:
            store.update(live[step[1] % len(live)], {"payload": {"text": step[2], "tags": ["u"]}})
        elif kind == "delete" and live:
            store.delete(live[step[1] % len(live)])
        elif kind == "tx":  # several changes under one commit seq
            with store.transaction(namespace=ns) as tx:
                for i in range(step[1]):
                    tx.commit(Fact(type="note", payload={"text": f"tx {i}"}))
                if live:
                    tx.update(live[step[2] % len(live)], {"payload": {"text": "in tx"}})
        elif kind == "rollback":
            store.rollback(step[1], namespace=ns)
        elif kind == "revert_last_rollback":
            rollbacks = [
                c
                for c in store.commits(namespace=ns)
                if c["kind"] == "rollback" and not c["undone_by"]
            ]
            if rollbacks:
                store.revert(rollbacks[0]["seq"])
        elif kind == "promote":
            store.promote_session(step[1], namespace=ns)
        elif kind == "discard":
            store.discard_session(step[1], namespace=ns)
        elif kind == "sync":
            worker.run_once()
        elif kind == "outage":
            for m in flaky:
                m.set_down(step[1])
    except (ConflictError, NotFound):
        pass  # refused by the rules (undo blocked by a later change, a fact gone): no write


@settings(
    max_examples=25,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    steps=st.lists(op, min_size=1, max_size=20),
    fault=faults,
    seed=st.integers(0, 2**16),
    batch=st.integers(1, 12),
)
def test_mirrors_converge_to_postgres(
    store: SyncStore, chroma_client, steps, fault, seed, batch
) -> None:
    ns = f"p{uuid.uuid4().hex[:10]}"
    collection = f"c_{ns}"
    inner: dict[str, Mirror] = {
        f"{ns}-mem": InMemoryMirror(max_batch_size=5),
        f"{ns}-chroma": ChromaMirror(chroma_client, collection, batch_size=4),
        f"{ns}-qdrant": QdrantMirror.from_location(":memory:", collection, batch_size=3),
    }
    flaky = [
        FlakyMirror(
            m,
            fail_before=fault[0],
            fail_after=fault[1],
            timeout=fault[2],
            timeout_seconds=0.001,
            seed=seed + i,
        )
        for i, m in enumerate(inner.values())
    ]
    mirrors = dict(zip(inner, flaky, strict=True))
    for name, m in mirrors.items():
        store.add_mirror(m, name, namespaces=[ns])
    worker = SyncWorker(
        store,
        mirrors,
        batch_size=batch,
        max_attempts=10_000,
        backoff_base=0.0005,
        backoff_max=0.004,
    )
    try:
        for step in steps:
            apply(store, ns, step, flaky, worker)
        for m in flaky:
            m.set_down(False)
        assert worker.drain(60), worker.pending()
        for name, m in inner.items():
            d = drift(store.dsn, m, namespaces=[ns])
            assert no_drift(d), (name, d)
    finally:
        worker.close()
        for name, m in inner.items():
            store.remove_mirror(name)
            m.close()
        chroma_client.delete_collection(collection)
