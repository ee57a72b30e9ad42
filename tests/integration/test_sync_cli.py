"""The sync subcommands (memstate_pg/cli/sync.py): mirror add (with backfill), sync,
status, reconcile, requeue, and a `sync` process that stops gracefully on SIGTERM."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from memstate_pg import Fact
from memstate_pg.cli import main
from memstate_pg.mirrors import ChromaMirror, FlakyMirror, InMemoryMirror, QdrantMirror
from memstate_pg.sync import SyncWorker
from tests.support.chroma_server import ChromaServer
from tests.support.sync_procs import SyncStore, drift, no_drift, outbox_rows, wait_for

ROOT = Path(__file__).resolve().parents[2]


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def status_json(capsys, dsn: str) -> dict:
    code, out, _ = run(capsys, "status", "--dsn", dsn, "--json")
    assert code == 0
    return json.loads(out)


def test_add_sync_status_reconcile(store: SyncStore, chroma_server: ChromaServer, capsys) -> None:
    store.commit_many(
        [Fact(type="note", payload={"text": f"n{i}", "tags": ["t"]}) for i in range(25)]
    )
    collection = f"cli_{uuid.uuid4().hex[:10]}"
    code, out, err = run(
        capsys,
        "mirror",
        "add",
        "chroma",
        "--dsn",
        store.dsn,
        "--mirror",
        f"chroma:{chroma_server.url}?collection={collection}",
        "--metadata-field",
        "tags",
    )
    assert code == 0, err
    assert "registered; 25 row(s) pending" in out
    assert status_json(capsys, store.dsn)["chroma"]["pending"] == 25

    code, out, err = run(capsys, "sync", "--dsn", store.dsn, "--drain", "--timeout", "30")
    assert code == 0 and "drained: 0 row(s) pending" in out, err  # rebuilt from the registry's URL
    st = status_json(capsys, store.dsn)["chroma"]
    assert st["pending"] == 0 and st["last_synced_seq"] is not None
    mirror = ChromaMirror.from_url(chroma_server.url, collection)
    assert no_drift(drift(store.dsn, mirror))
    assert (
        mirror.get([mirror.collection.get(limit=1)["ids"][0]]).popitem()[1].metadata["tags"]
        == '["t"]'
    )

    mirror.delete([fid for fid, _ in next(mirror.scan(3))])
    code, out, _ = run(capsys, "reconcile", "chroma", "--dsn", store.dsn, "--no-repair", "--json")
    assert code == 1 and json.loads(out)["missing"] == 3  # exit 1: drift found, not repaired
    code, out, _ = run(capsys, "reconcile", "chroma", "--dsn", store.dsn)
    assert code == 0 and "reconcile chroma" in out
    assert mirror.count() == 25
    assert status_json(capsys, store.dsn)["chroma"]["last_reconcile"]["repaired"] == 3

    code, out, _ = run(capsys, "status", "--dsn", store.dsn)
    assert code == 0 and "chroma" in out and "pending" in out

    code, out, _ = run(capsys, "mirror", "remove", "chroma", "--dsn", store.dsn)
    assert code == 0 and status_json(capsys, store.dsn) == {}


def test_sync_once_with_a_qdrant_path_spec(store: SyncStore, tmp_path, capsys) -> None:
    path = str(tmp_path / "qdrant")
    code, _, err = run(
        capsys,
        "mirror",
        "add",
        "q",
        "--dsn",
        store.dsn,
        "--mirror",
        f"qdrant:path:{path}",
        "--namespace",
        "a",
    )
    assert code == 0, err
    store.commit(Fact(type="note", payload={"text": "in a"}), namespace="a")
    store.commit(Fact(type="note", payload={"text": "in b"}), namespace="b")
    code, out, err = run(
        capsys, "sync", "--dsn", store.dsn, "--once", "--mirror", f"q=qdrant:path:{path}"
    )
    assert code == 0 and "acked 1 outbox row(s)" in out, err
    # the command closed its client: the dir is free; the collection is named after the mirror
    mirror = QdrantMirror.from_location(path, collection="q")
    try:
        assert mirror.count() == 1
    finally:
        mirror.close()


def test_dead_rows_show_in_status_and_requeue(store: SyncStore, capsys) -> None:
    flaky = FlakyMirror(InMemoryMirror(), fail_before=1.0)
    store.add_mirror(flaky, "flaky")
    fid = store.commit(Fact(type="note", payload={"text": "doomed"}))
    with SyncWorker(store, max_attempts=1) as w:
        w.run_once()
    code, out, _ = run(capsys, "status", "--dsn", store.dsn)
    assert code == 0 and str(fid) in out and "injected: failed before write" in out
    dead = status_json(capsys, store.dsn)["flaky"]
    assert dead["dead"] == 1 and dead["dead_letters"][0]["last_error"].startswith("MirrorError")
    code, out, _ = run(capsys, "requeue", "flaky", "--dsn", store.dsn)
    assert code == 0 and "requeued 1 row(s)" in out
    assert outbox_rows(store.dsn, "flaky")[0]["dead_at"] is None


def test_bad_input_is_a_clear_error(store: SyncStore, capsys) -> None:
    code, _, err = run(capsys, "sync", "--dsn", store.dsn, "--once", "--mirror", "nonsense")
    assert code == 2 and "bad mirror spec" in err
    code, _, err = run(
        capsys, "sync", "--dsn", store.dsn, "--once", "--mirror", "x=redis:http://h:1"
    )
    assert code == 2 and "unknown mirror kind" in err
    code, _, err = run(capsys, "requeue", "nope", "--dsn", store.dsn)
    assert code == 2 and "no mirror 'nope'" in err
    code, _, err = run(capsys, "mirror", "add", "m", "--dsn", store.dsn)
    assert code == 2 and "needs --mirror" in err


def test_a_sync_process_stops_gracefully_on_sigterm(
    store: SyncStore, chroma_server: ChromaServer
) -> None:
    collection = f"sig_{uuid.uuid4().hex[:10]}"
    mirror = ChromaMirror.from_url(chroma_server.url, collection)
    store.add_mirror(mirror, "chroma")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "memstate_pg",
            "sync",
            "--dsn",
            store.dsn,
            "--poll-interval",
            "0.2",
            "--mirror",
            f"chroma=chroma:{chroma_server.url}?collection={collection}",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        store.commit_many([Fact(type="note", payload={"text": f"n{i}"}) for i in range(10)])
        assert wait_for(lambda: mirror.count() == 10 or proc.poll() is not None, timeout=60)
        assert proc.poll() is None, proc.communicate()
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "SIGTERM received, stopping" in err and "stopped" in err
    assert mirror.count() == 10 and not outbox_rows(store.dsn)


def test_mirror_specs_and_rebuilding_from_options(store: SyncStore, tmp_path) -> None:
    from memstate_pg import ValidationFailed
    from memstate_pg.sync import mirror_from_options, parse_mirror_spec

    name, m = parse_mirror_spec("mine=chroma:memory?collection=abc")
    assert name == "mine" and isinstance(m, ChromaMirror) and m.collection_name == "abc"
    name, q = parse_mirror_spec("q=qdrant::memory:", collection="coll")
    assert isinstance(q, QdrantMirror) and q.collection_name == "coll"
    q.close()
    _, p = parse_mirror_spec(f"pth=chroma:path:{tmp_path / 'c'}")
    rebuilt = mirror_from_options("chroma", p.describe())
    assert isinstance(rebuilt, ChromaMirror) and rebuilt.describe()["path"] == str(tmp_path / "c")
    _, qp = parse_mirror_spec(f"qp=qdrant:path:{tmp_path / 'q'}?collection=zz")
    options = qp.describe()
    qp.close()
    again = mirror_from_options("qdrant", options)
    assert isinstance(again, QdrantMirror) and again.collection_name == "zz"
    again.close()
    assert mirror_from_options("qdrant", {"location": ":memory:"}) is None  # private to its process
    assert mirror_from_options("memory", {}) is None
    for bad in ("nonsense", "=chroma:memory", "x=chroma:", "x=chroma:ftp://h", "x=qdrant:memory"):
        with pytest.raises(ValidationFailed):
            parse_mirror_spec(bad)
    store.add_mirror(InMemoryMirror(), "mem", backfill=False)
    with pytest.raises(ValidationFailed):
        store.use_mirror("mem", m)  # registered as memory, not chroma
    store.use_mirror("mem", replacement := InMemoryMirror())
    assert store.mirror("mem") is replacement
