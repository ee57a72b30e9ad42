"""The embedded server's lifecycle: start, reuse, stale handles of killed holders, stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from memstate_pg import Fact, MemoryStore, embedded

ROOT = Path(__file__).resolve().parents[2]


def _postmaster_pid(pgdata: Path) -> int | None:
    pidfile = pgdata / "postmaster.pid"
    return int(pidfile.read_text().splitlines()[0]) if pidfile.exists() else None


@pytest.fixture
def data_dir(tmp_path_factory):
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="memstate-embedded-test-"))
    yield base
    pid = _postmaster_pid(base / "pgdata")
    if pid and psutil.pid_exists(pid):
        os.kill(pid, signal.SIGTERM)
    shutil.rmtree(base, ignore_errors=True)


def test_default_data_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("MEMSTATE_DATA_DIR", str(tmp_path / "x"))
    assert embedded.default_data_dir() == tmp_path / "x"
    monkeypatch.delenv("MEMSTATE_DATA_DIR")
    if os.geteuid() == 0:  # root: never under /root, whose ancestors the wheel would open up
        assert embedded.default_data_dir() == Path("/var/lib/memstate-pg")
    else:
        assert "memstate-pg" in str(embedded.default_data_dir())


def test_killed_holder_leaves_a_stale_pid_that_we_prune(data_dir: Path):
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from memstate_pg import embedded; print(embedded.start(sys.argv[1]), flush=True); "
            "time.sleep(600)",
            str(data_dir),
        ],
        stdout=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )
    try:
        assert holder.stdout.readline().startswith("postgresql://")
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    pgdata = data_dir / "pgdata"
    handles = json.loads((pgdata / ".handle_pids.json").read_text())
    assert holder.pid in handles  # the sharp edge: a dead holder still listed
    server_pid = _postmaster_pid(pgdata)
    assert server_pid and psutil.pid_exists(server_pid)  # and the server still running

    store = MemoryStore.embedded(str(data_dir), database="lifecycle")
    try:
        assert holder.pid not in json.loads((pgdata / ".handle_pids.json").read_text())
        store.register_schema("note", None)
        fid = store.commit(Fact(type="note", payload={"text": "survives"}))
        assert store.get(fid) is not None
    finally:
        store.close()
        embedded.stop(str(data_dir))
    for _ in range(50):  # we were the last holder: the server stops
        if not psutil.pid_exists(server_pid):
            break
        time.sleep(0.1)
    assert not psutil.pid_exists(server_pid)
