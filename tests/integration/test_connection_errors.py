"""First contact with a database that is not there, restarts, a full pool: every failure
is an Unavailable that says why, soon, and a read survives a restart."""

from __future__ import annotations

import asyncio
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import quote, urlencode
from uuid import uuid4

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict
from psycopg_pool import ConnectionPool

from memstate_pg import AsyncMemoryStore, Fact, MemoryStore, Unavailable


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # nothing listens once the socket is closed


def test_unreachable_server_fails_fast_with_the_cause() -> None:
    dsn = f"host=127.0.0.1 port={closed_port()} dbname=x user=x"
    started = time.monotonic()
    with MemoryStore(dsn, min_size=1, max_size=2) as mem, pytest.raises(Unavailable) as info:
        mem.get(uuid4())
    elapsed = time.monotonic() - started
    assert "refused" in str(info.value).lower(), info.value  # the driver's cause, not "30 sec"
    assert elapsed < 10, elapsed


def test_unreachable_server_fails_fast_with_the_cause_async() -> None:
    dsn = f"host=127.0.0.1 port={closed_port()} dbname=x user=x"

    async def main() -> str:
        mem = AsyncMemoryStore(dsn, min_size=1, max_size=2)
        try:
            with pytest.raises(Unavailable) as info:
                await mem.get(uuid4())
            return str(info.value)
        finally:
            await mem.close()

    started = time.monotonic()
    message = asyncio.run(main())
    assert "refused" in message.lower() and time.monotonic() - started < 10, message


def _terminate_others(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        ).fetchone()
        assert row is not None
        return int(row[0])


def test_a_read_survives_a_restart(dsn: str) -> None:
    with MemoryStore(dsn, min_size=2, max_size=2) as mem:
        fid = mem.commit(Fact(type="note", payload={"text": "kept"}))
        assert mem.get(fid) is not None
        assert _terminate_others(dsn) >= 1  # what a server restart does to the pool
        fact = mem.get(fid)  # within the idle-check window: the pool hands out a dead one
        assert fact is not None and fact.content == "kept"
        assert [h.fact.id for h in mem.search("kept", k=1)] == [fid]


def test_a_read_survives_a_restart_async(dsn: str) -> None:
    async def main() -> None:
        mem = await AsyncMemoryStore.open(dsn, min_size=2, max_size=2)
        try:
            fid = await mem.commit(Fact(type="note", payload={"text": "kept"}))
            assert await mem.get(fid) is not None
            assert await asyncio.to_thread(_terminate_others, dsn) >= 1
            fact = await mem.get(fid)
            assert fact is not None and fact.content == "kept"
        finally:
            await mem.close()

    asyncio.run(main())


def test_a_write_on_a_dead_connection_is_not_retried_behind_your_back(dsn: str) -> None:
    with MemoryStore(dsn, min_size=1, max_size=1) as mem:
        mem.commit(Fact(type="note", payload={"text": "one"}))
        _terminate_others(dsn)
        with pytest.raises(Unavailable):
            mem.commit(Fact(type="note", payload={"text": "two"}))  # retry it with a key
        assert mem.commit(Fact(type="note", payload={"text": "two"})) is not None


def test_a_full_pool_says_so(dsn: str) -> None:
    pool = ConnectionPool(
        dsn, min_size=1, max_size=1, timeout=0.5, kwargs={"autocommit": True}, open=True
    )
    try:
        mem = MemoryStore(pool)
        with pool.connection(), pytest.raises(Unavailable, match="every pooled connection"):
            mem.get(uuid4())
    finally:
        pool.close()


def test_sqlalchemy_style_urls_are_accepted(dsn: str) -> None:
    params = conninfo_to_dict(dsn)
    dbname = params.pop("dbname")
    url = f"postgresql+psycopg:///{quote(str(dbname))}?{urlencode(params)}"
    with MemoryStore(url, max_size=1) as mem:
        assert mem.dsn.startswith("postgresql:///")
        fid = mem.commit(Fact(type="note", payload={"text": "via url"}))
        assert mem.get(fid) is not None


def test_connect_timeout_in_the_dsn_wins(dsn: str) -> None:
    with MemoryStore(dsn + " connect_timeout=7", max_size=1) as mem:
        assert "connect_timeout" not in mem.pool.kwargs
    with MemoryStore(dsn, max_size=1, connect_timeout=3) as mem:
        assert mem.pool.kwargs["connect_timeout"] == 3


# --- found by the review: every path waits briefly, then says why ---------------------

DOWN = "postgresql://nobody@127.0.0.1:1/nothing"
ROOT = Path(__file__).resolve().parents[2]


def test_transaction_on_unreachable_server_fails_fast():
    mem = MemoryStore(DOWN)
    t = time.monotonic()
    with pytest.raises(Unavailable) as info, mem.transaction("a") as tx:
        tx.commit(Fact(type="note", payload={"text": "x"}))
    took = time.monotonic() - t
    mem.close()
    assert took < 10, f"took {took:.1f}s: {info.value!r}"


def test_a_first_transaction_on_a_one_connection_pool_does_not_wait_for_itself(dsn):
    mem = MemoryStore(dsn, max_size=1)
    t = time.monotonic()
    try:
        with mem.transaction("a") as tx:
            tx.commit(Fact(type="note2", payload={"text": "x"}))
        err = None
    except Exception as exc:
        err = exc
    took = time.monotonic() - t
    mem.close()
    assert err is None and took < 10, f"took {took:.1f}s: {err!r}"


def test_langchain_on_unreachable_server_fails_fast():
    from langchain_core.embeddings import DeterministicFakeEmbedding

    from memstate_pg.langchain import MemStateVectorStore

    mem = MemoryStore(DOWN)
    vs = MemStateVectorStore(mem, DeterministicFakeEmbedding(size=8), namespace="a")
    t = time.monotonic()
    with pytest.raises(Unavailable) as info:
        vs.similarity_search("x")
    took = time.monotonic() - t
    mem.close()
    assert took < 10, f"took {took:.1f}s: {info.value!r}"


def test_import_cli_on_unreachable_server_fails_fast(tmp_path):
    db = tmp_path / "m.db"
    c = sqlite3.connect(db)
    c.execute("CREATE TABLE facts(id TEXT PRIMARY KEY, type TEXT, data TEXT, created_at TEXT)")
    c.execute(
        "CREATE TABLE tx_log(tx_id INTEGER PRIMARY KEY, uuid TEXT, timestamp TEXT, data TEXT)"
    )
    c.commit()
    c.close()
    t = time.monotonic()
    p = subprocess.run(
        [sys.executable, "-m", "memstate_pg", "import-memstate", str(db), "--dsn", DOWN],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    took = time.monotonic() - t
    assert took < 15, f"took {took:.1f}s rc={p.returncode} {p.stderr[-400:]}"
    assert p.returncode == 3 and "Traceback" not in p.stderr, p.stderr


class Proxy:
    """TCP 127.0.0.1:port -> the test server's Unix socket; stop() = the server went away."""

    def __init__(self, target):
        import socket
        import threading

        self.target, self.socks = target, []
        self.lsock = socket.socket()
        self.lsock.bind(("127.0.0.1", 0))
        self.lsock.listen()
        self.port = self.lsock.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        import socket
        import threading

        while True:
            try:
                c, _ = self.lsock.accept()
            except OSError:
                return
            s = socket.socket(socket.AF_UNIX)
            s.connect(self.target)
            self.socks += [c, s]
            for a, b in ((c, s), (s, c)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(a, b):
        try:
            while data := a.recv(65536):
                b.sendall(data)
        except OSError:
            pass
        for x in (a, b):
            try:
                x.shutdown(2)
            except OSError:
                pass

    def stop(self):
        try:
            self.lsock.shutdown(2)
        except OSError:
            pass
        self.lsock.close()
        for s in self.socks:
            try:
                s.shutdown(2)
            except OSError:
                pass
            s.close()


def test_a_call_waiting_when_the_server_goes_away_fails_fast(dsn):
    import uuid as _uuid

    from psycopg.conninfo import conninfo_to_dict

    p = conninfo_to_dict(dsn)
    proxy = Proxy(f"{p['host']}/.s.PGSQL.{p.get('port', 5432)}")
    mem = MemoryStore(f"host=127.0.0.1 port={proxy.port} dbname={p['dbname']} user={p['user']}")
    assert mem.get(_uuid.uuid4()) is None  # healthy
    time.sleep(1.5)
    proxy.stop()
    t = time.monotonic()
    with pytest.raises(Unavailable) as info:
        mem.get(_uuid.uuid4())
    took = time.monotonic() - t
    mem.close()
    assert took < 10, f"took {took:.1f}s: {info.value!r}"
