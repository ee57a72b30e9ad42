"""The sync commands of `memstate-pg`: sync, reconcile, status, requeue, mirror.

Mirrors are named as registered in memstate.mirrors and located by a *mirror spec*
(memstate_pg/sync/specs.py)::

    memstate-pg mirror add chroma --mirror chroma:http://127.0.0.1:8000 --metadata-field role
    memstate-pg sync                                 # every registered mirror it can reach
    memstate-pg sync --mirror chroma=chroma:path:/data/chroma --drain   # exit 1: not drained
    memstate-pg reconcile chroma --no-repair         # exit 1 when drift remains
    memstate-pg status
    memstate-pg requeue chroma
"""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import ValidationFailed
from . import common
from .errors import NOT_DONE, USAGE, CliError

_KINDS = ("chroma:", "qdrant:")
log = logging.getLogger("memstate_pg.cli")


def _spec(spec: str, name: str | None, collection: str | None) -> tuple[str, Any]:
    """A spec with or without its ``NAME=`` part (then `name` is used)."""
    from ..sync.specs import parse_mirror_spec

    if spec.startswith(_KINDS):
        if name is None:
            raise ValidationFailed(f"mirror spec {spec!r} needs a name: NAME={spec}")
        spec = f"{name}={spec}"
    got, mirror = parse_mirror_spec(spec, collection=collection)
    if name is not None and got != name:
        raise ValidationFailed(f"mirror spec names {got!r}, expected {name!r}")
    return got, mirror


@contextmanager
def _progress_bar(
    description: str, enabled: bool = True
) -> Iterator[Callable[[int, int | None], None]]:
    """A rich progress bar on stderr, as a `progress(done, total)` callback."""
    if not enabled:
        yield lambda done, total: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=common.console(stderr=True),
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
            log.debug("closing %r: %s", mirror, exc)


# --- commands -------------------------------------------------------------------------


def _drain(worker: Any, timeout: float, show: bool) -> bool:
    """worker.drain(timeout), with a progress line on stderr (rows acknowledged so far)."""
    if not show:
        return bool(worker.drain(timeout=timeout))
    total = worker.pending().pending
    stop = threading.Event()
    with _progress_bar("draining the outbox") as progress:
        progress(0, total)

        def watch() -> None:
            while not stop.wait(0.5):
                try:
                    left = worker.pending().pending
                except Exception:  # the database restarting: the worker retries, so do we
                    continue
                progress(max(0, total - left), max(total, left))

        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        try:
            ok = bool(worker.drain(timeout=timeout))
        finally:
            stop.set()
            thread.join(timeout=2)
        left = worker.pending().pending
        progress(max(0, total - left), max(total, left))
    return ok


def cmd_sync(args: argparse.Namespace) -> int:
    from ..sync.worker import SyncWorker

    mirrors: dict[str, Any] = {}
    with common.open_store(args) as store:
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
                    acked = worker.run_once()
                    if args.json:
                        common.print_json({"acked": acked})
                    else:
                        print(f"acked {acked} outbox row(s)")
                    return 0
                if args.drain:
                    ok = _drain(worker, args.timeout, show=not args.json)
                    left = worker.pending().pending
                    status = store.status()
                    dead = sum(status[n].dead for n in worker.mirrors if n in status)
                    if args.json:
                        common.print_json({"drained": ok, "pending": left, "dead": dead})
                    else:
                        print(f"{'drained' if ok else 'not drained'}: {left} row(s) pending")
                    if dead:  # given up on: the mirror refused them (see status, requeue)
                        print(
                            f"error: {dead} outbox row(s) are dead: the mirror refused them\n"
                            "hint: memstate-pg status shows the last error; fix it, then "
                            "memstate-pg requeue NAME",
                            file=sys.stderr,
                        )
                    return 0 if ok and not dead else NOT_DONE
                if not args.verbose:  # a service: its own start/stop lines are wanted
                    logging.getLogger("memstate_pg").setLevel(logging.INFO)
                worker.run_forever()
                return 0
        finally:
            _close_mirrors([*mirrors.values(), *store.mirrors().values()])


def cmd_reconcile(args: argparse.Namespace) -> int:
    with common.open_store(args) as store:
        try:
            if args.mirror:
                store.use_mirror(*_spec(args.mirror, args.name, args.collection))
            with _progress_bar(f"reconcile {args.name}", not args.json) as progress:
                report = store.reconcile(
                    args.name,
                    repair=not args.no_repair,
                    page_size=args.page_size,
                    progress=progress,
                )
        finally:
            _close_mirrors(store.mirrors().values())
    left = report.drift if args.no_repair else max(0, report.drift - report.repaired)
    if args.json:
        common.print_json({**report.model_dump(mode="json"), "drift": report.drift, "left": left})
    else:
        from rich.table import Table

        cols = ("checked", "missing", "stale", "ghosts", "repaired", "seconds")
        table = Table(title=f"reconcile {args.name}")
        for col in cols:
            table.add_column(col, justify="right")
        table.add_row(*(str(getattr(report, c)) for c in cols))
        common.console().print(table)
        if left:
            common.say(
                f"{left} difference(s) left unrepaired"
                + (" (--no-repair): run without it to repair" if args.no_repair else "")
            )
    return NOT_DONE if left else 0


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    if seconds < 3600:
        return f"{seconds / 60:.1f}m"
    return f"{seconds / 3600:.1f}h"


def cmd_status(args: argparse.Namespace) -> int:
    with common.open_store(args) as store:
        status = store.status()
        dead = {
            name: store.dead_letters(name, limit=args.errors)
            for name, s in status.items()
            if s.dead
        }
    if args.json:
        common.print_json(
            {
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
        )
        return 0
    from rich.table import Table

    console = common.console()
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
        last_rec = "-"
        if rec:
            last_rec = (
                f"{rec.get('missing', 0)} missing, {rec.get('stale', 0)} stale, "
                f"{rec.get('ghosts', 0)} ghosts, {rec.get('repaired', 0)} repaired"
            )
            if s.last_reconciled_at:
                last_rec += f" ({s.last_reconciled_at:%Y-%m-%d %H:%M:%S})"
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
            )
    return 0


def cmd_requeue(args: argparse.Namespace) -> int:
    with common.open_store(args) as store:
        n = store.requeue(args.name, dead_only=not args.all)
    if args.json:
        common.print_json({"mirror": args.name, "requeued": n})
    else:
        print(f"requeued {n} row(s) of mirror {args.name}")
    return 0


def cmd_mirror_add(args: argparse.Namespace) -> int:
    if not args.mirror:
        raise CliError(
            USAGE,
            "mirror add needs --mirror [NAME=]KIND:LOCATION",
            "e.g. --mirror chroma:http://127.0.0.1:8000 (see memstate-pg mirror add --help)",
        )
    with common.open_store(args) as store:
        try:
            name, mirror = _spec(args.mirror, args.name, args.collection)
            show = not args.no_backfill and not args.json
            with _progress_bar(f"backfill {name}", show) as progress:
                store.add_mirror(
                    mirror,
                    name,
                    metadata_fields=args.metadata_field or (),
                    namespaces=args.namespace or None,
                    types=args.type or None,
                    model=args.model,
                    backfill=not args.no_backfill,
                    progress=progress,
                )
            pending = store.status()[name].pending
        finally:
            _close_mirrors(store.mirrors().values())
    if args.json:
        common.print_json({"mirror": name, "kind": mirror.kind, "pending": pending})
    else:
        print(
            f"mirror {name} ({mirror.kind}) registered; {pending} row(s) pending: "
            "run `memstate-pg sync`"
        )
    return 0


def cmd_mirror_remove(args: argparse.Namespace) -> int:
    with common.open_store(args) as store:
        store.remove_mirror(args.name)
    if args.json:
        common.print_json({"mirror": args.name, "removed": True})
    else:
        print(f"mirror {args.name} removed (its store was left as it is)")
    return 0


# --- wiring ---------------------------------------------------------------------------


def _mirror_option(p: argparse.ArgumentParser, *, many: bool) -> None:
    p.add_argument(
        "--mirror",
        action="append" if many else "store",
        default=[] if many else None,
        metavar="[NAME=]KIND:LOCATION",
        help="where the mirror's store is: chroma:http://host:port, chroma:path:DIR, "
        "qdrant:http://host:port, qdrant:path:DIR, qdrant::memory: "
        "(optionally ?collection=C)"
        + (" (repeatable; default: every registered mirror it can reach)" if many else ""),
    )
    p.add_argument(
        "--collection",
        default=None,
        help="collection name (default: the mirror's name; ?collection=C in a spec wins)",
    )


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    """Add sync, reconcile, status, requeue and mirror to the `memstate-pg` parser."""

    def add(subparsers: Any, name: str, help: str) -> argparse.ArgumentParser:
        return subparsers.add_parser(
            name, help=help, description=help, parents=[parent], formatter_class=common.Formatter
        )

    p = add(sub, "sync", "feed the mirrors from the outbox (LISTEN/NOTIFY worker)")
    _mirror_option(p, many=True)
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--once", action="store_true", help="process one batch per mirror and exit")
    mode.add_argument(
        "--drain",
        action="store_true",
        help="run until nothing is pending, then exit (exit 1 if not drained in --timeout)",
    )
    p.add_argument("--timeout", type=float, default=300.0, help="--drain gives up after this (s)")
    p.add_argument(
        "--batch-size", type=int, default=None, help="rows per batch (default: the mirror's)"
    )
    p.add_argument(
        "--max-attempts", type=int, default=8, help="a row is dead after this many failures"
    )
    p.add_argument(
        "--poll-interval", type=float, default=1.0, help="seconds between polls without NOTIFY"
    )
    p.add_argument(
        "--reconcile-every",
        type=float,
        default=None,
        metavar="SECONDS",
        help="also reconcile each mirror this often (default: never)",
    )
    common.add_json_option(p)
    p.set_defaults(func=cmd_sync)

    p = add(
        sub, "reconcile", "compare a mirror with Postgres and repair drift (exit 1: drift left)"
    )
    p.add_argument("name", help="registered mirror name")
    _mirror_option(p, many=False)
    p.add_argument("--no-repair", action="store_true", help="only report (exit 1 on drift)")
    p.add_argument("--page-size", type=int, default=1000, help="facts compared per page")
    common.add_json_option(p)
    p.set_defaults(func=cmd_reconcile)

    p = add(sub, "status", "per mirror: pending, dead, lag, last sync and reconcile")
    common.add_json_option(p)
    p.add_argument("--errors", type=int, default=5, help="dead rows shown per mirror")
    p.set_defaults(func=cmd_status)

    p = add(sub, "requeue", "retry a mirror's dead outbox rows")
    p.add_argument("name", help="registered mirror name")
    p.add_argument("--all", action="store_true", help="also rows waiting in backoff")
    common.add_json_option(p)
    p.set_defaults(func=cmd_requeue)

    p = add(sub, "mirror", "register or remove a mirror")
    msub = p.add_subparsers(dest="mirror_command", required=True, metavar="ACTION")
    a = add(msub, "add", "register a mirror and backfill it with the live facts")
    a.add_argument("name", help="the mirror's name")
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
    a.add_argument(
        "--model",
        default="*",
        help="only facts of this embedding model (default *: every model; after `memstate-pg "
        "reembed`, register a mirror of the new model)",
    )
    a.add_argument("--no-backfill", action="store_true", help="only changes from now on")
    common.add_json_option(a)
    a.set_defaults(func=cmd_mirror_add)
    r = add(msub, "remove", "unregister a mirror (drops its pending rows)")
    r.add_argument("name", help="registered mirror name")
    common.add_json_option(r)
    r.set_defaults(func=cmd_mirror_remove)
