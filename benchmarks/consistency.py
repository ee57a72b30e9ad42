"""Drift under faults: naive dual write vs memstate-pg, compared by id and version.

N memories are created, then updated and deleted, while the vector store fails before
writing, fails after writing, times out, is down for a stretch, or the process writing it
is killed mid-batch (see memstate_pg/demos/consistency.py for each fault and how it is made).
Runs against Chroma embedded, a real Chroma server (`chroma run` on 127.0.0.1, whose
"killed" row SIGKILLs a real `memstate-pg sync` process), and Qdrant local mode.

    python -m benchmarks.consistency [--n 200 --updates 300 --deletes 50] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import uuid

from benchmarks.common import bench_database, console
from memstate_pg import migrations
from memstate_pg.demos.consistency import outcome_table, run_all
from memstate_pg.mirrors import ChromaMirror, QdrantMirror


def main(argv=None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--updates", type=int, default=300)
    ap.add_argument("--deletes", type=int, default=50)
    ap.add_argument("--no-server", action="store_true", help="skip the Chroma server")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import logging

    import chromadb
    from chromadb.config import Settings

    logging.getLogger("memstate_pg.sync").setLevel(logging.ERROR)
    embedded = chromadb.PersistentClient(
        path=tempfile.mkdtemp(prefix="bench-chroma-"), settings=Settings(anonymized_telemetry=False)
    )
    mirrors = {
        "Chroma embedded": lambda: (
            ChromaMirror(embedded, collection=f"c-{uuid.uuid4().hex[:8]}"),
            None,
        ),
        "Qdrant local": lambda: (
            QdrantMirror.from_location(":memory:", collection=f"q-{uuid.uuid4().hex[:8]}"),
            None,
        ),
    }
    server = None
    if not args.no_server:
        from tests.support.chroma_server import ChromaServer

        server = ChromaServer(tempfile.mkdtemp(prefix="bench-chroma-server-"))
        server.start()

        def chroma_server():
            col = f"s-{uuid.uuid4().hex[:8]}"
            return ChromaMirror.from_url(
                server.url, collection=col
            ), f"bench=chroma:{server.url}?collection={col}"

        mirrors["Chroma server"] = chroma_server
    try:
        with bench_database("memstate_bench_consistency") as dsn:
            migrations.upgrade(dsn)
            rows = run_all(
                dsn,
                mirrors,
                n=args.n,
                updates=args.updates,
                deletes=args.deletes,
                progress=lambda m: console.log(m),
            )
    finally:
        if server:
            server.stop()
    console.print(
        outcome_table(
            rows,
            f"drift: {args.n} creates, {args.updates} updates, {args.deletes} deletes; "
            "naive after the run, memstate-pg after drain()",
        )
    )
    for r in rows:
        extra = r["memstate"].extra
        if "sessions_killed" in extra or "processes_killed" in extra:
            console.print(
                f"{r['mirror']}, {r['scenario']}: worker database sessions terminated "
                f"{extra.get('sessions_killed', 0)} times, worker processes SIGKILLed "
                f"{extra.get('processes_killed', 0)} times"
            )
    bad = [
        r
        for r in rows
        if r["memstate"].drift
        or r["memstate"].lost_writes
        or r["memstate"].converge_seconds is None
    ]
    console.print(
        "memstate-pg: 0 missing, 0 stale, 0 ghosts, 0 lost writes in every row"
        if not bad
        else f"[red]memstate-pg drifted in {len(bad)} row(s)"
    )
    result = [
        {
            "mirror": r["mirror"],
            "scenario": r["scenario"],
            **{k: vars(r[k]) for k in ("naive", "memstate")},
        }
        for r in rows
    ]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2, default=str)
    return result


if __name__ == "__main__":
    main()
