"""`memstate-pg import-memstate SOURCE`: import a MemState 0.5.1 database.

Registered by the CLI's parser with ``add_parser(subparsers)``; ``run(args)`` returns the
exit code:

* 0 -- imported (or, with --dry-run, nothing would fail);
* 1 -- imported, but the target refused some entries (listed; fix and run again: what was
  imported is skipped);
* 2 -- usage (argparse, a bad namespace);
* 3 -- the source or the target database is unavailable.

The target: --dsn, else $MEMSTATE_DSN, else the embedded server under --data-dir.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from rich.console import Console
from rich.table import Table

from ..errors import MemStateError, PermissionDenied, Unavailable, ValidationFailed

EXIT_OK, EXIT_FAILED_ENTRIES, EXIT_USAGE, EXIT_UNAVAILABLE = 0, 1, 2, 3

DESCRIPTION = """\
Import a MemState 0.5.1 database -- the SQLite file of SQLiteStorage(...) or the
PostgreSQL database of PostgresStorage(...) -- with its history, sessions and types.
Every MemState log entry becomes one commit (the original time in its reason), the
facts table has the last word, ids are kept (non-UUID ids: a stable uuid5), vectors are
recomputed by the target's embedder, and mirrors get the facts through the outbox.
Run it again: what was imported is skipped. See docs/from-memstate.md.

The target: --dsn, else $MEMSTATE_DSN, else the embedded server under --data-dir.

exit codes: 0 imported; 1 imported, but some entries were refused (listed);
2 usage; 3 the source or the target database is unavailable.
"""


def add_parser(
    subparsers: Any, parent: argparse.ArgumentParser | None = None
) -> argparse.ArgumentParser:
    """Add the `import-memstate` subcommand to `subparsers` (argparse's
    add_subparsers() result); its handler is stored as `func` (call it with the args).
    `parent`: the memstate-pg CLI's global options (--dsn, --data-dir, -v), else its own."""
    p = subparsers.add_parser(
        "import-memstate",
        help="import a MemState 0.5.1 database (SQLite file or PostgreSQL DSN)",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[parent] if parent is not None else [],
    )
    p.add_argument(
        "source",
        metavar="SOURCE",
        help="MemState's SQLite file (or sqlite:///path), or its PostgreSQL DSN / SQLAlchemy URL",
    )
    p.add_argument(
        "--namespace",
        "-n",
        default="default",
        help="memstate-pg namespace to import into (default: default)",
    )
    p.add_argument(
        "--dry-run",
        action="store_true",
        help="read everything, write nothing (not even the migration), report what would be written",
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON on stdout")
    p.add_argument(
        "--table-prefix",
        default="memstate",
        help="table_prefix given to MemState's PostgresStorage (default: memstate)",
    )
    p.add_argument(
        "--exclude-type",
        action="append",
        default=[],
        metavar="TYPE",
        help="leave facts of this type out (repeatable), e.g. MemState's LangGraph checkpoints: "
        "--exclude-type langgraph_checkpoint --exclude-type langgraph_write",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar (it goes to stderr)")
    if parent is None:
        p.add_argument(
            "--dsn",
            default=None,
            help="target PostgreSQL DSN (default: $MEMSTATE_DSN, else the embedded server)",
        )
        p.add_argument(
            "--data-dir",
            default=None,
            help="data dir of the embedded server (default: $MEMSTATE_DATA_DIR or the user "
            "data dir)",
        )
    p.set_defaults(func=run)
    return p


def _error(cause: str, remedy: str) -> None:
    err = Console(stderr=True, highlight=False)
    err.print(f"[red]error:[/red] {cause}", markup=True, soft_wrap=True)
    err.print(f"[dim]hint:[/dim] {remedy}", markup=True, soft_wrap=True)


def _open_target(args: argparse.Namespace):
    from ..store import MemoryStore

    dsn = getattr(args, "dsn", None) or os.environ.get("MEMSTATE_DSN")
    if dsn:  # migrated by the import itself, unless it is a dry run
        return MemoryStore(dsn, max_size=2)  # says why within seconds if it cannot connect
    data_dir = getattr(args, "data_dir", None)
    return MemoryStore.embedded(data_dir, migrate=not args.dry_run, max_size=2)


def run(args: argparse.Namespace) -> int:
    from .memstate import SourceUnavailable, import_memstate, open_source

    try:
        source = open_source(args.source, table_prefix=args.table_prefix)
    except SourceUnavailable as exc:
        _error(str(exc), exc.remedy)
        return EXIT_UNAVAILABLE
    try:
        try:
            store = _open_target(args)
        except Exception as exc:  # psycopg pool / embedded server start-up errors vary
            _error(
                f"cannot open the target database: {_first_line(exc)}",
                "check --dsn / $MEMSTATE_DSN (or --data-dir for the embedded server)",
            )
            return EXIT_UNAVAILABLE
        try:
            show = not args.no_progress and not args.json and sys.stderr.isatty()
            report = import_memstate(
                store,
                source,
                namespace=args.namespace,
                dry_run=args.dry_run,
                exclude_types=args.exclude_type,
                progress=show,
            )
        except (ValidationFailed, PermissionDenied) as exc:
            _error(str(exc), "give a valid --namespace the target role may write")
            return EXIT_USAGE
        except Unavailable as exc:
            _error(
                f"the target database is unavailable: {_first_line(exc)}",
                "start it (or fix --dsn) and run the same command again: it resumes",
            )
            return EXIT_UNAVAILABLE
        except MemStateError as exc:
            _error(str(exc), "see docs/from-memstate.md")
            return EXIT_USAGE
        except Exception as exc:
            import psycopg

            if isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)) or (
                type(exc).__name__ == "PoolTimeout"
            ):
                _error(
                    f"the target database is unavailable: {_first_line(exc)}",
                    "start it (or fix --dsn) and run the same command again: it resumes",
                )
                return EXIT_UNAVAILABLE
            raise
        finally:
            store.close()
    finally:
        source.close()
    if args.json:
        print(json.dumps(report.as_dict(), indent=2, default=str))
    else:
        _print_summary(report)
    return EXIT_FAILED_ENTRIES if report.failed else EXIT_OK


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def _print_summary(report: Any) -> None:
    console = Console(highlight=False)
    title = (
        f"{'dry run: ' if report.dry_run else ''}MemState {report.source} "
        f"-> namespace {report.namespace!r}"
    )
    table = Table(title=title, show_header=True)
    table.add_column("")
    table.add_column("count", justify="right")
    verb = "would be written" if report.dry_run else "written"
    rows = [
        ("log entries read", report.entries),
        (f"log entries {verb} as commits", report.imported),
        ("log entries imported by an earlier run (skipped)", report.already),
        ("log entries with nothing to do", report.nothing_to_do),
        ("log entries and facts of excluded types", report.excluded),
        (f"state commits {verb} (facts table)", report.state_commits),
        (f"fact versions {verb}", report.versions),
        ("facts (distinct ids)", report.facts),
        (f"facts {verb}", report.facts_written),
        ("live facts (MemState's facts table)", report.live),
        ("ids mapped with uuid5 (not UUIDs)", report.mapped_ids),
        ("sessions", report.sessions),
        ("types", len(report.types)),
        (
            f"types registered{' (would be)' if report.dry_run else ''}",
            len(report.types_registered),
        ),
        ("failed", len(report.failed)),
    ]
    for label, value in rows:
        table.add_row(label, f"{value:,}")
    table.caption = (
        f"{report.seconds:.1f}s, {report.facts_per_s:,.0f} facts/s, "
        f"{report.versions_per_s:,.0f} versions/s"
    )
    console.print(table)
    if report.failed:
        console.print(f"[bold red]refused by the target ({len(report.failed)}):[/bold red]")
        for f in report.failed[:20]:
            where = f"log entry {f['position']}" if f["position"] is not None else "facts table"
            console.print(
                f"  {where} {f['op']} {f['fact_id'] or ''}: {f['error']}",
                markup=False,
                soft_wrap=True,
            )
        if len(report.failed) > 20:
            console.print(f"  … and {len(report.failed) - 20} more (--json lists them all)")
