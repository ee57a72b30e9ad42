"""`memstate-pg mcp`: serve one namespace of the memory over MCP (stdio, or streamable HTTP).

    memstate-pg mcp --namespace user-42                       # stdio (for Claude Desktop & co)
    memstate-pg mcp --namespace user-42 --http --port 8765    # http://127.0.0.1:8765/mcp

Wiring into the `memstate-pg` parser: `register(sub, parent)` (the CLI's convention: `parent`
carries --dsn, --data-dir and -v) or `add_parser(subparsers)` (adds --dsn and --data-dir
itself); both set `func=run`. `python -m memstate_pg.mcp` runs it on its own.

Exit codes (those of `memstate-pg`): 0 stopped cleanly, 2 bad arguments or a refused
request, 3 database unreachable or the `mcp` extra not installed, 4 permission, 5 schema
memstate not migrated. An error prints two lines on stderr (cause, remedy); stdout carries
only the MCP protocol.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

OK, USAGE, UNAVAILABLE, PERMISSION, NOT_READY = 0, 2, 3, 4, 5
HELP = "serve one namespace of the memory over MCP (stdio, or streamable HTTP with --http)"


def add_arguments(parser: argparse.ArgumentParser, *, database_options: bool = True) -> None:
    if database_options:
        parser.add_argument(
            "--dsn",
            default=None,
            help="PostgreSQL DSN (default: $MEMSTATE_DSN, else the embedded server)",
        )
        parser.add_argument(
            "--data-dir", default=None, help="data dir of the embedded server (no --dsn)"
        )
    parser.add_argument(
        "--namespace",
        default=os.environ.get("MEMSTATE_NAMESPACE", "default"),
        help="the one namespace the server may read and write (default: $MEMSTATE_NAMESPACE, "
        "else 'default')",
    )
    parser.add_argument(
        "--http", action="store_true", help="serve streamable HTTP instead of stdio"
    )
    parser.add_argument("--host", default="127.0.0.1", help="HTTP: address to listen on")
    parser.add_argument("--port", type=int, default=8000, help="HTTP: port to listen on")
    parser.add_argument("--path", default="/mcp", help="HTTP: path of the MCP endpoint")
    parser.add_argument(
        "--actor", default="mcp", help="actor recorded on every write (a request's _meta wins)"
    )
    parser.add_argument(
        "--embedder",
        default=os.environ.get("MEMSTATE_EMBEDDER"),
        metavar="SPEC",
        help="hashing[:DIM] (default, matches words not meaning), sentence-transformers:MODEL "
        "(extra sentence-transformers) or openai:MODEL (extra openai; $OPENAI_API_KEY, "
        "$OPENAI_BASE_URL); default $MEMSTATE_EMBEDDER. Use the one the memory was written with",
    )
    parser.set_defaults(func=run)


def add_parser(subparsers: Any, parents: Sequence[argparse.ArgumentParser] = ()) -> Any:
    """Add `mcp` to a `memstate-pg` subparsers object; `parents` (if given) carry the
    database options (--dsn, --data-dir), else they are added here."""
    p = subparsers.add_parser("mcp", help=HELP, description=HELP, parents=list(parents))
    add_arguments(p, database_options=not parents)
    return p


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    """The `memstate-pg` CLI's convention (memstate_pg/cli/*.py: register(sub, parent))."""
    add_parser(sub, [parent])


def _fail(code: int, cause: str, remedy: str) -> int:
    print(f"error: {cause}", file=sys.stderr)
    print(f"hint: {remedy}", file=sys.stderr)
    return code


def _op_migrated() -> Any:
    from .._core.protocol import Exec

    row = yield Exec("SELECT to_regclass('memstate.types') IS NOT NULL AS ok")
    return bool(row and row["ok"])


def _migrated(store: Any) -> bool:
    """Through the store's runner: an unreachable server is Unavailable within seconds."""
    return bool(store._read(_op_migrated))


def make_embedder(spec: str | None) -> Any:
    """An embedder from `--embedder` (None: the store's default)."""
    from ..embedders.spec import embedder_from_spec

    return embedder_from_spec(spec)


def open_store(args: argparse.Namespace) -> Any:
    from ..store import MemoryStore

    kwargs: dict[str, Any] = {"namespace": args.namespace}
    embedder = make_embedder(getattr(args, "embedder", None))
    if embedder is not None:
        kwargs["embedder"] = embedder
    dsn = getattr(args, "dsn", None) or os.environ.get("MEMSTATE_DSN")
    if dsn:
        return MemoryStore(dsn, max_size=8, **kwargs)
    return MemoryStore.embedded(getattr(args, "data_dir", None), **kwargs)


def run(args: argparse.Namespace) -> int:
    """Serve until the client goes away (stdio) or Ctrl-C / SIGTERM (HTTP)."""
    try:
        from . import server
    except ImportError as exc:
        if (exc.name or "").split(".")[0] not in ("mcp", "mcp_types", "uvicorn", "starlette"):
            raise
        return _fail(
            UNAVAILABLE,
            f"the Python package {exc.name} is not installed (the 'mcp' extra of memstate-pg)",
            'pip install "memstate-pg[mcp]"',
        )
    from ..errors import MemStateError, PermissionDenied, Unavailable, ValidationFailed

    store = None
    try:
        store = open_store(args)
        if not _migrated(store):
            return _fail(
                NOT_READY,
                "schema memstate is not migrated in this database",
                "run `memstate-pg migrate` (as the database owner) with the same --dsn",
            )
        server.run(
            store,
            args.namespace,
            transport="http" if args.http else "stdio",
            host=args.host,
            port=args.port,
            path=args.path,
            actor=args.actor,
        )
        return OK
    except KeyboardInterrupt:
        return OK
    except ImportError as exc:  # an embedder's extra (MissingDependency)
        return _fail(UNAVAILABLE, str(exc).splitlines()[0], "install the extra it names")
    except Unavailable as exc:
        return _fail(UNAVAILABLE, str(exc), "check --dsn and that the server runs")
    except PermissionDenied as exc:
        return _fail(PERMISSION, str(exc), "use a role that may read and write this namespace")
    except ValidationFailed as exc:
        return _fail(USAGE, str(exc), "check the arguments: memstate-pg mcp --help")
    except MemStateError as exc:
        return _fail(USAGE, str(exc), "check the arguments: memstate-pg mcp --help")
    except ValueError as exc:  # a bad --embedder
        return _fail(USAGE, str(exc), "check the arguments: memstate-pg mcp --help")
    except OSError as exc:  # e.g. the HTTP port is taken
        return _fail(UNAVAILABLE, str(exc), "pick another --port or stop what listens there")
    finally:
        if store is not None:
            store.close()
