"""The sync worker against real vector stores: Chroma embedded, a `chroma run` server, and
Qdrant local mode. After a drain each mirror equals Postgres by id, version and vector; a
record the store itself rejects is parked alone as dead with the store's error."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from memstate_pg import Fact
from memstate_pg.mirrors import ChromaMirror, Mirror, QdrantMirror
from memstate_pg.sync import SyncWorker
from tests.support.chroma_server import ChromaServer
from tests.support.sync_procs import SyncStore, drift, no_drift, outbox_rows

KINDS = ["chroma-embedded", "chroma-server", "qdrant-memory"]


@pytest.fixture
def make_mirror(request: pytest.FixtureRequest, tmp_path) -> Iterator[Callable[[str], Mirror]]:
    """make_mirror(kind) -> a fresh, empty mirror of that kind (unique collection)."""
    made: list[Mirror] = []

    def make(kind: str) -> Mirror:
        collection = f"t_{uuid.uuid4().hex[:12]}"
        if kind == "chroma-embedded":
            m: Mirror = ChromaMirror.from_path(tmp_path / "chroma", collection)
        elif kind == "chroma-server":
            server: ChromaServer = request.getfixturevalue("chroma_server")
            m = ChromaMirror.from_url(server.url, collection)
        elif kind == "qdrant-memory":
            m = QdrantMirror.from_location(":memory:", collection)
        else:
            raise ValueError(kind)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


@pytest.mark.parametrize("kind", KINDS)
def test_updates_deletes_and_rollbacks_converge(store: SyncStore, make_mirror, kind: str) -> None:
    m = make_mirror(kind)
    store.add_mirror(m, "m", metadata_fields=["tags", "role"])
    ids = [
        store.commit(Fact(type="note", payload={"text": f"note {i}", "tags": ["a", str(i)]}))
        for i in range(12)
    ]
    pref = store.commit(
        Fact(type="preference", payload={"topic": "tea", "value": "green", "role": "dislike"})
    )
    with SyncWorker(store, batch_size=5) as w:
        assert w.drain(20)
        for fid in ids[:4]:
            store.update(fid, {"payload": {"text": "changed", "tags": []}})
        for fid in ids[4:7]:
            store.delete(fid)
        store.rollback(1, namespace="default")  # brings ids[6] back
        assert w.drain(20)
    d = drift(store.dsn, m)
    assert no_drift(d), d
    point = m.get([str(pref)])[str(pref)]
    assert point.metadata["role"] == "dislike" and point.metadata["type"] == "preference"
    assert point.metadata["content"] == "green"
    changed = m.get([str(ids[0])])[str(ids[0])]
    assert changed.version == 2 and changed.metadata["content"] == "changed"
    if kind.startswith("chroma"):  # lists become JSON text in Chroma (scalars only)
        assert m.get([str(ids[8])])[str(ids[8])].metadata["tags"] == '["a", "8"]'
    else:
        assert m.get([str(ids[8])])[str(ids[8])].metadata["tags"] == ["a", "8"]


@pytest.mark.parametrize("kind", ["chroma-embedded", "qdrant-memory"])
def test_a_record_the_store_rejects_is_parked_alone(
    store: SyncStore, make_mirror, kind: str
) -> None:
    m = make_mirror(kind)
    # model="*": a mirror of every model (bound to the store's model, the odd record would
    # never be enqueued for it: tests/integration/test_reembed.py)
    store.add_mirror(m, "m", model="*")
    first = store.commit(Fact(type="note", payload={"text": "sets the collection's dimension"}))
    w = SyncWorker(store, max_attempts=2, backoff_base=0.0, backoff_max=0.0)
    assert w.drain(10)
    good = [store.commit(Fact(type="note", payload={"text": f"ok {i}"})) for i in range(9)]
    odd = store.commit(
        Fact(type="note", payload={"text": "8 dims"}, embedding=[0.5] * 8, embedding_model="tiny-8")
    )
    good += [store.commit(Fact(type="note", payload={"text": f"ok later {i}"})) for i in range(6)]
    assert w.drain(20)
    w.close()
    (dead,) = outbox_rows(store.dsn, "m")
    assert dead["fact_id"] == odd and dead["dead_at"] is not None
    assert (
        dead["last_error"].startswith("MirrorError: ") and "dimension" in dead["last_error"].lower()
    )
    held = {fid for page in m.scan() for fid, _ in page}
    assert held == {str(f) for f in [first, *good]}
    assert store.status()["m"].dead == 1


def test_several_mirrors_from_one_outbox(store: SyncStore, make_mirror) -> None:
    chroma, qdrant = make_mirror("chroma-embedded"), make_mirror("qdrant-memory")
    store.add_mirror(chroma, "chroma")
    store.add_mirror(qdrant, "qdrant", types=["note"])
    store.commit(Fact(type="note", payload={"text": "both"}))
    store.commit(Fact(type="preference", payload={"topic": "x", "value": "chroma only"}))
    with SyncWorker(store) as w:
        assert w.drain(10)
    assert chroma.count() == 2 and qdrant.count() == 1
    assert no_drift(drift(store.dsn, chroma)) and store.reconcile("qdrant").drift == 0
