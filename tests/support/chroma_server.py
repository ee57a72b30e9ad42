"""A real Chroma server in a subprocess, for tests that need the HTTP client path.

The embedded clients share a code path with the server but not the transport; outage
drills ("the mirror is down for a stretch, then comes back") need a process that can be
stopped and restarted on the same port and data directory. :class:`ChromaServer` does
that; the pytest fixtures below share one server per test session.

Wiring (from tests/conftest.py)::

    pytest_plugins = ["tests.support.chroma_server"]

Fixtures:

* ``chroma_server_session`` - session-scoped :class:`ChromaServer` (started once).
* ``chroma_server`` - the same server, guaranteed running when a test starts and
  restarted after it if the test left it stopped. Use unique collection names per test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from chromadb.api import ClientAPI

__all__ = ["ChromaServer", "chroma_server", "chroma_server_session", "free_port"]

STARTUP_TIMEOUT = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (bind to port 0, read it, release it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def chroma_executable() -> str:
    """The ``chroma`` CLI next to this interpreter (the venv's), else the one on PATH."""
    candidate = Path(sys.executable).parent / "chroma"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("chroma")
    if found is None:
        raise RuntimeError("the `chroma` CLI is not installed (pip install chromadb)")
    return found


class ChromaServer:
    """``chroma run --path DIR --host HOST --port N`` that can be stopped and restarted.

    The port and the data directory stay the same across restarts, so clients built
    before a stop reconnect afterwards and the data written before it is still there.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        self.path = Path(path)
        self.host = host
        self.port = port or free_port(host)
        self.startup_timeout = startup_timeout
        self.log_path = self.path.parent / f"{self.path.name}.chroma.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def client(self) -> ClientAPI:
        """A fresh ``chromadb.HttpClient`` for this server (raises if it is down)."""
        import chromadb
        from chromadb.config import Settings

        return chromadb.HttpClient(
            host=self.host, port=self.port, settings=Settings(anonymized_telemetry=False)
        )

    def start(self) -> None:
        """Start the server (no-op if running) and wait until its heartbeat answers."""
        if self.is_running():
            return
        self.path.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "ANONYMIZED_TELEMETRY": "False"}
        cmd = [
            chroma_executable(),
            "run",
            "--path",
            str(self.path),
            "--host",
            self.host,
            "--port",
            str(self.port),
        ]
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        self._wait_ready()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            assert self._proc is not None
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"chroma server exited with {self._proc.returncode}:\n{self._log_tail()}"
                )
            try:
                self.client().heartbeat()
                return
            except Exception as exc:  # not listening yet
                last_error = exc
                time.sleep(0.1)
        self.stop()
        raise RuntimeError(
            f"chroma server on {self.url} not ready after {self.startup_timeout}s "
            f"(last error: {last_error}):\n{self._log_tail()}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server: SIGTERM, then SIGKILL if it lingers. No-op if stopped."""
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)

    def restart(self) -> None:
        self.stop()
        self.start()

    @contextmanager
    def down(self) -> Iterator[None]:
        """``with server.down(): ...`` - the server is stopped inside the block."""
        self.stop()
        try:
            yield
        finally:
            self.start()

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def __enter__(self) -> ChromaServer:
        self.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = "running" if self.is_running() else "stopped"
        return f"<ChromaServer {self.url} {state} path={self.path}>"


# One server per process even if this module's fixtures are registered twice (as a
# conftest plugin *and* imported into a test module, which gives two fixture definitions).
_shared_server: ChromaServer | None = None


@pytest.fixture(scope="session")
def chroma_server_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChromaServer]:
    """One Chroma server for the whole session."""
    global _shared_server
    pytest.importorskip("chromadb")
    if _shared_server is not None:
        yield _shared_server
        return
    server = ChromaServer(tmp_path_factory.mktemp("chroma-server") / "data")
    _shared_server = server
    try:
        with server:
            yield server
    finally:
        _shared_server = None


@pytest.fixture
def chroma_server(chroma_server_session: ChromaServer) -> Iterator[ChromaServer]:
    """The session's Chroma server, running at the start of the test and after it."""
    chroma_server_session.start()
    yield chroma_server_session
    chroma_server_session.start()
