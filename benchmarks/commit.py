"""Commit throughput: MemoryStore.commit against the floor of hand-written psycopg.

Single-fact commits/s through `MemoryStore.commit` vs a hand-written psycopg transaction
that does the minimal equivalent inserts into the same tables (a commit row, the current
row with its vector, the version row), pipelined into one round trip; and a batch of 1000
facts in one transaction (`MemoryStore.commit_many`) vs a psycopg COPY of the same rows.
Both sides get the same precomputed 384-d vectors, so embedding is not measured; a third
row shows `commit` embedding for itself. Runs alternate A/B on one database, so index
growth hurts both alike. Prints medians over several runs.

    python -m benchmarks.commit [--runs 5] [--single 300] [--batch 1000]
"""

from __future__ import annotations

import argparse
import json
import uuid

import psycopg

from benchmarks.common import bench_database, console, rate_table, server_versions, summary, timed
from memstate_pg import Fact, HashingEmbedder, MemoryStore
from memstate_pg.vectors import vector_text

EMB = HashingEmbedder(dim=384)


def texts(prefix: str, n: int) -> list[str]:
    return [f"{prefix} memory number {i} about topic {i % 37}" for i in range(n)]


def floor_single(conn: psycopg.Connection, ns: str, items: list[tuple[str, str]]) -> int:
    for text, vec in items:
        fid = uuid.uuid4()
        payload = json.dumps({"text": text})
        with conn.transaction(), conn.pipeline():
            cur = conn.execute(
                "INSERT INTO memstate.commits (namespace) VALUES (%s) RETURNING seq", (ns,)
            )
            conn.execute(
                "INSERT INTO memstate.facts (fact_id, namespace, type, payload, content, embedding, embedding_model,"
                " version, commit_seq) VALUES (%s, %s, 'note', %s::jsonb, %s, %s::vector, %s, 1,"
                " currval('memstate.commits_seq_seq'))",
                (fid, ns, payload, text, vec, EMB.model),
            )
            conn.execute(
                "INSERT INTO memstate.fact_versions (fact_id, version, seq, namespace, type, op, payload, content,"
                " embedding, embedding_model) VALUES (%s, 1, currval('memstate.commits_seq_seq'), %s, 'note', 'put',"
                " %s::jsonb, %s, %s::vector, %s)",
                (fid, ns, payload, text, vec, EMB.model),
            )
        cur.fetchone()
    return len(items)


def floor_copy(conn: psycopg.Connection, ns: str, items: list[tuple[str, str]]) -> int:
    with conn.transaction():
        seq = conn.execute(
            "INSERT INTO memstate.commits (namespace) VALUES (%s) RETURNING seq", (ns,)
        ).fetchone()[0]
        rows = [(uuid.uuid4(), json.dumps({"text": t}), t, v) for t, v in items]
        with conn.cursor().copy(
            "COPY memstate.facts (fact_id, namespace, type, payload, content, embedding,"
            " embedding_model, version, commit_seq) FROM STDIN"
        ) as copy:
            for fid, payload, text, vec in rows:
                copy.write_row((fid, ns, "note", payload, text, vec, EMB.model, 1, seq))
        with conn.cursor().copy(
            "COPY memstate.fact_versions (fact_id, version, seq, namespace, type, op, payload,"
            " content, embedding, embedding_model) FROM STDIN"
        ) as copy:
            for fid, payload, text, vec in rows:
                copy.write_row((fid, 1, seq, ns, "note", "put", payload, text, vec, EMB.model))
    return len(items)


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--single", type=int, default=300, help="commits per single-commit run")
    ap.add_argument("--batch", type=int, default=1000, help="facts per batch")
    args = ap.parse_args(argv)

    with bench_database("memstate_bench_commit") as dsn:
        mem = MemoryStore(dsn, max_size=2)
        mem.migrate()
        mem.register_schema("note", None, text_field="text")
        versions = server_versions(dsn)
        raw = psycopg.connect(dsn, autocommit=True)

        def items(prefix, n):
            ts = texts(prefix, n)
            return list(zip(ts, [vector_text(v) for v in EMB.embed(ts)], strict=True))

        def facts_of(its):
            return [
                Fact(
                    type="note",
                    payload={"text": t},
                    embedding=[float(x) for x in v[1:-1].split(",")],
                )
                for t, v in its
            ]

        # warm-up: plans, prepared statements, index pages
        floor_single(raw, "warm", items("w", 30))
        mem.commit_many(facts_of(items("w", 30)), namespace="warm")
        for f in facts_of(items("w2", 30)):
            mem.commit(f, namespace="warm")

        r = {"floor_single": [], "commit": [], "commit_embed": [], "copy": [], "commit_many": []}
        for run in range(args.runs):
            its = items(f"fs{run}", args.single)
            r["floor_single"].append(
                timed(lambda its=its, run=run: floor_single(raw, f"fs{run}", its))
            )
            fs = facts_of(items(f"ms{run}", args.single))
            r["commit"].append(
                timed(
                    lambda fs=fs, run=run: (
                        [mem.commit(f, namespace=f"ms{run}") for f in fs] and len(fs)
                    )
                )
            )
            plain = [Fact(type="note", payload={"text": t}) for t in texts(f"me{run}", args.single)]
            r["commit_embed"].append(
                timed(
                    lambda fs=plain, run=run: (
                        [mem.commit(f, namespace=f"me{run}") for f in fs] and len(fs)
                    )
                )
            )
            its = items(f"cp{run}", args.batch)
            r["copy"].append(timed(lambda its=its, run=run: floor_copy(raw, f"cp{run}", its)))
            fs = facts_of(items(f"mb{run}", args.batch))
            r["commit_many"].append(
                timed(lambda fs=fs, run=run: len(mem.commit_many(fs, namespace=f"mb{run}")))
            )
        raw.close()
        mem.close()

    s = {k: summary(v) for k, v in r.items()}
    single_ratio = s["commit"]["median"] / s["floor_single"]["median"]
    batch_ratio = s["commit_many"]["median"] / s["copy"]["median"]
    console.print(
        f"PostgreSQL {versions['postgresql']}, pgvector {versions['pgvector']}, 384-d vectors, "
        f"HNSW m=16 ef_construction=64, {args.single} single commits and {args.batch}-fact batches per run"
    )
    console.print(
        rate_table(
            "single-fact commits/s",
            [
                ("psycopg floor (3 inserts, pipelined)", s["floor_single"], None),
                ("MemoryStore.commit", s["commit"], single_ratio),
                (
                    "MemoryStore.commit, embedding inside",
                    s["commit_embed"],
                    s["commit_embed"]["median"] / s["floor_single"]["median"],
                ),
            ],
            "commits/s",
        )
    )
    console.print(
        rate_table(
            f"batched: {args.batch} facts per transaction, facts/s",
            [
                ("psycopg COPY", s["copy"], None),
                ("MemoryStore.commit_many", s["commit_many"], batch_ratio),
            ],
            "facts/s",
        )
    )
    console.print(
        f"targets: single >= 0.8x floor ({single_ratio:.2f}x), batch >= 0.6x COPY ({batch_ratio:.2f}x)"
    )
    return {
        "versions": versions,
        "stats": s,
        "single_ratio": single_ratio,
        "batch_ratio": batch_ratio,
    }


if __name__ == "__main__":
    main()
