"""The memory commands of `memstate-pg`: migrate, history, commits, rollback.

memstate-pg migrate [--rls]              # create or upgrade schema memstate
memstate-pg history [FACT_ID] [-n NS] [--limit N] [--json]   # newest first
memstate-pg commits [-n NS] [--limit N] [--json]              # newest first
memstate-pg rollback [STEPS] [-n NS] | --revert SEQ [--json]
memstate-pg reembed -n NS --embedder SPEC [--batch-size N] [--json]  # switch the model
memstate-pg compact --keep-versions N --older-than DURATION [-n NS] [--dry-run] [--json]
"""

from __future__ import annotations

import argparse
from typing import Any
from uuid import UUID

from . import common
from .errors import USAGE, CliError


def cmd_migrate(args: argparse.Namespace) -> int:
    from .. import migrations

    target = common.Target.from_args(args)
    args.target = target
    before = migrations.current(target.dsn)
    migrations.upgrade(target.dsn, rls=args.rls)
    after = migrations.current(target.dsn)
    if args.json:
        common.print_json(
            {"database": target.where, "from": before, "revision": after, "rls": args.rls}
        )
        return 0
    change = "already at" if before == after else f"migrated from {before or 'nothing'} to"
    common.say(
        f"schema memstate in {target.where}: {change} revision [bold]{after}[/bold]"
        + (", row level security on" if args.rls else "")
    )
    return 0


def _fact_id(text: str) -> UUID:
    try:
        return UUID(text)
    except ValueError:
        raise CliError(
            USAGE,
            f"{text!r} is not a fact id",
            "give the full id (a UUID) as `memstate-pg history` or `--json` prints it",
        ) from None


def cmd_history(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CliError(USAGE, "--limit must be at least 1", common_help("history"))
    fid = _fact_id(args.fact_id) if args.fact_id else None
    with common.open_store(args) as store:
        if fid is not None:
            versions = store.history(fid, limit=args.limit, newest_first=True)
            if not versions:
                raise CliError(
                    USAGE,
                    f"no fact {fid}",
                    "check the id: `memstate-pg history -n NAMESPACE` lists a namespace's facts",
                )
        else:
            versions = store.history(namespace=args.namespace, limit=args.limit, newest_first=True)
    if args.json:
        common.print_json([v.model_dump(mode="json") for v in versions])
        return 0
    if not versions:
        common.say(f"no versions in namespace {args.namespace!r}")
        return 0
    from rich.table import Table

    title = f"history of {fid or 'namespace ' + args.namespace}, newest first"
    table = Table(title=title, title_justify="left")
    for col in ("commit", "fact", "version", "op", "kind", "actor", "reason", "payload"):
        table.add_column(col, no_wrap=col == "fact", min_width=36 if col == "fact" else None)
    for v in versions:
        table.add_row(
            str(v.seq),
            str(v.fact_id),
            str(v.version),
            v.op,
            v.kind,
            v.actor or "",
            v.reason or "",
            str(v.payload),
        )
    common.console().print(table)
    return 0


def cmd_commits(args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise CliError(USAGE, "--limit must be at least 1", common_help("commits"))
    with common.open_store(args) as store:
        rows = store.commits(namespace=args.namespace, limit=args.limit)
    if args.json:
        common.print_json(rows)
        return 0
    from rich.table import Table

    table = Table(
        title=f"commits of namespace {args.namespace}, newest first", title_justify="left"
    )
    for col in ("commit", "kind", "actor", "reason", "session", "undoes", "undone by", "at"):
        table.add_column(col)
    for r in rows:
        table.add_row(
            str(r["seq"]),
            r["kind"],
            r["actor"] or "",
            r["reason"] or "",
            r["session_id"] or "",
            ", ".join(map(str, r["undoes"] or [])),
            str(r["undone_by"] or ""),
            f"{r['created_at']:%Y-%m-%d %H:%M:%S}",
        )
    common.console().print(table)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    out: dict[str, Any]
    with common.open_store(args) as store:
        if args.revert is not None:
            seq = store.revert(args.revert, actor="cli", reason=args.reason)
            out = {"seq": seq, "reverted": args.revert}
            text = f"reverted commit {args.revert} as commit [bold]{seq}[/bold]"
        else:
            seq = store.rollback(
                args.steps,
                namespace=args.namespace,
                session_id=args.session,
                actor="cli",
                reason=args.reason,
            )
            out = {"seq": seq, "namespace": args.namespace, "steps": args.steps}
            text = (
                f"rolled back {args.steps} commit(s) of {args.namespace!r} "
                f"as commit [bold]{seq}[/bold]"
            )
    if args.json:
        common.print_json(out)
    else:
        common.say(text)
    return 0


def cmd_reembed(args: argparse.Namespace) -> int:
    from ..embedders.spec import SPEC_HELP, embedder_from_spec
    from .sync import _progress_bar

    if args.batch_size < 1:
        raise CliError(USAGE, "--batch-size must be at least 1", common_help("reembed"))
    try:
        embedder = embedder_from_spec(args.embedder)
    except ValueError as exc:
        raise CliError(USAGE, str(exc), f"name the new model as {SPEC_HELP}") from None
    if embedder is None:
        raise CliError(USAGE, "--embedder is empty", f"name the new model as {SPEC_HELP}")
    with (
        common.open_store(args) as store,
        _progress_bar(f"re-embedding {args.namespace!r}", not args.json) as progress,
    ):
        report = store.reembed(
            embedder,
            namespace=args.namespace,
            batch_size=args.batch_size,
            progress=progress,
            actor="cli",
            reason=args.reason,
        )
    if args.json:
        common.print_json(report.model_dump())
    else:
        common.say(
            f"namespace {report.namespace!r} now uses model [bold]{report.model}[/bold]: "
            f"{report.switched} fact(s) switched in one commit, {report.staged} embedded by "
            f"this run, in {report.seconds:.1f}s (register a mirror of the new model to carry it)"
        )
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    from ..compaction import parse_duration
    from ..errors import ValidationFailed
    from .sync import _progress_bar

    if args.keep_versions < 1:
        raise CliError(USAGE, "--keep-versions must be at least 1", common_help("compact"))
    if args.batch_size < 1:
        raise CliError(USAGE, "--batch-size must be at least 1", common_help("compact"))
    try:
        window = parse_duration(args.older_than)
    except ValidationFailed as exc:
        raise CliError(USAGE, str(exc), "give --older-than as e.g. 30d, 12h, 1d12h or 2w") from None
    if window.total_seconds() <= 0:
        raise CliError(USAGE, "--older-than must be longer than 0", "give e.g. 30d")
    what = f"namespace {args.namespace!r}" if args.namespace else "every namespace"
    verb = "would be" if args.dry_run else "were"
    with (
        common.open_store(args) as store,
        _progress_bar(
            f"compacting {what}", not args.json and not args.dry_run and common.is_tty()
        ) as progress,
    ):
        report = store.compact(
            keep_versions=args.keep_versions,
            older_than=window,
            namespace=args.namespace,
            batch_size=args.batch_size,
            dry_run=args.dry_run,
            drop_dead_outbox=args.drop_dead_outbox,
            progress=progress,
        )
    if args.json:
        common.print_json(report.model_dump(mode="json"))
        return 0
    for n in report.namespaces:
        common.say(f"{n.namespace}: horizon {n.horizon_seq} (as_of and undo reach back to it)")
    dead = (
        f"{report.dead_outbox_rows} dead outbox row(s) older than the window {verb} removed"
        if args.drop_dead_outbox
        else f"{report.dead_outbox_rows} dead outbox row(s) older than the window kept "
        "(--drop-dead-outbox removes them; reconcile the mirror then)"
    )
    common.say(
        f"{'dry run: ' if args.dry_run else ''}{what}, history older than {args.older_than}, "
        f"keeping {args.keep_versions} version(s) per fact: versions removed: "
        f"{report.versions_deleted}, commits removed: {report.commits_deleted}, "
        f"vectors moved to a kept version: {report.vectors_materialised}, stale re-embed "
        f"staging rows: {report.reembed_staging_deleted}, TTL clocks of gone items: "
        f"{report.lg_clocks_deleted}; {dead}; in {report.seconds:.1f}s"
    )
    return 0


def common_help(command: str) -> str:
    return f"see memstate-pg {command} --help"


def register(sub: Any, parent: argparse.ArgumentParser) -> None:
    def add(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help,
            description=help,
            parents=[parent],
            formatter_class=common.Formatter,
        )

    p = add("migrate", "create or upgrade schema memstate (idempotent)")
    p.add_argument(
        "--rls",
        action="store_true",
        help="also turn on row level security by namespace (see SECURITY.md)",
    )
    common.add_json_option(p)
    p.set_defaults(func=cmd_migrate)

    p = add("history", "versions of a fact, or of a namespace, newest first")
    p.add_argument(
        "fact_id", nargs="?", default=None, help="a fact id (default: the whole namespace)"
    )
    p.add_argument("--namespace", "-n", default="default", help="the namespace")
    p.add_argument("--limit", type=int, default=100, help="the newest N versions")
    common.add_json_option(p)
    p.set_defaults(func=cmd_history)

    p = add("commits", "the commits of a namespace, newest first")
    p.add_argument("--namespace", "-n", default="default", help="the namespace")
    p.add_argument("--limit", type=int, default=20, help="the newest N commits")
    common.add_json_option(p)
    p.set_defaults(func=cmd_commits)

    p = add("rollback", "undo the last N commits of a namespace (or --revert SEQ)")
    p.add_argument("steps", nargs="?", type=int, default=1, help="how many commits to undo")
    p.add_argument("--namespace", "-n", default="default", help="the namespace")
    p.add_argument("--session", default=None, help="only the commits of this session")
    p.add_argument(
        "--revert", type=int, default=None, metavar="SEQ", help="undo this one commit instead"
    )
    p.add_argument("--reason", default=None, help="recorded with the undo commit")
    common.add_json_option(p)
    p.set_defaults(func=cmd_rollback)

    p = add(
        "reembed",
        "re-embed a namespace with a new embedding model and switch it (resumable)",
    )
    p.add_argument("--namespace", "-n", default="default", help="the namespace")
    p.add_argument(
        "--embedder",
        required=True,
        metavar="SPEC",
        help="the new model: hashing:DIM, sentence-transformers:MODEL or openai:MODEL",
    )
    p.add_argument("--batch-size", type=int, default=256, help="texts per embedding call")
    p.add_argument("--reason", default=None, help="recorded with the switch commit")
    common.add_json_option(p)
    p.set_defaults(func=cmd_reembed)

    p = add(
        "compact",
        "remove history older than a window, keeping current state and N versions per fact "
        "(as the schema owner; batched and online; see README, Retention)",
    )
    p.add_argument(
        "--keep-versions",
        type=int,
        required=True,
        metavar="N",
        help="keep at least the N newest versions of every fact (>= 1)",
    )
    p.add_argument(
        "--older-than",
        required=True,
        metavar="DURATION",
        help="the window kept whole: history older than this goes (30d, 12h, 1d12h, 2w)",
    )
    p.add_argument(
        "--namespace", "-n", default=None, help="only this namespace (default: every namespace)"
    )
    p.add_argument("--dry-run", action="store_true", help="change nothing; print what would go")
    p.add_argument(
        "--drop-dead-outbox",
        action="store_true",
        help="also remove dead outbox rows older than the window (a mirror then needs reconcile)",
    )
    p.add_argument("--batch-size", type=int, default=2000, help="facts or commits per transaction")
    common.add_json_option(p)
    p.set_defaults(func=cmd_compact)
