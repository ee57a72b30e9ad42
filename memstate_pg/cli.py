"""memstate-pg command line (also `python -m memstate_pg`).

The database: --dsn, else $MEMSTATE_DSN, else the embedded server under --data-dir
($MEMSTATE_DATA_DIR or the user data dir).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console
from rich.table import Table

from . import cli_common
from .errors import MemStateError


def cmd_migrate(args: argparse.Namespace) -> int:
    store = cli_common.store_from_args(args)
    from . import migrations

    try:
        if args.rls:
            from . import security

            security.enable_rls(store.dsn)
        Console().print(
            f"memstate schema at revision [bold]{migrations.current(store.dsn)}[/bold]"
            + (", row level security on" if args.rls else "")
        )
    finally:
        store.close()
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    store = cli_common.store_from_args(args)
    try:
        versions = store.history(args.fact_id, namespace=args.namespace, limit=args.limit)
    finally:
        store.close()
    table = Table(title=f"history of {args.fact_id or 'namespace ' + args.namespace}")
    for col in ("commit", "fact", "version", "op", "kind", "actor", "reason", "payload"):
        table.add_column(col)
    for v in versions:
        table.add_row(
            str(v.seq),
            str(v.fact_id)[:8],
            str(v.version),
            v.op,
            v.kind,
            v.actor or "",
            v.reason or "",
            str(v.payload),
        )
    Console().print(table)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    store = cli_common.store_from_args(args)
    try:
        if args.revert is not None:
            seq = store.revert(args.revert, actor="cli", reason=args.reason)
            Console().print(f"reverted commit {args.revert} as commit [bold]{seq}[/bold]")
        else:
            seq = store.rollback(
                args.steps,
                namespace=args.namespace,
                session_id=args.session,
                actor="cli",
                reason=args.reason,
            )
            Console().print(
                f"rolled back {args.steps} commit(s) of {args.namespace!r} as commit [bold]{seq}[/bold]"
            )
    finally:
        store.close()
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from . import demo

    if args.dsn:
        from .store import MemoryStore

        store = MemoryStore(args.dsn)
        _reset(store.dsn)
        store.migrate()
    else:
        from . import embedded
        from .store import MemoryStore

        dsn = embedded.start(args.data_dir, database="memstate_demo")
        _reset(dsn)
        store = MemoryStore(dsn)
        store.migrate()
    try:
        demo.run(store, mirrors=not args.no_mirrors)
    finally:
        store.close()
    return 0


def _reset(dsn: str) -> None:
    """The demo owns its database: start from an empty memstate schema every run."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("DROP SCHEMA IF EXISTS memstate CASCADE")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="memstate-pg",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("demo", help="run the demo story on the embedded server (or --dsn)")
    cli_common.add_dsn_argument(p)
    p.add_argument("--no-mirrors", action="store_true", help="skip the Chroma/Qdrant part")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("migrate", help="create or upgrade schema memstate (idempotent)")
    cli_common.add_dsn_argument(p)
    p.add_argument(
        "--rls",
        action="store_true",
        help="also turn on row level security by namespace (see SECURITY.md)",
    )
    p.set_defaults(func=cmd_migrate)

    p = sub.add_parser("history", help="versions of a fact, or of a namespace")
    cli_common.add_dsn_argument(p)
    p.add_argument("fact_id", nargs="?")
    p.add_argument("--namespace", "-n", default="default")
    p.add_argument("--limit", type=int, default=100)
    p.set_defaults(func=cmd_history)

    p = sub.add_parser("rollback", help="undo the last N commits of a namespace (or --revert SEQ)")
    cli_common.add_dsn_argument(p)
    p.add_argument("steps", nargs="?", type=int, default=1)
    p.add_argument("--namespace", "-n", default="default")
    p.add_argument("--session", default=None)
    p.add_argument(
        "--revert", type=int, default=None, metavar="SEQ", help="undo this one commit instead"
    )
    p.add_argument("--reason", default=None)
    p.set_defaults(func=cmd_rollback)

    try:
        from . import cli_sync
    except ImportError:  # pragma: no cover - the sync package is part of the distribution
        cli_sync = None
    if cli_sync is not None:
        cli_sync.register(sub, cli_common)
    from . import cli_security

    cli_security.register(sub, cli_common)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except MemStateError as exc:
        Console(stderr=True).print(f"[red]error:[/red] {exc}")
        return 2


if __name__ == "__main__":
    sys.exit(main())
