"""Before/after measurements of changes proposed to other owners' code (prototyped here
by monkeypatching, never by editing their files).

Binary vector parameters. The store sends every vector as pgvector's *text* form
(`core.vector_text`: 384 floats through `repr`, then parsed back by the server). The
prototype wraps the vector in `VectorParam`, dumped in pgvector's *binary* form with
oid 0, so the server infers the type from the ``::vector`` cast already in every query
(no type lookup, no per-connection registration; prepared statements keep working).
Measured on dense vectors (random unit vectors, like a neural embedder's) and on the
sparse hashing vectors, for single commits (vector given) and for search (vector given).
Text and binary take turns operation by operation on the same database and connection,
so load from elsewhere on the machine hits both alike.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format

from benchmarks import data
from benchmarks.context import BenchContext
from benchmarks.harness import BenchResult
from memstate_pg import Fact, HashingEmbedder, MemoryStore


class VectorParam:
    """A vector to send in pgvector's binary format (proposed for memstate_pg.core)."""

    __slots__ = ("array",)

    def __init__(self, values) -> None:
        self.array = np.asarray(values, dtype=">f4")


class VectorParamDumper(Dumper):
    """pgvector's binary input (uint16 dim, uint16 unused, dim big-endian float4); oid 0
    lets the server take the type from the query's ``::vector`` cast."""

    format = Format.BINARY
    oid = 0

    def dump(self, obj: VectorParam) -> bytes:
        return struct.pack(">HH", obj.array.shape[0], 0) + obj.array.tobytes()


psycopg.adapters.register_dumper(VectorParam, VectorParamDumper)


@contextmanager
def binary_vectors() -> Iterator[None]:
    """Route core.vector_text to VectorParam for the duration."""
    import memstate_pg.core as core

    original = core.vector_text
    core.vector_text = VectorParam
    try:
        yield
    finally:
        core.vector_text = original


def run(ctx: BenchContext) -> list[BenchResult]:
    sz = ctx.sizes
    n = max(20, sz.single // 2)
    commit = BenchResult(
        "proposal_binary_vectors_commit",
        "Proposal: binary vector parameters, single commits",
        "commits/s",
        True,
        "per run",
        params={"commits_per_run": n, "runs": sz.runs, "dim": ctx.dim},
    )
    search = BenchResult(
        "proposal_binary_vectors_search",
        "Proposal: binary vector parameters, search top-10",
        "ms",
        False,
        "per query",
        params={"facts": sz.small, "queries": sz.queries, "runs": sz.runs, "dim": ctx.dim},
    )
    with ctx.database("proposals") as dsn:
        ds = data.bulk_load(dsn, kind="hashing", n=sz.small, dim=ctx.dim, namespace="bench")
        mem = MemoryStore(dsn, embedder=HashingEmbedder(dim=ctx.dim), max_size=1)
        try:
            kinds = {
                "dense": data.random_unit_vectors(n * (sz.runs + 1) * 2, ctx.dim, 3),
                "hashing": data.hashing_vectors(
                    [data.fact_text("p", i) for i in range(n * (sz.runs + 1) * 2)], ctx.dim
                ),
            }
            rates: dict[str, list[float]] = {}
            lat: dict[str, list[float]] = {}
            for r in range(-1, sz.runs):
                for kind, vecs in kinds.items():
                    labels = {
                        "text": f"{kind} vectors, text (current)",
                        "binary": f"{kind} vectors, binary",
                    }
                    spent = dict.fromkeys(labels, 0.0)
                    queries = [v.tolist() for v in vecs[: min(n, sz.queries)]]
                    at = (r + 1) * 2 * n
                    for i in range(n):
                        # text and binary take turns op by op (who goes first alternates)
                        for mode in ("text", "binary") if i % 2 == 0 else ("binary", "text"):
                            fact = Fact(
                                type="note",
                                payload={"text": f"{kind} {mode} {at + i}"},
                                embedding=vecs[at + 2 * i + (mode == "binary")].tolist(),
                            )
                            with binary_vectors() if mode == "binary" else _nothing():
                                t0 = time.perf_counter()
                                mem.commit(fact, namespace=f"p{kind}")
                                spent[mode] += time.perf_counter() - t0
                                if i < len(queries):
                                    t1 = time.perf_counter()
                                    mem.search(queries[i], k=10, namespace=ds.namespace)
                                    if r >= 0:
                                        lat.setdefault(labels[mode], []).append(
                                            (time.perf_counter() - t1) * 1000
                                        )
                    if r >= 0:
                        for mode, label in labels.items():
                            rates.setdefault(label, []).append(n / spent[mode])
        finally:
            mem.close()
    for label, values in rates.items():
        commit.add(
            label,
            values,
            baseline=label.endswith("(current)") and label.startswith("dense"),
            runs=len(values),
        )
    for label, values in lat.items():
        search.add(
            label,
            values,
            baseline=label.endswith("(current)") and label.startswith("dense"),
            runs=sz.runs,
        )
    for res in (commit, search):
        res.notes.append(
            "prototype: VectorParam + VectorParamDumper in benchmarks/workloads/proposals.py, "
            "patched over memstate_pg.core.vector_text"
        )
    return [commit, search]


@contextmanager
def _nothing() -> Iterator[None]:
    yield
