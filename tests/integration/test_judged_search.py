"""Search served by a mirror, judged by Postgres (`search(q, via=name)`, _core/judged.py),
against real vector stores: with the sync worker stopped, facts are updated and deleted,
and a search via the mirror still returns no ghost and no old version (the replacements
come from pgvector); with the worker caught up, the result is the mirror's own answer.
Chroma embedded and over HTTP, Qdrant local mode, the in-memory mirror; the async twin;
a Row Level Security tenant that cannot reach another namespace through the mirror."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from memstate_pg import (
    AsyncMemoryStore,
    Fact,
    HashingEmbedder,
    MemoryStore,
    NotFound,
    ValidationFailed,
)
from memstate_pg.mirrors import ChromaMirror, InMemoryMirror, Mirror, MirrorRecord, QdrantMirror
from memstate_pg.mirrors.faults import FlakyMirror
from memstate_pg.sync import SyncWorker
from tests.integration.test_async_store import SyncView
from tests.integration.test_rls import login, secured, stores  # noqa: F401 (fixtures)
from tests.support.chroma_server import ChromaServer

KINDS = ["memory", "chroma-embedded", "chroma-server", "qdrant-local"]

WORDS = [
    "apple",
    "banana",
    "cherry",
    "delta",
    "echo",
    "forest",
    "garden",
    "harbor",
    "island",
    "jungle",
    "kettle",
    "lemon",
    "meadow",
    "night",
    "ocean",
    "pepper",
    "quartz",
    "river",
    "silver",
    "tiger",
    "umbrella",
    "valley",
    "walnut",
    "yellow",
]


@pytest.fixture
def make_mirror(request: pytest.FixtureRequest, tmp_path) -> Iterator[Callable[[str], Mirror]]:
    made: list[Mirror] = []

    def make(kind: str) -> Mirror:
        collection = f"j_{uuid.uuid4().hex[:12]}"
        if kind == "memory":
            m: Mirror = InMemoryMirror()
        elif kind == "chroma-embedded":
            m = ChromaMirror.from_path(tmp_path / "chroma", collection)
        elif kind == "chroma-server":
            server: ChromaServer = request.getfixturevalue("chroma_server")
            m = ChromaMirror.from_url(server.url, collection)
        elif kind == "qdrant-local":
            m = QdrantMirror.from_location(str(tmp_path / "qdrant"), collection)
        else:
            raise ValueError(kind)
        made.append(m)
        return m

    yield make
    for m in made:
        m.close()


def note(text: str) -> Fact:
    return Fact(type="note", payload={"text": text})


def seed(mem: MemoryStore, n: int = 24, namespace: str = "default") -> list[Any]:
    """n notes of three words each, overlapping so that every query has many neighbours."""
    return [
        mem.commit(
            note(f"{WORDS[i % 24]} {WORDS[(i + 1) % 24]} {WORDS[(i * 7) % 24]}"),
            namespace=namespace,
        )
        for i in range(n)
    ]


def ids(hits: list) -> list[str]:
    return [str(h.fact.id) for h in hits]


def assert_current(mem: MemoryStore, hits: list, gone: set[str]) -> None:
    """Every hit is a live fact at its current version, with its current content."""
    for hit in hits:
        assert str(hit.fact.id) not in gone, "a deleted fact came back (ghost)"
        live = mem.get(hit.fact.id)
        assert live is not None, "a ghost"
        assert hit.fact.version == live.version, "an old version"
        assert hit.fact.content == live.content and hit.fact.payload == live.payload


def ranked(pairs: list[tuple[str, float]]) -> tuple[list[float], set[str]]:
    """Tie-aware view of a ranking: its scores (rounded), and the ids above the lowest one
    (ties at the cut may be broken either way by stores computing in float4 and float8)."""
    scores = [round(s, 4) for _, s in pairs]
    cut = min(scores, default=0.0)
    return scores, {fid for fid, s in pairs if round(s, 4) > cut}


def assert_same_answer(got: list, want: list) -> None:
    assert ranked([(str(h.fact.id), h.score) for h in got]) == ranked(
        [(str(h.fact.id), h.score) for h in want]
    )


def assert_mirror_answer(got: list, mirror_top: list) -> None:
    assert ranked([(str(h.fact.id), h.score) for h in got]) == ranked(
        [(h.fact_id, h.score) for h in mirror_top]
    )


@pytest.mark.parametrize("kind", KINDS)
def test_a_lagging_mirror_never_serves_a_ghost_or_an_old_version(
    mem: MemoryStore, make_mirror, kind: str
) -> None:
    m = make_mirror(kind)
    facts = seed(mem)
    mem.add_mirror(m, "m")
    with SyncWorker(mem, ["m"]) as worker:
        assert worker.drain(30)

    # caught up: the answer is the mirror's own, rescored by Postgres, and equals pgvector's
    query = "apple banana cherry"
    vector = mem.embedder.embed([query])[0]
    got = mem.search(query, k=5, via="m")
    assert_mirror_answer(got, m.query(vector, 5, namespace="default"))
    assert (got.corrected, got.from_pgvector, got.fallback) == (0, 0, None)
    assert got.from_mirror == 5 and got.candidates == 10
    assert_same_answer(got, mem.search(query, k=5))

    # the worker stops; the nearest facts change under it
    before = ids(mem.search(query, k=8))
    moved, dropped = before[:2], before[2:4]
    for fid in moved:
        mem.update(fid, {"payload": {"text": "zebra quantum nebula"}})
    for fid in dropped:
        mem.delete(fid)
    gone = set(dropped)
    assert set(moved + dropped) <= {h.fact_id for h in m.query(vector, 10, namespace="default")}

    got = mem.search(query, k=5, via="m")
    assert_current(mem, got, gone)
    assert got.stale == 2 and got.deleted == 2 and got.corrected == 4
    assert got.from_mirror + got.from_outbox + got.from_pgvector == len(got) == 5
    assert_same_answer(got, mem.search(query, k=5))

    # the moved facts' new text is found, at the new version, though the mirror lags: the
    # facts the mirror has not received (waiting in the outbox) are scored by Postgres
    got = mem.search("zebra quantum nebula", k=2, via="m")
    assert sorted(ids(got)) == sorted(moved)
    assert all(h.fact.version == 2 for h in got)
    assert (got.from_outbox, got.from_pgvector) == (2, 0)
    fresh = mem.commit(note("xylophone yodel"))
    got = mem.search("xylophone yodel", k=1, via="m")
    assert ids(got) == [str(fresh)] and got.from_outbox == 1

    # a point of a fact that never existed, planted nearest to the query: never returned
    planted = str(uuid.uuid4())
    m.upsert(
        [MirrorRecord(planted, 1, "default", "note", vector, mem.embedder.model, "planted", {})]
    )
    got = mem.search(query, k=5, via="m")
    assert planted not in ids(got) and got.deleted >= 3
    assert_same_answer(got, mem.search(query, k=5))

    # the worker catches up: the mirror alone answers again
    m.delete([planted])
    with SyncWorker(mem, ["m"]) as worker:
        assert worker.drain(30)
    got = mem.search(query, k=5, via="m")
    assert (got.corrected, got.from_outbox, got.from_pgvector) == (0, 0, 0)
    assert_mirror_answer(got, m.query(vector, 5, namespace="default"))
    assert_same_answer(got, mem.search(query, k=5))
    assert facts  # seeded


def test_filters_type_and_namespace_are_judged_by_postgres(mem: MemoryStore) -> None:
    m = InMemoryMirror()
    seed(mem, 12)
    seed(mem, 12, namespace="other")
    tagged = mem.commit(Fact(type="note", payload={"text": "apple banana", "tags": ["x"]}))
    mem.add_mirror(m, "m")
    with SyncWorker(mem, ["m"]) as worker:
        assert worker.drain(30)
    got = mem.search("apple banana", k=3, via="m", filters={"tags": ["x"]})
    assert ids(got) == [str(tagged)]
    assert got.filtered >= 1 and got.corrected == 0
    got = mem.search("apple banana", k=4, via="m", namespace="other")
    assert got and all(h.fact.namespace == "other" for h in got)
    assert_same_answer(got, mem.search("apple banana", k=4, namespace="other"))
    assert mem.search("apple banana", k=4, via="m", type="preference") == []


def test_unknown_blind_and_down_mirrors(mem: MemoryStore, caplog) -> None:
    seed(mem, 6)
    with pytest.raises(NotFound, match="no mirror 'nope'"):
        mem.search("apple", via="nope")

    class Blind(InMemoryMirror):
        can_query = False

    mem.add_mirror(Blind(name="blind"), "blind")
    with pytest.raises(ValidationFailed, match="cannot answer queries"):
        mem.search("apple", via="blind")

    flaky = FlakyMirror(InMemoryMirror(name="flaky"))
    mem.add_mirror(flaky, "flaky")
    with SyncWorker(mem, ["flaky"]) as worker:
        assert worker.drain(30)
    with flaky.outage():
        got = mem.search("apple banana", k=3, via="flaky")
    assert got.fallback == "injected: mirror down" and got.from_pgvector == len(got) == 3
    assert_same_answer(got, mem.search("apple banana", k=3))
    assert "fell back to pgvector" in caplog.text
    assert mem.search("apple banana", k=3, via="flaky").fallback is None


def test_a_mirror_known_only_by_its_registry_row_is_rebuilt(mem: MemoryStore, tmp_path) -> None:
    seed(mem, 8)
    mem.add_mirror(QdrantMirror.from_location(str(tmp_path / "q"), "rebuilt"), "q")
    with SyncWorker(mem, ["q"]) as worker:
        assert worker.drain(30)
    mem.mirror("q").close()  # local Qdrant: one client per path
    other = MemoryStore(mem.dsn, max_size=2)
    try:
        got = other.search("apple banana", k=3, via="q")
        assert got.from_mirror == 3 and got.corrected == 0
        assert_same_answer(got, other.search("apple banana", k=3))
    finally:
        other.mirror("q").close()
        other.close()


def test_async_twin(mem: MemoryStore, loop: asyncio.AbstractEventLoop) -> None:
    m = InMemoryMirror()
    seed(mem)
    mem.add_mirror(m, "m")
    with SyncWorker(mem, ["m"]) as worker:
        assert worker.drain(30)
    amem: Any = SyncView(
        asyncio.run_coroutine_threadsafe(AsyncMemoryStore.open(mem.dsn, max_size=2), loop).result(),
        loop,
    )
    try:
        amem.use_mirror("m", m)
        query = "apple banana cherry"
        got = amem.search(query, k=5, via="m")
        assert (got.corrected, got.from_pgvector) == (0, 0)
        assert_same_answer(got, mem.search(query, k=5, via="m"))
        before = ids(mem.search(query, k=4))
        mem.update(before[0], {"payload": {"text": "zebra"}})
        mem.delete(before[1])
        got = amem.search(query, k=5, via="m")
        assert got.stale == 1 and got.deleted == 1
        assert_current(mem, got, {before[1]})
        assert_same_answer(got, mem.search(query, k=5))
    finally:
        amem.close()


def test_a_tenant_cannot_reach_another_namespace_through_the_mirror(
    mem: MemoryStore,
    login,  # noqa: F811
    stores,  # noqa: F811
) -> None:
    m = InMemoryMirror()
    for ns in ("a", "b"):
        for i in range(4):
            mem.commit(note(f"{ns} secret note {i}"), namespace=ns)
    mem.add_mirror(m, "m")
    with SyncWorker(mem, ["m"]) as worker:
        assert worker.drain(30)
    app = stores(login("memstate_app", "a"))
    # use_mirror() reads memstate.mirror_info, which a tenant may (it once read the registry,
    # memstate.mirrors, and failed with PermissionDenied)
    app.use_mirror("m", m)
    # a mirror that covers only another tenant's namespace is not one it may use
    mem.add_mirror(InMemoryMirror(), "only_b", namespaces=["b"], backfill=False)
    with pytest.raises(NotFound):
        app.use_mirror("only_b", InMemoryMirror())
    # the mirror itself holds b's points and answers for b: Postgres, as the tenant, refuses
    vector = app.embedder.embed(["secret note"])[0]
    assert len(m.query(vector, 8, namespace="b")) == 4
    got = app.search("secret note", k=4, via="m", namespace="b")
    assert got == [] and got.deleted == 4
    got = app.search("secret note", k=4, via="m", namespace="a")
    assert len(got) == 4 and {h.fact.namespace for h in got} == {"a"}
    assert got.corrected == 0


def test_a_local_qdrant_answers_queries_while_the_worker_writes() -> None:
    """qdrant-client's local mode is not thread-safe: a query racing an upsert failed with
    an IndexError inside its numpy arrays (found by the judged benchmark). QdrantMirror
    serialises the calls of a local client."""
    import threading

    m = QdrantMirror.from_location(":memory:", "race")
    emb = HashingEmbedder(dim=32)
    errors: list[BaseException] = []
    done = threading.Event()

    def write() -> None:
        try:
            for start in range(0, 3000, 50):
                m.upsert(
                    [
                        MirrorRecord(
                            str(uuid.uuid4()), 1, "default", "note", vec, emb.model, "t", {}
                        )
                        for vec in emb.embed([f"w{start + i}" for i in range(50)])
                    ]
                )
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)
        finally:
            done.set()

    writer = threading.Thread(target=write)
    writer.start()
    queries = 0
    try:
        while not done.is_set():
            m.query(emb.embed(["w1"])[0], 5, namespace="default")
            queries += 1
    finally:
        writer.join()
        m.close()
    assert not errors and queries > 0
