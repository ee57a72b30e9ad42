"""The embedding-model lifecycle (issue 12 item 4): `reembed` stages a new model's vectors
beside the current ones batch by batch (a killed run resumes), then switches the namespace
in one commit; after it, the namespace writes and searches the new model only, and a mirror
bound to the old model gets nothing while one of the new model fills completely."""

from __future__ import annotations

import json
from collections.abc import Sequence

import psycopg
import pytest

from memstate_pg import (
    AsyncMemoryStore,
    Fact,
    HashingEmbedder,
    MemoryStore,
    ReembedReport,
    ValidationFailed,
)
from memstate_pg.mirrors import InMemoryMirror
from memstate_pg.sync import SyncWorker
from tests.integration.test_rls import login, secured  # noqa: F401 - shared fixtures
from tests.support.loop import on

NEW = HashingEmbedder(dim=64, seed=7)  # another dim and seed: another vector space


class Killed(RuntimeError):
    pass


class DiesAfter:
    """NEW's vectors, until the call after `calls` batches: then the process 'dies'."""

    def __init__(self, calls: int) -> None:
        self.left = calls
        self.model, self.dim = NEW.model, NEW.dim
        self.batches = 0

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        if self.left == 0:
            raise Killed("killed mid re-embed")
        self.left -= 1
        self.batches += 1
        return NEW.embed(texts)


def note(text: str) -> Fact:
    return Fact(type="note", payload={"text": text})


def one(dsn: str, sql: str, *params: object) -> tuple:
    with psycopg.connect(dsn) as conn:
        row = conn.execute(sql, params).fetchone()
        assert row is not None
        return row


def models_of(dsn: str, namespace: str) -> dict[str, int]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute(
            "SELECT embedding_model, count(*) FROM memstate.facts WHERE namespace = %s GROUP BY 1",
            (namespace,),
        ).fetchall()
    return {r[0]: r[1] for r in rows}


def test_killed_reembed_resumes_and_switches_the_namespace(mem: MemoryStore, dsn: str) -> None:
    old = mem.embedder.model
    ids = mem.commit_many(
        [note(f"fact number {i} about topic{i}") for i in range(50)], namespace="a"
    )
    mem.commit_many([note(f"other {i}") for i in range(5)], namespace="b")
    mem.delete(ids[-1])  # a deleted fact is not re-embedded
    live = ids[:-1]
    old_mirror = InMemoryMirror()
    mem.add_mirror(old_mirror, "old", namespaces=["a"])
    assert mem.mirrors()  # registered with the store's (old) model

    dying = DiesAfter(calls=2)
    with pytest.raises(Killed):
        mem.reembed(dying, namespace="a", batch_size=10)
    # the two batches before the kill are staged, nothing switched
    assert one(dsn, "SELECT count(*) FROM memstate.reembed_vectors")[0] == 20
    assert models_of(dsn, "a") == {old: 49}
    assert mem.embedder.model == old
    # a staged fact changes: its staged vector is stale
    changed = one(dsn, "SELECT min(fact_id::text) FROM memstate.reembed_vectors")[0]
    mem.update(changed, {"payload": {"text": "changed after staging"}})

    seen: list[tuple[int, int | None]] = []
    report = mem.reembed(
        NEW, namespace="a", batch_size=10, progress=lambda d, t: seen.append((d, t))
    )
    assert isinstance(report, ReembedReport)
    assert (report.namespace, report.model, report.switched) == ("a", NEW.model, 49)
    assert report.staged == 49 - 20 + 1  # resumed: only the unstaged ones, and the changed one
    assert seen[-1] == (report.staged, report.staged)
    assert models_of(dsn, "a") == {NEW.model: 49}
    assert models_of(dsn, "b") == {old: 5}  # other namespaces untouched
    assert one(dsn, "SELECT count(*) FROM memstate.reembed_vectors")[0] == 0
    assert one(dsn, "SELECT model FROM memstate.namespace_models WHERE namespace = 'a'") == (
        NEW.model,
    )
    assert mem.embedder is NEW  # the store now embeds with the new model

    # every live fact is found under the new model, by its own text
    for fid in live:
        fact = mem.get(fid)
        assert fact is not None and fact.embedding_model == NEW.model and fact.content
        assert mem.search(fact.content, k=1, namespace="a")[0].fact.id == fid
    # history: the model of every version; the switch is one commit
    hist = mem.history(changed)
    assert [v.embedding_model for v in hist] == [old, old, NEW.model]
    assert hist[-1].payload == hist[-2].payload and hist[-1].op == "update"
    assert len({mem.history(f)[-1].seq for f in live}) == 1

    # the old model is refused for namespace a, with the remedy; b keeps working
    stale = MemoryStore(dsn)
    try:
        with pytest.raises(ValidationFailed, match="uses embedding model") as err:
            stale.commit(note("written with the old model"), namespace="a")
        assert NEW.model in str(err.value)
        with pytest.raises(ValidationFailed, match="never mixes models"):
            stale.search("topic3", namespace="a")
        assert stale.search("other 1", k=1, namespace="b")[0].fact.embedding_model == old
        stale.commit(note("still fine"), namespace="b")
    finally:
        stale.close()
    with psycopg.connect(dsn) as conn, pytest.raises(psycopg.DatabaseError, match="uses embedding"):
        conn.execute(
            "SELECT memstate.search('a', (SELECT embedding FROM memstate.facts "
            "WHERE namespace = 'b' LIMIT 1), 3, model => %s)",
            (old,),
        )
    # a rollback would bring the old vectors back: refused, nothing changes
    with pytest.raises(ValidationFailed, match="uses embedding model"):
        mem.rollback(namespace="a")
    assert models_of(dsn, "a") == {NEW.model: 49}
    new_fid = mem.commit(note("written after the switch"), namespace="a")
    assert mem.search("written after the switch", k=1, namespace="a")[0].fact.id == new_fid

    # mirrors: the old-model one got no row from the switch; a new-model one fills completely
    with psycopg.connect(dsn) as conn:
        pending_old = conn.execute(
            "SELECT count(*) FROM memstate.outbox WHERE mirror = 'old' AND seq >= "
            "(SELECT min(seq) FROM memstate.commits WHERE reason LIKE 're-embed%%')"
        ).fetchone()
    assert pending_old == (0,)
    new_mirror = InMemoryMirror()
    mem.add_mirror(new_mirror, "new", namespaces=["a"])
    with SyncWorker(mem) as worker:
        assert worker.drain(timeout=60)
    assert new_mirror.count() == 50
    report_new = mem.reconcile("new")
    assert report_new.drift == 0 and report_new.checked == 50
    assert one(dsn, "SELECT model FROM memstate.mirrors WHERE name = 'new'") == (NEW.model,)


def test_reembed_needs_no_staging_when_nothing_changed(mem: MemoryStore, dsn: str) -> None:
    """A namespace already in the model (or empty) switches with an empty commit-free call."""
    report = mem.reembed(NEW, namespace="empty")
    assert (report.staged, report.switched) == (0, 0)
    assert one(dsn, "SELECT model FROM memstate.namespace_models WHERE namespace = 'empty'") == (
        NEW.model,
    )
    again = mem.reembed(NEW, namespace="empty")
    assert (again.staged, again.switched) == (0, 0)


def test_reembed_stages_what_was_written_between_rounds(mem: MemoryStore, dsn: str) -> None:
    """A fact written after staging but before the switch makes the switch wait: the next
    round stages it, and the switch still moves every live fact."""
    mem.commit_many([note(f"n{i}") for i in range(5)], namespace="w")

    class WritesOnce:
        model, dim = NEW.model, NEW.dim
        done = False

        def embed(self, texts: Sequence[str]) -> list[list[float]]:
            if not self.done:
                self.done = True
                other = MemoryStore(dsn)
                try:
                    other.commit(note("arrived mid re-embed"), namespace="w")
                finally:
                    other.close()
            return NEW.embed(texts)

    report = mem.reembed(WritesOnce(), namespace="w")
    assert (report.staged, report.switched) == (6, 6)
    assert models_of(dsn, "w") == {NEW.model: 6}


def test_immutable_facts_are_re_embedded(mem: MemoryStore, dsn: str) -> None:
    from memstate_pg import Constraint

    mem.register_schema("frozen", constraint=Constraint(immutable=True))
    fid = mem.commit(Fact(type="frozen", payload={"text": "carved in stone"}), namespace="i")
    mem.reembed(NEW, namespace="i")
    fact = mem.get(fid)
    assert fact is not None and fact.embedding_model == NEW.model


def test_async_reembed(loop, dsn: str) -> None:
    async def go() -> None:
        async with AsyncMemoryStore(dsn) as amem:
            await amem.commit_many([note(f"async {i}") for i in range(7)], namespace="as")
            report = await amem.reembed(NEW, namespace="as", batch_size=3)
            assert (report.staged, report.switched) == (7, 7)
            hits = await amem.search("async 4", k=1, namespace="as")
            assert hits[0].fact.embedding_model == NEW.model
            assert hits[0].fact.content == "async 4"

    on(loop, go())


def test_cli_reembed(mem: MemoryStore, dsn: str) -> None:
    from tests.integration.test_cli import assert_fails, cli

    mem.commit_many([note(f"cli {i}") for i in range(4)], namespace="c")
    out = cli("reembed", "-n", "c", "--embedder", "hashing:32", "--json", "--dsn", dsn)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert (report["namespace"], report["switched"], report["staged"]) == ("c", 4, 4)
    assert models_of(dsn, "c") == {HashingEmbedder(dim=32).model: 4}
    out = cli("reembed", "-n", "c", "--embedder", "word2vec:x", "--dsn", dsn)
    assert_fails(out, 2, "word2vec", "sentence-transformers:MODEL")
    out = cli("reembed", "-n", "c", "--embedder", "hashing:32", "--dsn", dsn)  # again: nothing
    assert out.returncode == 0 and "0 fact(s) switched" in out.stdout, out.stderr


def test_tenants_live_with_a_switch_but_cannot_make_one(mem: MemoryStore, dsn: str, login) -> None:  # noqa: F811
    """Under RLS, an app role of namespace t writes and searches the switched model (the
    namespace's model is read for it, no privilege on the registry needed), is refused the
    old one, and cannot re-embed: a switch is the administrator's."""
    from memstate_pg import PermissionDenied

    mem.commit_many([note(f"tenant {i}") for i in range(3)], namespace="t")
    mem.reembed(NEW, namespace="t")
    tenant = login("memstate_app", "t")
    app = MemoryStore(tenant, embedder=NEW, namespace="t")
    old_app = MemoryStore(tenant, embedder=HashingEmbedder(), namespace="t")
    try:
        fid = app.commit(note("tenant fact after the switch"))
        assert app.search("tenant fact after the switch", k=1)[0].fact.id == fid
        with pytest.raises(ValidationFailed, match="uses embedding model"):
            old_app.commit(note("old model"))
        other = HashingEmbedder(dim=16)
        mem.reembed(other, namespace="u")  # the model is registered: only the switch is left
        with pytest.raises(PermissionDenied):
            app.reembed(other, namespace="t")
        with (
            psycopg.connect(tenant) as conn,
            pytest.raises(psycopg.errors.InsufficientPrivilege),
        ):
            conn.execute("SELECT * FROM memstate.reembed_apply('t', %s)", (other.model,))
    finally:
        app.close()
        old_app.close()
    assert models_of(dsn, "t") == {NEW.model: 4}


def test_a_mirror_of_every_namespace_takes_only_its_model(mem: MemoryStore, dsn: str) -> None:
    """Backfill and reconcile keep to the mirror's model too: a new-model mirror over every
    namespace gets the switched namespace only, and reconcile finds it complete."""
    mem.commit_many([note(f"switched {i}") for i in range(6)], namespace="a")
    mem.commit_many([note(f"not switched {i}") for i in range(4)], namespace="b")
    mem.reembed(NEW, namespace="a")
    mirror = InMemoryMirror()
    mem.add_mirror(mirror, "new")  # every namespace, model NEW (the store's embedder now)
    assert one(dsn, "SELECT count(*) FROM memstate.outbox WHERE mirror = 'new'") == (6,)
    with SyncWorker(mem) as worker:
        assert worker.drain(timeout=60)
    assert mirror.count() == 6
    report = mem.reconcile("new")
    assert (report.checked, report.drift) == (6, 0)
    # a stray point of the other model is a ghost: reconcile removes it
    stray = mem.query(namespace="b")[0]
    mirror.upsert([_record(stray)])
    report = mem.reconcile("new")
    assert (report.ghosts, report.repaired) == (1, 1) and mirror.count() == 6
    mem.add_mirror(InMemoryMirror(), "any", model="*")  # every model, as before 0004
    assert one(dsn, "SELECT model IS NULL FROM memstate.mirrors WHERE name = 'any'") == (True,)
    assert one(dsn, "SELECT count(*) FROM memstate.outbox WHERE mirror = 'any'") == (10,)


def _record(fact):
    from memstate_pg.mirrors import MirrorRecord

    return MirrorRecord(
        fact_id=str(fact.id),
        version=fact.version,
        namespace=fact.namespace,
        type=fact.type,
        embedding=[0.5] * 384,
        embedding_model=fact.embedding_model,
        content=fact.content,
        metadata={},
        mirror="new",
    )
