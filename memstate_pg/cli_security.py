"""The security subcommands of ``memstate-pg``: grant, revoke, grants, roles, rls.

memstate_pg/cli.py calls ``register(subparsers, cli_common)``; every subcommand sets
``func`` (``args.func(args) -> int`` is the exit code). They are administrator commands: run
them with the DSN of the schema's owner (the role that migrates). See SECURITY.md::

    memstate-pg roles                         # create/refresh memstate_app, _reader, _sync
    memstate-pg rls on                        # = migrate --rls; `rls off`, `rls status`
    memstate-pg grant agent_t42 'tenant-42' 'tenant-42/*'
    memstate-pg revoke agent_t42 'tenant-42/*'      # or --all
    memstate-pg grants [ROLE] [--json]

Patterns are globs: ``*`` matches any run of characters; ``%``, ``_`` and every other
character match themselves; ``\\*`` is a literal star. Quote them in the shell.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from typing import Any

from . import security

__all__ = ["main", "register"]


def _dsn(common: Any, args: argparse.Namespace) -> str:
    """The DSN of --dsn / $MEMSTATE_DSN / the embedded server, migrated (as every command)."""
    store = common.store_from_args(args)
    try:
        return store.dsn
    finally:
        store.close()


def _print(text: str, *, error: bool = False) -> None:
    from rich.console import Console

    Console(stderr=error).print(text, highlight=False)


def cmd_grant(common: Any, args: argparse.Namespace) -> int:
    added = security.grant(_dsn(common, args), args.role, args.patterns)
    _print(
        f"granted {added} new pattern(s) to {args.role} ({len(args.patterns) - added} already held)"
    )
    return 0


def cmd_revoke(common: Any, args: argparse.Namespace) -> int:
    if not args.all and not args.patterns:
        _print("[red]error:[/red] give the patterns to revoke, or --all", error=True)
        return 2
    removed = security.revoke(_dsn(common, args), args.role, None if args.all else args.patterns)
    _print(f"revoked {removed} pattern(s) from {args.role}")
    return 0


def cmd_grants(common: Any, args: argparse.Namespace) -> int:
    grants = security.list_grants(_dsn(common, args), args.role)
    if args.json:
        print(
            json.dumps(
                [
                    {
                        "role": g.role,
                        "pattern": g.pattern,
                        "granted_at": g.granted_at.isoformat(),
                        "granted_by": g.granted_by,
                    }
                    for g in grants
                ],
                indent=2,
            )
        )
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="namespace grants")
    for col in ("role", "pattern", "granted at", "granted by"):
        table.add_column(col)
    for g in grants:
        table.add_row(g.role, g.pattern, g.granted_at.strftime("%Y-%m-%d %H:%M:%S"), g.granted_by)
    Console().print(table)
    return 0


def cmd_roles(common: Any, args: argparse.Namespace) -> int:
    dsn = _dsn(common, args)
    created = [] if args.list else security.create_roles(dsn)
    roles = security.list_roles(dsn)
    if args.json:
        print(
            json.dumps(
                [{"role": r.role, "exists": r.exists, "members": list(r.members)} for r in roles],
                indent=2,
            )
        )
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title="memstate roles")
    for col in ("role", "state", "members (login roles)"):
        table.add_column(col)
    for r in roles:
        state = "created" if r.role in created else ("ok" if r.exists else "missing")
        table.add_row(r.role, state, ", ".join(r.members) or "-")
    Console().print(table)
    return 0


def cmd_rls(common: Any, args: argparse.Namespace) -> int:
    dsn = _dsn(common, args)
    if args.action == "on":
        security.enable_rls(dsn, force=args.force)
    elif args.action == "off":
        security.disable_rls(dsn)
    status = security.rls_status(dsn)
    if args.json:
        print(json.dumps(status, indent=2))
    else:
        _print("row level security: " + ", ".join(f"{t} {s}" for t, s in sorted(status.items())))
    return 0


def _bind(
    fn: Callable[[Any, argparse.Namespace], int], common: Any
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        return fn(common, args)

    return run


def register(subparsers: Any, common: Any) -> None:
    """Add grant, revoke, grants, roles and rls to the `memstate-pg` parser."""
    p = subparsers.add_parser("grant", help="let a database role touch namespaces (globs, RLS)")
    common.add_dsn_argument(p)
    p.add_argument("role", help="database role (a login role, or a group role for all its members)")
    p.add_argument(
        "patterns", nargs="+", metavar="PATTERN", help="namespace glob: '*' matches anything"
    )
    p.set_defaults(func=_bind(cmd_grant, common))

    p = subparsers.add_parser("revoke", help="take namespace grants away from a role")
    common.add_dsn_argument(p)
    p.add_argument("role")
    p.add_argument("patterns", nargs="*", metavar="PATTERN")
    p.add_argument("--all", action="store_true", help="every pattern of the role")
    p.set_defaults(func=_bind(cmd_revoke, common))

    p = subparsers.add_parser("grants", help="list namespace grants")
    common.add_dsn_argument(p)
    p.add_argument("role", nargs="?", default=None)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_bind(cmd_grants, common))

    p = subparsers.add_parser(
        "roles", help="create/refresh the least-privilege roles and list them"
    )
    common.add_dsn_argument(p)
    p.add_argument("--list", action="store_true", help="only list, change nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_bind(cmd_roles, common))

    p = subparsers.add_parser("rls", help="row level security by namespace: on, off, status")
    common.add_dsn_argument(p)
    p.add_argument("action", choices=("on", "off", "status"), nargs="?", default="status")
    p.add_argument("--force", action="store_true", help="with on: bind the tables' owner too")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_bind(cmd_rls, common))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one security subcommand on its own (``python -m memstate_pg.cli_security …``)."""
    from . import cli_common
    from .errors import MemStateError

    parser = argparse.ArgumentParser(
        prog="memstate-pg", description="memstate-pg security commands"
    )
    register(parser.add_subparsers(dest="command", required=True), cli_common)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except MemStateError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
