"""The sync subcommands of ``memstate-pg``: sync, reconcile, status, requeue, mirror.

memstate_pg/cli.py calls ``register(subparsers, cli_common)``; every subcommand sets
``func`` (``args.func(args) -> int`` is the exit code). ``python -m memstate_pg.cli_sync``
runs these commands alone (see :func:`main`).

Mirrors are named as registered in memstate.mirrors and located by a *mirror spec*
(memstate_pg/sync/specs.py)::

    memstate-pg mirror add chroma --mirror chroma:http://127.0.0.1:8000 --metadata-field role
    memstate-pg sync                                 # every registered mirror it can reach
    memstate-pg sync --mirror chroma=chroma:path:/data/chroma --drain
    memstate-pg reconcile chroma --no-repair         # exit 1 when drift was found
    memstate-pg status
    memstate-pg requeue chroma
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import ModuleType
from typing import Any

from .errors import MemStateError, ValidationFailed
from .mirrors.base import Mirror
from .sync.specs import parse_mirror_spec

__all__ = ["main", "register"]

_KINDS = ("chroma:", "qdrant:")


def _spec(spec: str, name: str | None, collection: str) -> tuple[str, Mirror]:
    """A spec with or without its ``NAME=`` part (then `name` is used)."""
    if spec.startswith(_KINDS):
        if name is None:
            raise ValidationFailed(f"mirror spec {spec!r} needs a name: NAME={spec}")
        spec = f"{name}={spec}"
    got, mirror = parse_mirror_spec(spec, collection=collection)
    if name is not None and got != name:
        raise ValidationFailed(f"mirror spec names {got!r}, expected {name!r}")
    return got, mirror


def _store(common: Any, args: argparse.Namespace) -> Any:
    """The MemoryStore the command works on (its mirror API: sync/mirrors_api.py)."""
    return common.store_from_args(args)


@contextmanager
def _progress_bar(
    description: str, enabled: bool = True
) -> Iterator[Callable[[int, int | None], None]]:
    """A rich progress bar, as a `progress(done, total)` callback."""
    if not enabled:
        yield lambda done, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int | None) -> None:
            bar.update(task, completed=done, total=total)

        yield update


def _close_mirrors(mirrors: Any) -> None:
    """Close the clients this command opened (Qdrant local mode holds a lock on its dir)."""
    for mirror in mirrors:
        try:
            mirror.close()
        except Exception as exc:  # closing is best effort at exit
            logging.getLogger("memstate_pg.cli").debug("closing %r: %s", mirror, exc)


def _console() -> Any:
    from rich.console import Console

    return Console()


# --- commands -------------------------------------------------------------------------


def cmd_sync(common: Any, args: argparse.Namespace) -> int:
    from .sync.worker import SyncWorker

    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    store = _store(common, args)
    mirrors: dict[str, Mirror] = {}
    try:
        mirrors = dict(_spec(s, None, args.collection) for s in args.mirror)
        worker = SyncWorker(
            store,
            mirrors or None,
            batch_size=args.batch_size,
            max_attempts=args.max_attempts,
            poll_interval=args.poll_interval,
            reconcile_every=args.reconcile_every,
        )
        with worker:
            if args.once:
                print(f"acked {worker.run_once()} outbox row(s)")
                return 0
            if args.drain:
                ok = worker.drain(timeout=args.timeout)
                left = worker.pending()
                print(f"{'drained' if ok else 'not drained'}: {left.pending} row(s) pending")
                return 0 if ok else 1
            worker.run_forever()
            return 0
    finally:
        _close_mirrors([*mirrors.values(), *store.mirrors().values()])  # given, or rebuilt by name
        store.close()


def cmd_reconcile(common: Any, args: argparse.Namespace) -> int:
    store = _store(common, args)
    try:
        if args.mirror:
            store.use_mirror(*_spec(args.mirror, args.name, args.collection))
        with _progress_bar(f"reconcile {args.name}", not args.json) as progress:
            report = store.reconcile(
                args.name, repair=not args.no_repair, page_size=args.page_size, progress=progress
            )
        if args.json:
            print(report.model_dump_json())
        else:
            from rich.table import Table

            table = Table(title=f"reconcile {args.name}")
            for col in ("checked", "missing", "stale", "ghosts", "repaired", "seconds"):
                table.add_column(col, justify="right")
            table.add_row(
                *(
                    str(getattr(report, c))
                    for c in ("checked", "missing", "stale", "ghosts", "repaired", "seconds")
                )
            )
            _console().print(table)
        return 1 if args.no_repair and report.drift else 0
    finally:
        _close_mirrors(store.mirrors().values())
        store.close()


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def cmd_status(common: Any, args: argparse.Namespace) -> int:
    store = _store(common, args)
    try:
        status = store.status()
        dead = {
            name: store.dead_letters(name, limit=args.errors)
            for name, s in status.items()
            if s.dead
        }
        if args.json:
            out = {
                name: {
                    **s.model_dump(mode="json"),
                    "dead_letters": [
                        {
                            "fact_id": str(r["fact_id"]),
                            "attempts": r["attempts"],
                            "last_error": r["last_error"],
                        }
                        for r in dead.get(name, [])
                    ],
                }
                for name, s in status.items()
            }
            print(json.dumps(out, indent=2))
            return 0
        from rich.table import Table

        console = _console()
        if not status:
            console.print("no mirrors registered (memstate-pg mirror add NAME --mirror SPEC)")
            return 0
        table = Table(title="mirrors")
        for col in (
            "mirror",
            "kind",
            "enabled",
            "pending",
            "dead",
            "lag",
            "last synced seq",
            "last synced",
            "last reconcile",
        ):
            table.add_column(col)
        for name, s in status.items():
            rec = s.last_reconcile or {}
            last_rec = (
                "-"
                if not rec
                else (
                    f"{rec.get('missing', 0)} missing, {rec.get('stale', 0)} stale, {rec.get('ghosts', 0)} ghosts, "
                    f"{rec.get('repaired', 0)} repaired"
                    + (
                        f" ({s.last_reconciled_at:%Y-%m-%d %H:%M:%S})"
                        if s.last_reconciled_at
                        else ""
                    )
                )
            )
            table.add_row(
                name,
                s.kind,
                "yes" if s.enabled else "no",
                str(s.pending),
                str(s.dead),
                _age(s.oldest_pending_age),
                str(s.last_synced_seq or "-"),
                f"{s.last_synced_at:%Y-%m-%d %H:%M:%S}" if s.last_synced_at else "-",
                last_rec,
            )
        console.print(table)
        for name, rows in dead.items():
            console.print(f"[bold red]{name}[/]: dead rows (memstate-pg requeue {name}):")
            for r in rows:
                console.print(
                    f"  fact {r['fact_id']} after {r['attempts']} attempts: {r['last_error']}",
                    markup=False,
                    highlight=False,
                )
        return 0
    finally:
        store.close()


def cmd_requeue(common: Any, args: argparse.Namespace) -> int:
    store = _store(common, args)
    try:
        n = store.requeue(args.name, dead_only=not args.all)
        print(f"requeued {n} row(s) of mirror {args.name}")
        return 0
    finally:
        store.close()


def cmd_mirror_add(common: Any, args: argparse.Namespace) -> int:
    if not args.mirror:
        raise ValidationFailed("mirror add needs --mirror [NAME=]KIND:LOCATION")
    store = _store(common, args)
    try:
        name, mirror = _spec(args.mirror, args.name, args.collection)
        with _progress_bar(f"backfill {name}", not args.no_backfill) as progress:
            store.add_mirror(
                mirror,
                name,
                metadata_fields=args.metadata_field or (),
                namespaces=args.namespace or None,
                types=args.type or None,
                backfill=not args.no_backfill,
                progress=progress,
            )
        pending = store.status()[name].pending
        print(
            f"mirror {name} ({mirror.kind}) registered; {pending} row(s) pending: run `memstate-pg sync`"
        )
        return 0
    finally:
        _close_mirrors(store.mirrors().values())
        store.close()


def cmd_mirror_remove(common: Any, args: argparse.Namespace) -> int:
    store = _store(common, args)
    try:
        store.remove_mirror(args.name)
        print(f"mirror {args.name} removed (its store was left as it is)")
        return 0
    finally:
        store.close()


# --- wiring ---------------------------------------------------------------------------


def _bind(
    fn: Callable[[Any, argparse.Namespace], int], common: Any
) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return fn(common, args)
        except MemStateError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 2

    return run


def _mirror_option(p: argparse.ArgumentParser, *, many: bool) -> None:
    p.add_argument(
        "--mirror",
        action="append" if many else "store",
        default=[] if many else None,
        metavar="[NAME=]KIND:LOCATION",
        help="where the mirror's store is: chroma:http://host:port, chroma:path:DIR, "
        "qdrant:http://host:port, qdrant:path:DIR, qdrant::memory: "
        "(optionally ?collection=C)",
    )
    p.add_argument("--collection", default="memory", help="collection name (default: memory)")


def register(subparsers: Any, common: ModuleType | Any) -> None:
    """Add sync, reconcile, status, requeue and mirror to an argparse subparsers object."""
    p = subparsers.add_parser(
        "sync", help="feed the mirrors from the outbox (LISTEN/NOTIFY worker)"
    )
    common.add_dsn_argument(p)
    _mirror_option(p, many=True)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="process one batch per mirror and exit")
    mode.add_argument(
        "--drain", action="store_true", help="run until nothing is pending, then exit"
    )
    p.add_argument("--timeout", type=float, default=300.0, help="--drain gives up after this (s)")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--max-attempts", type=int, default=8)
    p.add_argument("--poll-interval", type=float, default=1.0)
    p.add_argument("--reconcile-every", type=float, default=None, metavar="SECONDS")
    p.add_argument("-v", "--verbose", action="store_true")
    p.set_defaults(func=_bind(cmd_sync, common))

    p = subparsers.add_parser("reconcile", help="compare a mirror with Postgres and repair drift")
    common.add_dsn_argument(p)
    p.add_argument("name", help="registered mirror name")
    _mirror_option(p, many=False)
    p.add_argument("--no-repair", action="store_true", help="only report (exit 1 on drift)")
    p.add_argument("--page-size", type=int, default=1000)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_bind(cmd_reconcile, common))

    p = subparsers.add_parser(
        "status", help="per mirror: pending, dead, lag, last sync and reconcile"
    )
    common.add_dsn_argument(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--errors", type=int, default=5, help="dead rows shown per mirror")
    p.set_defaults(func=_bind(cmd_status, common))

    p = subparsers.add_parser("requeue", help="retry a mirror's dead outbox rows")
    common.add_dsn_argument(p)
    p.add_argument("name")
    p.add_argument("--all", action="store_true", help="also rows waiting in backoff")
    p.set_defaults(func=_bind(cmd_requeue, common))

    p = subparsers.add_parser("mirror", help="register or remove a mirror")
    sub = p.add_subparsers(dest="mirror_command", required=True)
    a = sub.add_parser("add", help="register a mirror and backfill it with the live facts")
    common.add_dsn_argument(a)
    a.add_argument("name")
    _mirror_option(a, many=False)
    a.add_argument(
        "--metadata-field",
        action="append",
        default=[],
        metavar="FIELD",
        help="payload field carried as point metadata (repeatable; dotted paths allowed)",
    )
    a.add_argument(
        "--namespace", action="append", default=[], help="only these namespaces (repeatable)"
    )
    a.add_argument("--type", action="append", default=[], help="only these fact types (repeatable)")
    a.add_argument("--no-backfill", action="store_true", help="only changes from now on")
    a.set_defaults(func=_bind(cmd_mirror_add, common))
    r = sub.add_parser("remove", help="unregister a mirror (drops its pending rows)")
    common.add_dsn_argument(r)
    r.add_argument("name")
    r.set_defaults(func=_bind(cmd_mirror_remove, common))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one sync subcommand on its own (``python -m memstate_pg.cli_sync …``)."""
    from . import cli_common

    parser = argparse.ArgumentParser(
        prog="memstate-pg", description="memstate-pg mirror sync commands"
    )
    register(parser.add_subparsers(dest="command", required=True), cli_common)
    args = parser.parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
