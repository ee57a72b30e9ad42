"""Behaviour of the mirror adapters themselves (no Postgres needed).

One suite runs against every adapter: the dict-backed InMemoryMirror, Chroma embedded,
Chroma over a real ``chroma run`` server, and Qdrant's in-process engine. Each test
builds its mirror on a fresh, uniquely named collection.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from memstate_pg.errors import MirrorError
from memstate_pg.mirrors import (
    ChromaMirror,
    FlakyMirror,
    InMemoryMirror,
    Mirror,
    MirrorRecord,
    MirrorTimeout,
    QdrantMirror,
    build_payload,
)
from memstate_pg.mirrors.chroma import encode_metadata, ephemeral_client

# The chroma_server fixtures come from tests/chroma_server.py, registered as a plugin by
# tests/conftest.py (without it: python -m pytest --noconftest -p tests.support.chroma_server).
from tests.support.chroma_server import ChromaServer

DIM = 8
KINDS = ["memory", "chroma", "chroma-server", "qdrant"]

MakeMirror = Callable[..., Mirror]


# -- helpers ---------------------------------------------------------------------------


def unit_vector(seed: int) -> list[float]:
    rng = random.Random(seed)
    v = [rng.uniform(-1, 1) for _ in range(DIM)]
    norm = math.sqrt(sum(x * x for x in v))
    return [x / norm for x in v]


def record(
    fact_id: str | None = None,
    *,
    version: int = 1,
    seed: int = 0,
    content: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> MirrorRecord:
    fid = fact_id or str(uuid.uuid4())
    return MirrorRecord(
        fact_id=fid,
        version=version,
        namespace="agent/alice",
        type="note",
        embedding=unit_vector(seed),
        embedding_model="test-8d",
        content=content if content is not None else f"content of {fid} v{version}",
        metadata=metadata if metadata is not None else {"topic": "t"},
    )


def unique_name() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def assert_vector_close(got: list[float] | None, want: list[float]) -> None:
    assert got is not None
    assert len(got) == len(want)
    assert all(math.isclose(g, w, abs_tol=1e-5) for g, w in zip(got, want, strict=True)), (
        got,
        want,
    )


# -- the mirror under test -------------------------------------------------------------


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def make_mirror(kind: str, request: pytest.FixtureRequest) -> Iterator[MakeMirror]:
    """``make_mirror(batch_size=None)``: a fresh mirror of the parametrized kind."""
    made: list[Mirror] = []

    def make(batch_size: int | None = None) -> Mirror:
        mirror: Mirror
        if kind == "memory":
            mirror = InMemoryMirror(max_batch_size=batch_size or 1000)
        elif kind == "chroma":
            mirror = ChromaMirror(ephemeral_client(), unique_name(), batch_size=batch_size)
        elif kind == "chroma-server":
            server: ChromaServer = request.getfixturevalue("chroma_server")
            mirror = ChromaMirror.from_url(server.url, unique_name(), batch_size=batch_size)
        else:
            mirror = QdrantMirror.from_location(
                ":memory:", unique_name(), batch_size=batch_size or 256
            )
        made.append(mirror)
        return mirror

    yield make
    for mirror in made:
        mirror.close()


@pytest.fixture
def mirror(make_mirror: MakeMirror) -> Mirror:
    return make_mirror()


def native_write_sizes(mirror: Mirror, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the size of every native upsert/delete call the adapter makes."""
    if isinstance(mirror, InMemoryMirror):
        return mirror.batch_sizes
    sizes: list[int] = []
    if isinstance(mirror, ChromaMirror):
        coll = mirror.collection
        for name in ("upsert", "delete"):
            original = getattr(coll, name)

            def spy(*args: Any, _orig: Any = original, **kwargs: Any) -> Any:
                sizes.append(len(kwargs["ids"]))
                return _orig(*args, **kwargs)

            monkeypatch.setattr(coll, name, spy)
        return sizes
    assert isinstance(mirror, QdrantMirror)
    up, delete = mirror.client.upsert, mirror.client.delete

    def spy_upsert(*args: Any, **kwargs: Any) -> Any:
        sizes.append(len(kwargs["points"]))
        return up(*args, **kwargs)

    def spy_delete(*args: Any, **kwargs: Any) -> Any:
        sizes.append(len(kwargs["points_selector"].points))
        return delete(*args, **kwargs)

    monkeypatch.setattr(mirror.client, "upsert", spy_upsert)
    monkeypatch.setattr(mirror.client, "delete", spy_delete)
    return sizes


# -- the shared behavioural suite ------------------------------------------------------

RICH_METADATA: dict[str, Any] = {
    "topic": "travel",
    "n": 3,
    "score": 0.25,
    "ok": True,
    "nested": {"a": {"b": 1}, "c": "x"},
    "tags": ["x", "y"],
    "nothing": None,
    "version": 99,  # collides with a reserved key
    "fact_id": "forged",  # collides with a reserved key
}


def expected_metadata(kind: str, rec: MirrorRecord) -> dict[str, Any]:
    reserved = {
        "fact_id": rec.fact_id,
        "version": rec.version,
        "namespace": rec.namespace,
        "type": rec.type,
        "embedding_model": rec.embedding_model,
        "content": rec.content,
    }
    if kind.startswith("chroma"):  # flattened, lists as JSON, None dropped
        return {
            **reserved,
            "topic": "travel",
            "n": 3,
            "score": 0.25,
            "ok": True,
            "nested.a.b": 1,
            "nested.c": "x",
            "tags": '["x", "y"]',
            "payload.version": 99,
            "payload.fact_id": "forged",
        }
    return {
        **reserved,
        "topic": "travel",
        "n": 3,
        "score": 0.25,
        "ok": True,
        "nested": {"a": {"b": 1}, "c": "x"},
        "tags": ["x", "y"],
        "nothing": None,
        "payload.version": 99,
        "payload.fact_id": "forged",
    }


def test_upsert_then_get_round_trips(kind: str, mirror: Mirror) -> None:
    rec = record(version=7, seed=1, metadata=RICH_METADATA)
    other = record(seed=2)
    mirror.upsert([rec, other])

    missing = str(uuid.uuid4())
    got = mirror.get([rec.fact_id, missing], with_vectors=True)
    assert set(got) == {rec.fact_id}
    point = got[rec.fact_id]
    assert point.fact_id == rec.fact_id
    assert point.version == 7
    assert point.metadata == expected_metadata(kind, rec)
    assert_vector_close(point.embedding, rec.embedding)

    plain = mirror.get([rec.fact_id, other.fact_id])
    assert plain[rec.fact_id].embedding is None
    assert plain[other.fact_id].version == 1
    assert mirror.versions([rec.fact_id, other.fact_id, missing]) == {
        rec.fact_id: 7,
        other.fact_id: 1,
    }


def test_upsert_same_id_replaces_the_point(kind: str, mirror: Mirror) -> None:
    fid = str(uuid.uuid4())
    old_meta = {"old": 1, "keep": "a", "deep": {"x": 1, "y": 2}}
    new = record(
        fid, version=2, seed=2, content="new text", metadata={"keep": "b", "deep": {"x": 5}}
    )
    mirror.upsert([record(fid, version=1, seed=1, metadata=old_meta)])
    mirror.upsert([new])
    mirror.upsert([new])  # a retried delivery (at-least-once) must not duplicate the point

    assert mirror.count() == 1
    point = mirror.get([fid], with_vectors=True)[fid]
    assert point.version == 2
    # Exactly the new state: Chroma merges metadata on upsert unless stale keys are removed.
    expected = build_payload(new)
    if kind.startswith("chroma"):  # flattened nested keys
        del expected["deep"]
        expected["deep.x"] = 5
    assert point.metadata == expected
    assert_vector_close(point.embedding, unit_vector(2))


def test_duplicate_ids_in_one_batch_keep_the_newest(mirror: Mirror) -> None:
    fid = str(uuid.uuid4())
    mirror.upsert([record(fid, version=1), record(fid, version=3), record(fid, version=2)])
    assert mirror.count() == 1
    assert mirror.versions([fid]) == {fid: 3}


def test_delete_is_idempotent(make_mirror: MakeMirror) -> None:
    mirror = make_mirror()
    mirror.delete([str(uuid.uuid4())])  # before anything was written: a no-op
    assert mirror.count() == 0

    recs = [record(seed=i) for i in range(3)]
    mirror.upsert(recs)
    gone = recs[0].fact_id
    mirror.delete([gone, str(uuid.uuid4()), gone])
    mirror.delete([gone])
    assert mirror.count() == 2
    assert mirror.get([gone]) == {}
    assert set(mirror.get([r.fact_id for r in recs])) == {recs[1].fact_id, recs[2].fact_id}


def test_scan_pages_cover_every_point_exactly_once(mirror: Mirror) -> None:
    recs = [record(version=i + 1, seed=i) for i in range(25)]
    mirror.upsert(recs)

    pages = list(mirror.scan(page_size=7))
    assert [len(p) for p in pages] == [7, 7, 7, 4]
    seen = [pair for page in pages for pair in page]
    assert len(seen) == len(set(seen)) == 25
    assert dict(seen) == {r.fact_id: r.version for r in recs}


def test_scan_of_empty_mirror_yields_nothing(mirror: Mirror) -> None:
    assert list(mirror.scan(page_size=3)) == []
    assert mirror.count() == 0
    assert mirror.get([str(uuid.uuid4())]) == {}


def test_writes_are_split_into_native_batches(
    make_mirror: MakeMirror, monkeypatch: pytest.MonkeyPatch
) -> None:
    mirror = make_mirror(batch_size=4)
    assert mirror.max_batch_size == 4
    recs = [record(seed=i) for i in range(10)]
    mirror.upsert([])  # nothing to do, and no native call
    sizes = native_write_sizes(mirror, monkeypatch)

    mirror.upsert(recs)
    assert sizes == [4, 4, 2]
    assert mirror.count() == 10

    mirror.delete([r.fact_id for r in recs[:9]])
    assert sizes == [4, 4, 2, 4, 4, 1]
    assert mirror.count() == 1
    # Reads are chunked too: a get of more ids than one batch still finds them all.
    assert set(mirror.get([r.fact_id for r in recs])) == {recs[9].fact_id}


def test_count_and_reset(mirror: Mirror) -> None:
    recs = [record(seed=i) for i in range(5)]
    mirror.upsert(recs)
    assert mirror.count() == 5

    mirror.reset()
    assert mirror.count() == 0
    assert list(mirror.scan(page_size=2)) == []
    assert mirror.get([r.fact_id for r in recs]) == {}

    mirror.upsert(recs[:1])  # usable again after a reset
    assert mirror.count() == 1


def test_describe_is_json_and_secret_free(kind: str, mirror: Mirror) -> None:
    info = mirror.describe()
    text = json.dumps(info)
    assert info["kind"] == mirror.kind == {"chroma-server": "chroma"}.get(kind, kind)
    assert "api_key" not in text and "headers" not in text
    if kind == "chroma-server":
        assert info["url"].startswith("http://127.0.0.1:")
    if kind in ("chroma", "chroma-server", "qdrant"):
        assert info["collection"].startswith("t-")


# -- FlakyMirror -----------------------------------------------------------------------


def test_flaky_fail_after_writes_and_fail_before_does_not(mirror: Mirror) -> None:
    after = FlakyMirror(mirror, fail_after=1.0)
    written = record(seed=1)
    with pytest.raises(MirrorError, match="after write"):
        after.upsert([written])
    assert mirror.versions([written.fact_id]) == {written.fact_id: 1}

    before = FlakyMirror(mirror, fail_before=1.0)
    skipped = record(seed=2)
    with pytest.raises(MirrorError, match="before write"):
        before.upsert([skipped])
    with pytest.raises(MirrorError, match="before write"):
        before.delete([written.fact_id])
    assert mirror.get([skipped.fact_id]) == {}
    assert written.fact_id in mirror.get([written.fact_id])  # the failed delete did not land

    with pytest.raises(MirrorError, match="after write"):
        after.delete([written.fact_id])
    assert mirror.get([written.fact_id]) == {}

    assert after.faults["fail_after"] == 2 and after.faults["fail_before"] == 0
    assert before.faults["fail_before"] == 2 and before.faults["calls"] == 2
    assert after.kind == mirror.kind and after.max_batch_size == mirror.max_batch_size


def test_flaky_down_fails_every_call_until_it_is_back(mirror: Mirror) -> None:
    flaky = FlakyMirror(mirror)
    rec = record()
    flaky.upsert([rec])

    flaky.set_down(True)
    for call in (
        lambda: flaky.get([rec.fact_id]),
        lambda: flaky.scan(),
        lambda: flaky.count(),
        lambda: flaky.upsert([record()]),
        lambda: flaky.delete([rec.fact_id]),
    ):
        with pytest.raises(MirrorError, match="mirror down"):
            call()
    assert mirror.count() == 1  # nothing reached the inner mirror during the outage
    assert flaky.faults["down"] == 5

    flaky.down = False
    assert flaky.count() == 1
    assert flaky.versions([rec.fact_id]) == {rec.fact_id: 1}


def test_flaky_outage_starting_mid_scan_breaks_the_scan() -> None:
    inner = InMemoryMirror()
    inner.upsert([record(seed=i) for i in range(6)])
    flaky = FlakyMirror(inner)
    pages = flaky.scan(page_size=2)
    assert len(next(pages)) == 2
    with flaky.outage(), pytest.raises(MirrorError, match="mirror down"):
        next(pages)
    assert sum(len(p) for p in flaky.scan(page_size=2)) == 6


def test_flaky_timeout_is_ambiguous_but_deterministic() -> None:
    def run(seed: int) -> tuple[set[str], dict[str, int]]:
        inner = InMemoryMirror()
        flaky = FlakyMirror(inner, timeout=1.0, timeout_seconds=0.001, seed=seed)
        for i in range(20):
            with pytest.raises(MirrorTimeout) as info:
                flaky.upsert([record(str(uuid.UUID(int=i + 1)))])
            assert isinstance(info.value, TimeoutError) and isinstance(info.value, MirrorError)
        return {fid for page in inner.scan() for fid, _ in page}, flaky.faults

    landed, faults = run(seed=42)
    assert faults["timeout"] == 20
    assert len(landed) == faults["timeout_wrote"]
    assert 0 < len(landed) < 20  # some timed-out writes landed, some did not
    assert run(seed=42) == (landed, faults)  # the same seed replays the same faults

    slow = FlakyMirror(InMemoryMirror(), timeout=1.0, timeout_seconds=0.05, seed=0)
    started = time.monotonic()
    with pytest.raises(MirrorTimeout):
        slow.upsert([record()])
    assert time.monotonic() - started >= 0.05


def test_flaky_mixed_faults_follow_their_contract() -> None:
    inner = InMemoryMirror()
    flaky = FlakyMirror(inner, fail_before=0.3, fail_after=0.3, seed=7)
    outcome: dict[str, str] = {}
    for i in range(200):
        rec = record(str(uuid.UUID(int=i + 1)))
        try:
            flaky.upsert([rec])
            outcome[rec.fact_id] = "ok"
        except MirrorError as exc:
            outcome[rec.fact_id] = "before" if "before" in str(exc) else "after"

    present = set(inner.get(list(outcome)))
    assert present == {fid for fid, how in outcome.items() if how != "before"}
    faults = flaky.faults
    assert faults["calls"] == 200
    assert faults["fail_before"] == sum(v == "before" for v in outcome.values())
    assert faults["fail_after"] == sum(v == "after" for v in outcome.values())
    assert 30 < faults["fail_before"] < 90 and 30 < faults["fail_after"] < 90


def test_flaky_rejects_impossible_probabilities() -> None:
    with pytest.raises(ValueError):
        FlakyMirror(InMemoryMirror(), fail_before=1.5)
    with pytest.raises(ValueError):
        FlakyMirror(InMemoryMirror(), fail_before=0.6, fail_after=0.6)


# -- payload rules ---------------------------------------------------------------------


def test_reserved_keys_win_and_collisions_are_prefixed() -> None:
    rec = record(version=4, metadata={"version": 9, "payload.version": 8, "content": "fake"})
    payload = build_payload(rec)
    assert payload["version"] == 4
    assert payload["content"] == rec.content
    assert payload["payload.version"] == 8  # an existing key keeps its name
    assert payload["payload.payload.version"] == 9
    assert payload["payload.content"] == "fake"


def test_chroma_metadata_encoding_is_scalar_and_lossless_where_chroma_is_not() -> None:
    meta = encode_metadata(
        record(
            metadata={
                "big": 2**64,
                "nan": float("nan"),
                "#hash": 1,
                "$dollar": 2,
                "": 3,
                "empty": {},
                "deep": {"list": [1, {"a": None}], "none": None},
                "obj": {"when": {"y": 2024}},
            }
        )
    )
    assert all(isinstance(v, str | int | float | bool) for v in meta.values())
    assert meta["big"] == str(2**64)
    assert meta["nan"] == "NaN"
    assert meta["payload.#hash"] == 1 and meta["payload.$dollar"] == 2 and meta["payload."] == 3
    assert meta["empty"] == "{}"
    assert json.loads(meta["deep.list"]) == [1, {"a": None}]
    assert "deep.none" not in meta
    assert meta["obj.when.y"] == 2024
    assert "content" not in meta  # stored as the document


# -- adapter specifics -----------------------------------------------------------------


@pytest.mark.parametrize("where", ["chroma", "chroma-server"])
def test_chroma_never_embeds(
    where: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    from chromadb.api.types import DefaultEmbeddingFunction

    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("Chroma tried to compute an embedding")

    monkeypatch.setattr(DefaultEmbeddingFunction, "__call__", refuse)
    if where == "chroma":
        mirror = ChromaMirror(ephemeral_client(), unique_name())
    else:
        mirror = ChromaMirror.from_url(request.getfixturevalue("chroma_server").url, unique_name())
    assert mirror.collection.configuration.get("embedding_function") is None
    rec = record(seed=3, content="a document Chroma would love to embed")
    mirror.upsert([rec])
    assert_vector_close(
        mirror.get([rec.fact_id], with_vectors=True)[rec.fact_id].embedding, rec.embedding
    )


def test_chroma_batch_size_defaults_to_the_native_limit() -> None:

    client = ephemeral_client()
    assert ChromaMirror(client, unique_name()).max_batch_size == client.get_max_batch_size()
    assert (
        ChromaMirror(client, unique_name(), batch_size=10**9).max_batch_size
        == client.get_max_batch_size()
    )


def test_chroma_from_path_persists_across_clients(tmp_path: Any) -> None:
    rec = record(version=3)
    first = ChromaMirror.from_path(tmp_path / "db", "persisted")
    first.upsert([rec])
    assert first.describe()["path"] == str(tmp_path / "db")

    second = ChromaMirror.from_path(tmp_path / "db", "persisted")
    assert second.versions([rec.fact_id]) == {rec.fact_id: 3}


def test_qdrant_collection_is_created_lazily_with_the_first_vector_size() -> None:
    mirror = QdrantMirror.from_location(":memory:", "lazy")
    mirror.delete([str(uuid.uuid4())])
    assert mirror.count() == 0
    assert not mirror.client.collection_exists("lazy")

    mirror.upsert([record()])
    info = mirror.client.get_collection("lazy")
    assert info.config.params.vectors.size == DIM  # type: ignore[union-attr]

    wrong = MirrorRecord(**{**_fields(record()), "embedding": [1.0, 0.0, 0.0]})
    with pytest.raises(MirrorError, match="qdrant upsert"):
        mirror.upsert([wrong])


def test_qdrant_eager_collection_and_cosine_normalisation() -> None:
    mirror = QdrantMirror.from_location(":memory:", "eager", dim=DIM)
    assert mirror.client.collection_exists("eager")
    assert mirror.describe() == {
        "kind": "qdrant",
        "collection": "eager",
        "distance": "Cosine",
        "batch_size": 256,
        "dim": DIM,
        "location": ":memory:",
    }
    raw = [3.0, 4.0, 0, 0, 0, 0, 0, 0]
    rec = MirrorRecord(**{**_fields(record()), "embedding": raw})
    mirror.upsert([rec])
    # Qdrant stores cosine vectors normalised: reading back gives v / |v|.
    assert_vector_close(
        mirror.get([rec.fact_id], with_vectors=True)[rec.fact_id].embedding,
        [0.6, 0.8, 0, 0, 0, 0, 0, 0],
    )

    mirror.reset()
    assert mirror.client.collection_exists("eager") and mirror.count() == 0


def test_qdrant_get_answers_with_the_callers_id_spelling() -> None:
    mirror = QdrantMirror.from_location(":memory:", "ids")
    rec = record()
    mirror.upsert([rec])
    shouty = rec.fact_id.upper()
    assert set(mirror.get([shouty])) == {shouty}
    assert [fid for page in mirror.scan() for fid, _ in page] == [rec.fact_id]


def _fields(rec: MirrorRecord) -> dict[str, Any]:
    return {name: getattr(rec, name) for name in MirrorRecord.__slots__}


def test_in_memory_mirror_rejects_an_oversize_native_call() -> None:
    mirror = InMemoryMirror(max_batch_size=2)
    with pytest.raises(ValueError, match="exceeds max_batch_size"):
        mirror._upsert_batch([record(), record(), record()])
    mirror.upsert([record(), record(), record()])  # the public path splits
    assert mirror.batch_sizes == [2, 1]


def test_package_imports_without_the_client_libraries() -> None:
    code = (
        "import sys; sys.modules['chromadb'] = None; sys.modules['qdrant_client'] = None\n"
        "from memstate_pg.mirrors import ChromaMirror, QdrantMirror, InMemoryMirror\n"
        "InMemoryMirror().upsert([])\n"
        "try:\n"
        "    QdrantMirror(object())\n"
        "except ImportError:\n"
        "    print('lazy')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "lazy"


# -- the Chroma server fixture ---------------------------------------------------------


def test_chroma_server_stop_start_keeps_data_and_mirror_reconnects(
    chroma_server: ChromaServer,
) -> None:
    mirror = ChromaMirror.from_url(chroma_server.url, unique_name())
    recs = [record(version=i + 1, seed=i) for i in range(3)]
    mirror.upsert(recs)

    chroma_server.stop()
    assert not chroma_server.is_running()
    with pytest.raises(MirrorError):
        mirror.count()
    with pytest.raises(MirrorError):
        mirror.upsert([record()])

    chroma_server.start()
    assert mirror.count() == 3  # same mirror object, same port, data persisted
    assert mirror.versions([r.fact_id for r in recs]) == {r.fact_id: r.version for r in recs}

    with chroma_server.down(), pytest.raises(MirrorError):
        mirror.get([recs[0].fact_id])
    assert ChromaMirror.from_url(chroma_server.url, mirror.collection_name).count() == 3
