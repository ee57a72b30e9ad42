"""ChromaMirror's write path: an upsert replaces the point (stale metadata keys removed)
without reading the points first, through the collection's key registry
(memstate_pg/mirrors/chroma.py, module docstring)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

from memstate_pg.mirrors import ChromaMirror, MirrorRecord
from memstate_pg.mirrors import chroma as chroma_mod
from memstate_pg.mirrors.chroma import REGISTRY_KEY, ephemeral_client
from tests.support.chroma_server import ChromaServer

DIM = 4


def record(fid: str, version: int, metadata: dict[str, Any]) -> MirrorRecord:
    return MirrorRecord(
        fact_id=fid,
        version=version,
        namespace="ns",
        type="note",
        embedding=[1.0, 0.5, 0.25, float(version)],
        embedding_model="test-4d",
        content=f"v{version}",
        metadata=metadata,
    )


def stored(mirror: ChromaMirror, fid: str) -> dict[str, Any]:
    meta = dict(mirror.get([fid])[fid].metadata)
    for key in ("fact_id", "version", "namespace", "type", "embedding_model", "content"):
        meta.pop(key)
    return meta


def point_reads(mirror: ChromaMirror, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the reads of points by id the adapter makes (collection.get(ids=...))."""
    calls: list[int] = []
    coll = mirror.collection
    original = coll.get

    def spy(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("ids") is not None:
            calls.append(len(kwargs["ids"]))
        return original(*args, **kwargs)

    monkeypatch.setattr(coll, "get", spy)
    return calls


def name() -> str:
    return f"w-{uuid.uuid4().hex[:12]}"


def test_stale_keys_disappear_without_reading_the_points(monkeypatch: pytest.MonkeyPatch) -> None:
    mirror = ChromaMirror(ephemeral_client(), name())
    fid, other = str(uuid.uuid4()), str(uuid.uuid4())
    reads = point_reads(mirror, monkeypatch)
    mirror.upsert([record(fid, 1, {"old": 1, "keep": "a", "deep": {"x": 1, "y": 2}})])
    mirror.upsert([record(fid, 2, {"keep": "b", "deep": {"x": 5}}), record(other, 1, {"n": 3})])
    mirror.upsert([record(fid, 3, {"new": True})])
    assert reads == []  # no read per batch
    assert stored(mirror, fid) == {"new": True}
    assert stored(mirror, other) == {"n": 3}
    registry = json.loads(mirror.collection.metadata[REGISTRY_KEY])
    assert {"old", "keep", "deep.x", "deep.y", "n", "new", "version"} <= set(registry)


def test_mirrors_of_one_collection_in_one_process_share_the_registry() -> None:
    client = ephemeral_client()
    collection = name()
    first, second = ChromaMirror(client, collection), ChromaMirror(client, collection)
    fid = str(uuid.uuid4())
    second.upsert([record(str(uuid.uuid4()), 1, {"a": 1})])  # second has loaded the registry
    first.upsert([record(fid, 1, {"a": 1, "added_by_first": "x"})])
    second.upsert([record(fid, 2, {"a": 2})])  # second must know the key first added
    assert stored(second, fid) == {"a": 2}


def test_the_registry_outlives_the_process(tmp_path: Path) -> None:
    """A new process (a restarted worker) learns the keys from the collection itself."""
    collection = name()
    mirror = ChromaMirror.from_path(tmp_path, collection)
    fid = str(uuid.uuid4())
    mirror.upsert([record(fid, 1, {"gone_later": 1, "kept": "a"})])
    mirror.close()
    del mirror
    code = (
        "import json, sys\n"
        "from memstate_pg.mirrors import ChromaMirror, MirrorRecord\n"
        "m = ChromaMirror.from_path(sys.argv[1], sys.argv[2])\n"
        "m.upsert([MirrorRecord(fact_id=sys.argv[3], version=2, namespace='ns', type='note',\n"
        "    embedding=[1.0, 0.5, 0.25, 2.0], embedding_model='test-4d', content='v2',\n"
        "    metadata={'kept': 'b'})])\n"
        "print(json.dumps(sorted(m.get([sys.argv[3]])[sys.argv[3]].metadata)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path), collection, fid],
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    keys = json.loads(out.stdout.strip().splitlines()[-1])
    assert "gone_later" not in keys and "kept" in keys


def test_a_collection_written_before_the_registry_is_scanned_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    client = ephemeral_client()
    collection = name()
    mirror = ChromaMirror(client, collection)
    fid, other = str(uuid.uuid4()), str(uuid.uuid4())
    # points as an earlier memstate-pg wrote them: no registry in the collection metadata
    mirror.collection.upsert(
        ids=[fid, other],
        embeddings=[[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0]],
        metadatas=[{"version": 1, "legacy": "x", "keep": 1}, {"version": 1, "other": 2}],
        documents=["a", "b"],
    )
    assert REGISTRY_KEY not in (mirror.collection.metadata or {})
    mirror.upsert([record(fid, 2, {"keep": 2})])
    assert stored(mirror, fid) == {"keep": 2}
    assert {"legacy", "keep", "other"} <= set(json.loads(mirror._fresh_metadata()[REGISTRY_KEY]))
    reads = point_reads(mirror, monkeypatch)
    mirror.upsert([record(other, 2, {})])
    assert reads == [] and stored(mirror, other) == {}


def test_too_many_keys_fall_back_to_reading_the_points(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(chroma_mod, "MAX_REGISTRY_KEYS", 12)
    mirror = ChromaMirror(ephemeral_client(), name())
    fid = str(uuid.uuid4())
    mirror.upsert([record(fid, 1, {f"k{i}": i for i in range(20)})])
    assert mirror._fresh_metadata()[REGISTRY_KEY] == "*"
    reads = point_reads(mirror, monkeypatch)
    mirror.upsert([record(fid, 2, {"k0": 0})])
    assert reads == [1]
    assert stored(mirror, fid) == {"k0": 0}


def test_a_server_client_reads_the_keys_and_stays_exact_across_clients(
    chroma_server: ChromaServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Other processes may write a server's collection: no registry, the keys are read."""
    collection = name()
    first = ChromaMirror.from_url(chroma_server.url, collection)
    second = ChromaMirror.from_url(chroma_server.url, collection)
    fid = str(uuid.uuid4())
    second.upsert([record(str(uuid.uuid4()), 1, {"a": 1})])
    first.upsert([record(fid, 1, {"a": 1, "from_first": True})])
    reads = point_reads(second, monkeypatch)
    second.upsert([record(fid, 2, {"a": 2})])
    assert reads == [1]
    assert stored(second, fid) == {"a": 2}
    assert REGISTRY_KEY not in (second._fresh_metadata() or {})
