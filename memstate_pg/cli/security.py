"""The security subcommands of ``memstate-pg``: grant, revoke, grants, roles, rls.

Administrator commands: run them with the DSN of the schema's owner (the role that
migrates). See SECURITY.md::

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
import sys
from typing import Any

from .. import security
from . import common
from .errors import USAGE, CliError


def cmd_grant(args: argparse.Namespace) -> int:
    added = security.grant(common.checked_dsn(args), args.role, args.patterns)
    if args.json:
        common.print_json({"role": args.role, "granted": added, "held": len(args.patterns) - added})
        return 0
    common.say(
        f"granted {added} new pattern(s) to {args.role} ({len(args.patterns) - added} already held)"
    )
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    if not args.all and not args.patterns:
        raise CliError(
            USAGE,
            "revoke needs the patterns to revoke, or --all",
            "e.g. memstate-pg revoke ROLE 'tenant-42/*'",
        )
    removed = security.revoke(
        common.checked_dsn(args), args.role, None if args.all else args.patterns
    )
    if args.json:
        common.print_json({"role": args.role, "revoked": removed})
        return 0
    common.say(f"revoked {removed} pattern(s) from {args.role}")
    return 0


def cmd_grants(args: argparse.Namespace) -> int:
    grants = security.list_grants(common.checked_dsn(args), args.role)
    if args.json:
        common.print_json(
            [
                {
                    "role": g.role,
                    "pattern": g.pattern,
                    "granted_at": g.granted_at.isoformat(),
                    "granted_by": g.granted_by,
                }
                for g in grants
            ]
        )
        return 0
    from rich.table import Table

    table = Table(title="namespace grants")
    for col in ("role", "pattern", "granted at", "granted by"):
        table.add_column(col)
    for g in grants:
        table.add_row(g.role, g.pattern, g.granted_at.strftime("%Y-%m-%d %H:%M:%S"), g.granted_by)
    common.console().print(table)
    return 0


def cmd_roles(args: argparse.Namespace) -> int:
    dsn = common.checked_dsn(args)
    created = [] if args.list else security.create_roles(dsn, revoke_create=args.revoke_create)
    roles = security.list_roles(dsn)
    for risk in security.create_risks(dsn):
        print(
            f"warning: {risk.grantee} may CREATE in schema {risk.schema} (on the search path): "
            "a tenant could plant functions there that run with other roles' rights\n"
            "hint: memstate-pg roles --revoke-create",
            file=sys.stderr,
        )
    for held in security.lock_holders(dsn):
        print(
            f"warning: role {held.role} (pid {held.pid}) holds {held.mode} on "
            f"memstate.{held.table}, which blocks every writer\n"
            f"hint: SELECT pg_terminate_backend({held.pid}) if it is not maintenance",
            file=sys.stderr,
        )
    if args.json:
        common.print_json(
            [
                {
                    "role": r.role,
                    "exists": r.exists,
                    "created": r.role in created,
                    "members": list(r.members),
                }
                for r in roles
            ]
        )
        return 0
    from rich.table import Table

    table = Table(title="memstate roles")
    for col in ("role", "state", "members (login roles)"):
        table.add_column(col)
    for r in roles:
        state = "created" if r.role in created else ("ok" if r.exists else "missing")
        table.add_row(r.role, state, ", ".join(r.members) or "-")
    common.console().print(table)
    return 0


def cmd_rls(args: argparse.Namespace) -> int:
    dsn = common.checked_dsn(args)
    if args.action == "on":
        security.enable_rls(dsn, force=args.force)
    elif args.action == "off":
        security.disable_rls(dsn)
    status = security.rls_status(dsn)
    if args.json:
        common.print_json(status)
    else:
        common.say(
            "row level security: " + ", ".join(f"{t} {s}" for t, s in sorted(status.items()))
        )
    return 0


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    """Add grant, revoke, grants, roles and rls to the `memstate-pg` parser."""

    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=help, description=help, parents=[parent], formatter_class=common.Formatter
        )

    p = add("grant", "let a database role touch namespaces (globs, RLS)")
    p.add_argument("role", help="database role (a login role, or a group role for all its members)")
    p.add_argument(
        "patterns", nargs="+", metavar="PATTERN", help="namespace glob: '*' matches anything"
    )
    common.add_json_option(p)
    p.set_defaults(func=cmd_grant)

    p = add("revoke", "take namespace grants away from a role")
    p.add_argument("role", help="database role")
    p.add_argument("patterns", nargs="*", metavar="PATTERN", help="the patterns to take away")
    p.add_argument("--all", action="store_true", help="every pattern of the role")
    common.add_json_option(p)
    p.set_defaults(func=cmd_revoke)

    p = add("grants", "list namespace grants")
    p.add_argument("role", nargs="?", default=None, help="only this role's (default: every role)")
    common.add_json_option(p)
    p.set_defaults(func=cmd_grants)

    p = add("roles", "create/refresh the least-privilege roles and list them")
    p.add_argument("--list", action="store_true", help="only list, change nothing")
    p.add_argument(
        "--revoke-create",
        action="store_true",
        help="also revoke CREATE on schemas of the search path from PUBLIC and the memstate roles",
    )
    common.add_json_option(p)
    p.set_defaults(func=cmd_roles)

    p = add("rls", "row level security by namespace: on, off, status")
    p.add_argument(
        "action", choices=("on", "off", "status"), nargs="?", default="status", help="what to do"
    )
    p.add_argument("--force", action="store_true", help="with on: bind the tables' owner too")
    common.add_json_option(p)
    p.set_defaults(func=cmd_rls)
