"""`memstate-pg demo`: the demo story, in a database of its own.

Without --dsn it runs on the embedded server; with --dsn (or $MEMSTATE_DSN) it runs on that
server, in a database it creates (memstate_demo), never in the DSN's own database. A
database of that name that the demo did not create is refused unless --reset.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from . import common
from .errors import PERMISSION, USAGE, CliError


def cmd_demo(args: argparse.Namespace) -> int:
    from .. import demos
    from ..embedders import HashingEmbedder
    from ..store import MemoryStore

    if args.dsn or os.environ.get("MEMSTATE_DSN"):
        target = common.Target.from_args(args)
    else:
        target = common.Target.from_args(args, database="postgres")
    args.target = target
    try:
        dsn = demos.prepare_database(target.dsn, args.database, reset=args.reset)
    except demos.DemoRefused as exc:
        raise CliError(PERMISSION if exc.permission else USAGE, exc.cause, exc.remedy) from None
    args.target = common.Target(dsn, target.embedded, common.describe_target(dsn))
    # the hashing embedder: no model to download; the story's search matches words
    store = MemoryStore(dsn, embedder=HashingEmbedder(), min_size=1, max_size=4)
    try:
        store.migrate()
        demos.run(store, mirrors=not args.no_mirrors)
    finally:
        store.close()
    common.say(
        f"The demo's memory stays in database {args.database!r} "
        f"({'embedded server' if target.embedded else target.where.split(' on ', 1)[-1]}); "
        "the next run recreates it."
    )
    return 0


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    help = "run the demo story in a database of its own (embedded server, or --dsn's server)"
    p = sub.add_parser(
        "demo",
        help=help,
        description=__doc__,
        parents=[parent],
        formatter_class=common.Formatter,
    )
    p.add_argument("--no-mirrors", action="store_true", help="skip the Chroma/Qdrant part")
    p.add_argument(
        "--database",
        default="memstate_demo",
        help="the demo's own database, created on the server (and recreated each run)",
    )
    p.add_argument(
        "--reset",
        action="store_true",
        help="drop and recreate --database even if the demo did not create it",
    )
    p.set_defaults(func=cmd_demo)
