"""The memstate-pg command line, run as a user would (a subprocess, --dsn)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from memstate_pg import Fact, MemoryStore

ROOT = Path(__file__).resolve().parents[2]


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "memstate_pg", *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
        env={**__import__("os").environ, "COLUMNS": "200"},
    )


def test_migrate_history_rollback(mem: MemoryStore, dsn: str):
    out = cli("migrate", "--dsn", dsn)
    assert out.returncode == 0, out.stderr
    assert "0001_core" in out.stdout or "revision" in out.stdout
    fid = mem.commit(Fact(type="note", payload={"text": "from the api"}), namespace="cli")
    mem.update(fid, {"payload": {"text": "changed"}})
    out = cli("history", str(fid), "--dsn", dsn)
    assert out.returncode == 0 and "changed" in out.stdout and "from the api" in out.stdout
    out = cli("rollback", "1", "--namespace", "cli", "--dsn", dsn)
    assert out.returncode == 0, out.stderr
    assert mem.get(fid).payload["text"] == "from the api"
    out = cli("rollback", "1", "--namespace", "nothing", "--dsn", dsn)
    assert out.returncode == 2 and "nothing to roll back" in out.stderr


def test_demo_runs_on_a_dsn(dsn: str):
    out = cli("demo", "--dsn", dsn, "--no-mirrors")
    assert out.returncode == 0, out.stderr
    assert "rollback(1)" in out.stdout and "as_of" in out.stdout
