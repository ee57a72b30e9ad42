"""memstate.write_facts (MemoryStore.commit_many): set-based, with the results and rules of
one write_fact call per element, in order."""

from __future__ import annotations

import threading

import psycopg
import pytest
from pydantic import BaseModel

from memstate_pg import Constraint, Fact, HashingEmbedder, MemoryStore
from memstate_pg.errors import ValidationFailed


class Pref(BaseModel):
    key: str
    value: str


@pytest.fixture
def mem(dsn: str):
    with MemoryStore(dsn, embedder=HashingEmbedder(dim=16), max_size=2) as m:
        m.migrate()
        m.register_schema(
            "pref", Pref, constraint=Constraint(singleton_key="key"), text_field="value"
        )
        yield m


def rows(dsn: str, q: str, *args):
    with psycopg.connect(dsn) as c:
        return c.execute(q, args).fetchall()


def test_new_facts_and_singleton_holders_in_one_commit(mem: MemoryStore, dsn: str) -> None:
    tea = mem.commit(Fact(type="pref", payload={"key": "drink", "value": "tea"}), namespace="b")
    ids = mem.commit_many(
        [
            Fact(type="note", payload={"text": "one"}),
            Fact(type="pref", payload={"key": "drink", "value": "coffee"}),  # updates `tea`
            Fact(type="pref", payload={"key": "city", "value": "Oslo"}),
            Fact(type="note", payload={"text": "two"}, session_id="s"),
        ],
        namespace="b",
        actor="me",
    )
    assert ids[1] == tea and len(set(ids)) == 4
    facts = {f.id: f for f in mem.query(namespace="b")}
    assert facts[tea].payload["value"] == "coffee" and facts[tea].version == 2
    assert facts[tea].content == "coffee"  # the type's text_field
    assert facts[ids[3]].session_id == "s" and facts[ids[0]].content == "one"
    seqs = rows(
        dsn,
        "SELECT DISTINCT seq, op FROM memstate.fact_versions WHERE fact_id = ANY(%s)"
        " AND seq > (SELECT min(seq) FROM memstate.fact_versions WHERE namespace = 'b')"
        " ORDER BY op",
        ids,
    )
    assert len({s for s, _ in seqs}) == 1 and [op for _, op in seqs] == ["put", "update"]
    assert rows(dsn, "SELECT actor FROM memstate.commits WHERE seq = %s", seqs[0][0]) == [("me",)]
    mem.rollback(namespace="b")  # one step undoes the whole batch
    facts = {f.id: f for f in mem.query(namespace="b")}
    assert list(facts) == [tea] and facts[tea].payload["value"] == "tea"


def test_a_repeated_singleton_key_is_written_in_order(mem: MemoryStore) -> None:
    ids = mem.commit_many(
        [
            Fact(type="pref", payload={"key": "drink", "value": "tea"}),
            Fact(type="pref", payload={"key": "drink", "value": "coffee"}),
        ],
        namespace="r",
    )
    assert ids[0] == ids[1]
    (fact,) = mem.query(namespace="r")
    assert fact.payload["value"] == "coffee" and fact.version == 2


def test_given_fact_ids_create_and_update(mem: MemoryStore) -> None:
    first = mem.commit(Fact(type="note", payload={"text": "old"}), namespace="g")
    new_id = "7b0e8f2a-6c55-4bb3-9c55-2f4b0f8a1e01"
    ids = mem.commit_many(
        [
            Fact(id=first, type="note", payload={"text": "new"}),
            Fact(id=new_id, type="note", payload={"text": "mine"}),
        ],
        namespace="g",
    )
    assert [str(i) for i in ids] == [str(first), new_id]
    assert {f.content: f.version for f in mem.query(namespace="g")} == {"new": 2, "mine": 1}


def test_an_idempotent_batch_replays_its_ids_in_order(mem: MemoryStore, dsn: str) -> None:
    mem.commit(Fact(type="pref", payload={"key": "drink", "value": "tea"}), namespace="k")
    batch = [
        Fact(type="note", payload={"text": "a"}),
        Fact(type="pref", payload={"key": "drink", "value": "coffee"}),
        Fact(type="note", payload={"text": "b"}),
    ]
    ids = mem.commit_many(batch, namespace="k", idempotency_key="once")
    before = rows(dsn, "SELECT count(*) FROM memstate.fact_versions")
    assert mem.commit_many(batch, namespace="k", idempotency_key="once") == ids
    assert rows(dsn, "SELECT count(*) FROM memstate.fact_versions") == before


def test_one_bad_element_writes_nothing(mem: MemoryStore, dsn: str) -> None:
    before = rows(dsn, "SELECT count(*) FROM memstate.fact_versions")
    with psycopg.connect(dsn, autocommit=True) as c, pytest.raises(psycopg.Error) as err:
        c.execute(
            "SELECT * FROM memstate.write_facts('x', ARRAY['note', 'pref'],"
            ' ARRAY[\'{"text": "ok"}\', \'{"key": "k"}\']::jsonb[], NULL,'
            " ARRAY[%s::vector, %s::vector], 'hashing-v1-16')",
            ["[" + ",".join(["1"] * 16) + "]"] * 2,
        )
    assert err.value.sqlstate == "MSV01"  # pref needs its "value"
    assert rows(dsn, "SELECT count(*) FROM memstate.fact_versions") == before
    with pytest.raises(ValidationFailed):
        mem.commit_many([Fact(type="note", payload={"text": "x"}, embedding=[0.0] * 16)])


def test_sql_callers_get_one_commit_per_call(mem: MemoryStore, dsn: str) -> None:
    vec = "[" + ",".join(["1"] * 16) + "]"
    mem.commit(Fact(type="note", payload={"text": "model registered"}), namespace="s")
    with psycopg.connect(dsn, autocommit=True) as c:
        got = c.execute(
            "SELECT ord, version, seq, replayed FROM memstate.write_facts('s', ARRAY['note', 'note'],"
            ' ARRAY[\'{"text": "a"}\', \'{"text": "b"}\']::jsonb[], NULL,'
            " ARRAY[%s::vector, %s::vector], 'hashing-v1-16')",
            [vec, vec],
        ).fetchall()
    assert [(o, v, r) for o, v, _, r in got] == [(1, 1, False), (2, 1, False)]
    assert got[0][2] == got[1][2]


def test_concurrent_batches_on_the_same_singleton_keys(mem: MemoryStore, dsn: str) -> None:
    """Batches racing for the same keys: a batch that finds a key taken (or its holder
    changed) after its lookup falls back to write_fact element by element, so every write
    lands as one version of the one live fact of its key."""
    keys, writers, rounds = [f"k{i}" for i in range(5)], 4, 8
    errors: list[BaseException] = []
    start = threading.Barrier(writers)

    def writer(w: int) -> None:
        try:
            start.wait()
            for r in range(rounds):
                mem.commit_many(
                    [
                        Fact(type="pref", payload={"key": k, "value": f"w{w} r{r}"})
                        for k in (keys if (w + r) % 2 else keys[::-1])
                    ]
                    + [Fact(type="note", payload={"text": f"w{w} r{r}"})],
                    namespace="race",
                )
        except BaseException as exc:  # noqa: BLE001 - asserted below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    live = [f for f in mem.query(namespace="race") if f.type == "pref"]
    assert sorted(f.payload["key"] for f in live) == keys
    assert {f.version for f in live} == {writers * rounds}
    versions = rows(
        dsn,
        "SELECT fact_id, array_agg(version ORDER BY version) FROM memstate.fact_versions"
        " WHERE namespace = 'race' AND type = 'pref' GROUP BY fact_id",
    )
    assert [v for _, v in versions] == [list(range(1, writers * rounds + 1))] * len(keys)
