"""The mirror half of the demo: Chroma (embedded) and Qdrant (local mode) fed from the
outbox while failures are injected, the drift table against a naive dual write, and the
mirrors converged on the demo's memory."""

from __future__ import annotations

import logging
import tempfile
import uuid
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from ..mirrors import ChromaMirror, FlakyMirror, QdrantMirror
from ..store import MemoryStore
from ..sync import SyncWorker
from .consistency import outcome_table, run_all
from .story import NS

if TYPE_CHECKING:
    from chromadb.api.types import PyEmbedding


def _chroma_client(path: str):
    import chromadb
    from chromadb.config import Settings

    return chromadb.PersistentClient(path=path, settings=Settings(anonymized_telemetry=False))


def mirror_story(
    mem: MemoryStore, console: Console, *, n: int = 60, updates: int = 90, deletes: int = 20
) -> None:
    logging.getLogger("memstate_pg.sync").setLevel(
        logging.ERROR
    )  # injected faults are expected here
    tmp = tempfile.mkdtemp(prefix="memstate-demo-mirrors-")
    client = _chroma_client(tmp)

    def chroma():
        return ChromaMirror(client, collection=f"drift-{uuid.uuid4().hex[:8]}"), None

    def qdrant():
        return QdrantMirror.from_location(
            ":memory:", collection=f"drift-{uuid.uuid4().hex[:8]}"
        ), None

    console.rule("[bold]mirrors: the same workload, naive dual write vs the outbox")
    console.print(
        f"{n} memories created, then {updates} updates and {deletes} deletes, while the vector store "
        "fails 20% of calls before or after writing, times out, is down for a third of the run, "
        "or the process writing it is killed mid-batch. Compared by id and version."
    )
    with console.status("running the drift experiment…"):
        rows = run_all(
            mem.dsn, {"Chroma": chroma, "Qdrant": qdrant}, n=n, updates=updates, deletes=deletes
        )
    console.print(
        outcome_table(rows, "drift after the run (naive) / after the worker drained (memstate-pg)")
    )

    console.print(
        "Chroma runs embedded (PersistentClient), Qdrant in local mode; naive: SQL commit, then the "
        "vector write, errors logged and dropped; memstate-pg: one transaction with the outbox, "
        "a SyncWorker alongside, then drain()."
    )
    console.rule("[bold]the demo's memory, mirrored")
    chroma_inner = ChromaMirror(client, collection="demo-memory")
    chroma_m = FlakyMirror(chroma_inner, fail_before=0.3, fail_after=0.2, seed=3)
    qdrant_m = FlakyMirror(
        QdrantMirror.from_location(":memory:", collection="demo-memory"), timeout=0.3, seed=4
    )
    mem.add_mirror(chroma_m, name="chroma", metadata_fields=["field", "topic"], namespaces=[NS])
    mem.add_mirror(qdrant_m, name="qdrant", metadata_fields=["field", "topic"], namespaces=[NS])
    worker = SyncWorker(
        mem,
        {"chroma": chroma_m, "qdrant": qdrant_m},
        backoff_base=0.02,
        backoff_max=0.2,
        max_attempts=50,
    )
    drained = worker.drain(timeout=60)
    worker.close()
    table = Table(
        title=f"{NS!r} mirrored to Chroma and Qdrant through 30-50% injected faults: "
        f"status() and reconcile after drain (drained={drained})",
        title_justify="left",
    )
    for col in (
        "mirror",
        "pending",
        "dead",
        "last synced commit",
        "faults injected",
        "reconcile: checked",
        "missing",
        "stale",
        "ghosts",
    ):
        table.add_column(col)
    for name, m in (("chroma", chroma_m), ("qdrant", qdrant_m)):
        report = mem.reconcile(name, repair=False)
        st = mem.status()[name]
        faults = sum(v for k, v in m.faults.items() if k != "calls")
        table.add_row(
            name,
            str(st.pending),
            str(st.dead),
            str(st.last_synced_seq),
            str(faults),
            str(report.checked),
            str(report.missing),
            str(report.stale),
            str(report.ghosts),
        )
    console.print(table)
    question: list[PyEmbedding] = list(mem.embedder.embed(["which city does the user live in?"]))
    hits = chroma_inner.collection.query(query_embeddings=question, n_results=1)
    documents, metadatas = hits["documents"], hits["metadatas"]
    assert documents is not None and metadatas is not None, "query includes both by default"
    console.print(
        f"Chroma, queried directly by a RAG pipeline: {documents[0][0]!r} "
        f"(version {metadatas[0][0]['version']}, the current one)"
    )
    for name in ("chroma", "qdrant"):
        mem.remove_mirror(name)
