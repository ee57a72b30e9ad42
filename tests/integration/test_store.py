"""MemoryStore behaviour against a real PostgreSQL: versioning, constraints, transactions,
search, history, as_of, rollback/revert, sessions, idempotency."""

from __future__ import annotations

import threading
from datetime import datetime, timezone

import psycopg
import pytest

from memstate_pg import (
    ConflictError,
    Fact,
    MemoryStore,
    NotFound,
    PermissionDenied,
    ValidationFailed,
)
from tests.support.helpers import live_state


def count(dsn: str, table: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute(f"SELECT count(*) FROM memstate.{table}").fetchone()[0]


def test_commit_get_and_versions(mem: MemoryStore):
    fid = mem.commit(Fact(type="note", payload={"text": "hello"}), namespace="u1")
    fact = mem.get(fid)
    assert fact.payload == {"text": "hello", "tags": []}  # normalised by the pydantic model
    assert fact.namespace == "u1" and fact.version == 1 and fact.content == "hello"
    assert fact.embedding_model == mem.embedder.model
    assert mem.update(fid, {"payload": {"text": "hello again"}}) == 2
    assert mem.get(fid).content == "hello again"
    seq = mem.delete(fid)
    assert mem.get(fid) is None
    versions = mem.history(fid)
    assert [(v.version, v.op) for v in versions] == [(1, "put"), (2, "update"), (3, "delete")]
    assert versions[-1].seq == seq


def test_default_namespace_and_fact_namespace(mem: MemoryStore):
    a = mem.commit(Fact(type="note", payload={"text": "x"}))
    b = mem.commit(Fact(type="note", payload={"text": "y"}, namespace="other"))
    assert mem.get(a).namespace == "default"
    assert mem.get(b).namespace == "other"


def test_singleton_key_updates_the_live_fact(mem: MemoryStore):
    first = mem.commit(
        Fact(type="profile", payload={"field": "city", "value": "Berlin"}), namespace="u1"
    )
    second = mem.commit(
        Fact(type="profile", payload={"field": "city", "value": "Paris"}), namespace="u1"
    )
    other_ns = mem.commit(
        Fact(type="profile", payload={"field": "city", "value": "Rome"}), namespace="u2"
    )
    assert first == second != other_ns
    assert mem.get(first).payload["value"] == "Paris" and mem.get(first).version == 2
    assert len(mem.query("profile", namespace="u1")) == 1


def test_singleton_clash_inside_one_transaction_writes_nothing(mem: MemoryStore, dsn: str):
    a = mem.commit(
        Fact(type="profile", payload={"field": "city", "value": "Berlin"}), namespace="u1"
    )
    b = mem.commit(Fact(type="profile", payload={"field": "job", "value": "chef"}), namespace="u1")
    before = (count(dsn, "fact_versions"), count(dsn, "commits"))
    with pytest.raises(ConflictError, match="singleton"), mem.transaction("u1") as tx:
        tx.commit(Fact(type="note", payload={"text": "inside"}))
        tx.update(b, {"payload": {"field": "city", "value": "Lyon"}})  # city is held by a
    assert (count(dsn, "fact_versions"), count(dsn, "commits")) == before
    assert mem.get(a).payload["value"] == "Berlin" and mem.get(b).payload["field"] == "job"


def test_immutable_refuses_updates_but_allows_delete(mem: MemoryStore):
    fid = mem.commit(Fact(type="event", payload={"text": "signed up"}), namespace="u1")
    with pytest.raises(ConflictError, match="immutable"):
        mem.update(fid, {"payload": {"text": "rewritten"}})
    assert mem.get(fid).version == 1
    mem.delete(fid)
    assert mem.get(fid) is None


def test_expected_version_is_compare_and_set(mem: MemoryStore):
    fid = mem.commit(Fact(type="note", payload={"text": "v1"}), namespace="u1")
    assert mem.update(fid, {"payload": {"text": "v2"}}, expected_version=1) == 2
    with pytest.raises(ConflictError, match="version 2, expected 1"):
        mem.update(fid, {"payload": {"text": "lost update"}}, expected_version=1)
    with pytest.raises(ConflictError):
        mem.delete(fid, expected_version=1)
    assert mem.get(fid).payload["text"] == "v2"


def test_unknown_fact_id(mem: MemoryStore):
    missing = "00000000-0000-0000-0000-000000000001"
    with pytest.raises(NotFound):
        mem.update(missing, {"payload": {"text": "x"}})
    with pytest.raises(NotFound):
        mem.delete(missing)
    assert mem.get(missing) is None
    with pytest.raises(ValidationFailed):
        mem.get("not-a-uuid")


def test_transaction_shares_one_seq_and_callers_sql(mem: MemoryStore, dsn: str):
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE TABLE public.orders (id int primary key, status text)")
        conn.execute("INSERT INTO public.orders VALUES (1, 'new')")
    with mem.transaction("u1", actor="agent", reason="checkout") as tx:
        a = tx.commit(Fact(type="note", payload={"text": "a"}))
        b = tx.commit(Fact(type="note", payload={"text": "b"}))
        tx.update(a, {"payload": {"text": "a2"}})
        tx.connection.execute("UPDATE public.orders SET status = 'paid' WHERE id = 1")
    assert mem.get(a).commit_seq == mem.get(b).commit_seq == tx.seq
    [commit] = [c for c in mem.commits(namespace="u1") if c["seq"] == tx.seq]
    assert commit["actor"] == "agent" and commit["reason"] == "checkout"
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT status FROM public.orders").fetchone()[0] == "paid"

    # an exception rolls back the facts and the caller's SQL together
    with pytest.raises(RuntimeError), mem.transaction("u1") as tx:
        tx.commit(Fact(type="note", payload={"text": "never"}))
        tx.connection.execute("UPDATE public.orders SET status = 'refunded' WHERE id = 1")
        raise RuntimeError("boom")
    assert sorted(f.payload["text"] for f in mem.query("note", namespace="u1")) == ["a2", "b"]
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT status FROM public.orders").fetchone()[0] == "paid"


def test_conn_joins_the_callers_transaction(mem: MemoryStore, dsn: str):
    with psycopg.connect(dsn) as conn:
        fid = mem.commit(Fact(type="note", payload={"text": "joined"}), namespace="u1", conn=conn)
        assert mem.get(fid) is None  # not visible to others before the caller commits
        conn.rollback()
    assert mem.get(fid) is None and count(dsn, "commits") == 0
    with psycopg.connect(dsn) as conn:
        fid = mem.commit(Fact(type="note", payload={"text": "joined"}), namespace="u1", conn=conn)
        conn.commit()
    assert mem.get(fid).payload["text"] == "joined"


def test_commit_many_is_one_commit(mem: MemoryStore):
    ids = mem.commit_many(
        [Fact(type="note", payload={"text": f"n{i}"}) for i in range(50)], namespace="b"
    )
    facts = [mem.get(i) for i in ids]
    assert len({f.commit_seq for f in facts}) == 1
    assert [f.payload["text"] for f in facts] == [f"n{i}" for i in range(50)]


def test_query_filters_use_payload_paths(mem: MemoryStore):
    mem.register_schema("item", None, text_field="name")
    mem.commit(
        Fact(type="item", payload={"name": "a", "meta": {"color": "red"}, "n": 1}), namespace="q"
    )
    mem.commit(
        Fact(type="item", payload={"name": "b", "meta": {"color": "blue"}, "n": 2}), namespace="q"
    )
    mem.commit(
        Fact(type="preference", payload={"topic": "t", "value": "v", "role": "dislike"}),
        namespace="q",
    )
    assert [
        f.payload["name"] for f in mem.query("item", {"meta.color": "blue"}, namespace="q")
    ] == ["b"]
    assert [f.payload["name"] for f in mem.query(filters={"n": 1}, namespace="q")] == ["a"]
    assert [f.type for f in mem.query(filters={"role": "dislike"}, namespace="q")] == ["preference"]
    assert mem.query("item", {"meta.color": "green"}, namespace="q") == []
    for bad in ({"": 1}, {"a..b": 1}, ["role"], {"x": float("nan")}, {"a": 1, "a.b": 2}):
        with pytest.raises(ValidationFailed):
            mem.query(filters=bad, namespace="q")


def test_query_uses_the_gin_index(mem: MemoryStore, dsn: str):
    mem.register_schema("item", None, text_field="name")
    mem.commit_many(
        [Fact(type="item", payload={"name": f"i{i}", "color": f"c{i % 100}"}) for i in range(600)],
        namespace="q",
    )
    with psycopg.connect(dsn) as conn:
        conn.execute("ANALYZE memstate.facts")
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                "EXPLAIN SELECT * FROM memstate.facts WHERE namespace = 'q' AND payload @> '{\"color\": \"c7\"}'"
            )
        )
    assert "facts_payload" in plan


def test_search_scores_filters_and_namespaces(mem: MemoryStore):
    ns = "s"
    mem.commit(Fact(type="note", payload={"text": "the user lives in Berlin"}), namespace=ns)
    mem.commit(Fact(type="note", payload={"text": "favourite colour is blue"}), namespace=ns)
    mem.commit(
        Fact(type="preference", payload={"topic": "food", "value": "likes sushi in Berlin"}),
        namespace=ns,
    )
    mem.commit(
        Fact(type="note", payload={"text": "the user lives in Berlin"}), namespace="elsewhere"
    )
    hits = mem.search("where does the user live? Berlin", k=3, namespace=ns)
    assert hits[0].fact.payload["text"] == "the user lives in Berlin"
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert all(-1.0 <= h.score <= 1.0 for h in hits) and hits[0].score > hits[-1].score
    assert all(h.fact.namespace == ns for h in hits)
    only_pref = mem.search("Berlin", k=5, namespace=ns, type="preference")
    assert [h.fact.type for h in only_pref] == ["preference"]
    filtered = mem.search("Berlin", k=5, namespace=ns, filters={"topic": "food"})
    assert len(filtered) == 1 and filtered[0].fact.payload["topic"] == "food"
    assert mem.search("Berlin", k=5, namespace="empty") == []


def test_search_uses_the_models_hnsw_index(mem: MemoryStore, dsn: str):
    mem.commit(Fact(type="note", payload={"text": "x"}), namespace="s")
    with psycopg.connect(dsn) as conn:
        name, dim = conn.execute("SELECT index_name, dim FROM memstate.embedding_models").fetchone()
        conn.execute("SET enable_seqscan = off")
        q = "[" + ",".join(["0.1"] * dim) + "]"
        plan = "\n".join(
            r[0]
            for r in conn.execute(
                f"EXPLAIN SELECT fact_id FROM memstate.facts f WHERE f.embedding_model = %s AND f.namespace = 's' "
                f"ORDER BY f.embedding::vector({dim}) <=> '{q}'::vector({dim}) LIMIT 5",
                (mem.embedder.model,),
            )
        )
    assert name in plan


def test_two_models_side_by_side(mem: MemoryStore, dsn: str):
    from memstate_pg import HashingEmbedder

    small = MemoryStore(dsn, embedder=HashingEmbedder(dim=16), max_size=2)
    try:
        a = mem.commit(Fact(type="note", payload={"text": "apples and pears"}), namespace="m")
        b = small.commit(Fact(type="note", payload={"text": "apples and pears"}), namespace="m")
        assert mem.get(b).embedding_model == small.embedder.model
        assert [h.fact.id for h in mem.search("apples", namespace="m")] == [a]
        assert [h.fact.id for h in small.search("apples", namespace="m")] == [b]
    finally:
        small.close()


def test_as_of_seq_and_datetime(mem: MemoryStore):
    a = mem.commit(Fact(type="note", payload={"text": "one"}), namespace="t")
    seq1 = mem.get(a).commit_seq
    t1 = datetime.now(timezone.utc)
    mem.update(a, {"payload": {"text": "two"}})
    b = mem.commit(Fact(type="note", payload={"text": "other"}), namespace="t")
    mem.delete(a)
    assert [f.payload["text"] for f in mem.as_of(seq1, namespace="t")] == ["one"]
    assert [f.payload["text"] for f in mem.as_of(t1, namespace="t")] == ["one"]
    assert [f.id for f in mem.as_of(datetime.now(timezone.utc), namespace="t")] == [b]
    assert mem.as_of(datetime(2000, 1, 1, tzinfo=timezone.utc), namespace="t") == []


def test_rollback_is_undo_and_keeps_history(mem: MemoryStore, dsn: str):
    ns = "r"
    a = mem.commit(Fact(type="profile", payload={"field": "city", "value": "Berlin"}), namespace=ns)
    s1 = mem.get(a).commit_seq
    mem.commit(Fact(type="profile", payload={"field": "city", "value": "Paris"}), namespace=ns)
    s2 = mem.get(a).commit_seq
    b = mem.commit(Fact(type="note", payload={"text": "bad memory"}), namespace=ns)
    versions_before = count(dsn, "fact_versions")

    mem.rollback(1, namespace=ns)  # undoes the note
    assert mem.get(b) is None
    assert live_state(mem, ns) == {
        f.id: (f.payload, f.session_id) for f in mem.as_of(s2, namespace=ns)
    }
    mem.rollback(1, namespace=ns)  # undo again: goes one step further back, to Berlin
    assert mem.get(a).payload["value"] == "Berlin"
    assert live_state(mem, ns) == {
        f.id: (f.payload, f.session_id) for f in mem.as_of(s1, namespace=ns)
    }
    assert count(dsn, "fact_versions") > versions_before  # nothing deleted, all appended
    assert [v.kind for v in mem.history(a)] == ["commit", "commit", "rollback"]
    with pytest.raises(NotFound):
        mem.rollback(5, namespace="nothing-here")


def test_rollback_n_equals_as_of_before_those_n(mem: MemoryStore):
    ns = "rn"
    seqs = []
    ids = []
    for i in range(6):
        ids.append(mem.commit(Fact(type="note", payload={"text": f"n{i}"}), namespace=ns))
        seqs.append(mem.get(ids[-1]).commit_seq)
        if i % 2:
            mem.update(ids[i - 1], {"payload": {"text": f"changed{i}"}})
            seqs.append(mem.get(ids[i - 1]).commit_seq)
    mem.delete(ids[0])
    seqs.append(max(seqs) + 1)
    mem.rollback(4, namespace=ns)
    expected = mem.as_of(seqs[-5], namespace=ns)
    assert live_state(mem, ns) == {f.id: (f.payload, f.session_id) for f in expected}


def test_revert_one_commit_and_revert_a_rollback_is_redo(mem: MemoryStore):
    ns = "rv"
    a = mem.commit(Fact(type="note", payload={"text": "keep"}), namespace=ns)
    b = mem.commit(Fact(type="note", payload={"text": "mistake"}), namespace=ns)
    seq_b = mem.get(b).commit_seq
    mem.revert(seq_b)
    assert mem.get(b) is None and mem.get(a) is not None
    with pytest.raises(ConflictError, match="already undone"):
        mem.revert(seq_b)
    rb = mem.rollback(1, namespace=ns)  # undoes a (the revert is not counted)
    assert mem.get(a) is None
    mem.revert(rb)  # redo
    assert mem.get(a).payload["text"] == "keep"
    mem.rollback(1, namespace=ns)  # a is back in effect, so undo reaches it again
    assert mem.get(a) is None
    with pytest.raises(NotFound):
        mem.revert(999999)


def test_revert_refuses_to_clobber_a_later_change(mem: MemoryStore):
    a = mem.commit(Fact(type="note", payload={"text": "v1"}), namespace="c")
    s1 = mem.get(a).commit_seq
    mem.update(a, {"payload": {"text": "v2"}})
    with pytest.raises(ConflictError, match="changed again"):
        mem.revert(s1)
    assert mem.get(a).payload["text"] == "v2"


def test_rollback_scoped_to_a_session(mem: MemoryStore):
    ns = "sess"
    keep = mem.commit(Fact(type="note", payload={"text": "long-term"}), namespace=ns)
    w = mem.commit(Fact(type="note", payload={"text": "scratch"}), namespace=ns, session_id="s1")
    mem.commit(Fact(type="note", payload={"text": "other session"}), namespace=ns, session_id="s2")
    mem.rollback(1, namespace=ns, session_id="s1")
    assert mem.get(w) is None
    assert len(mem.query(namespace=ns)) == 2 and mem.get(keep) is not None


def test_promote_and_discard_session(mem: MemoryStore):
    ns = "wm"
    a = mem.commit(Fact(type="note", payload={"text": "remember"}), namespace=ns, session_id="s1")
    b = mem.commit(Fact(type="note", payload={"text": "scratch"}), namespace=ns, session_id="s2")
    assert [f.id for f in mem.query(namespace=ns, session_id="s1")] == [a]
    assert mem.promote_session("s1", namespace=ns) is not None
    assert mem.get(a).session_id is None and mem.get(a).version == 2
    assert mem.discard_session("s2", namespace=ns) is not None
    assert mem.get(b) is None
    assert mem.discard_session("s2", namespace=ns) is None  # nothing left: no commit
    mem.rollback(1, namespace=ns)  # undo the discard
    assert mem.get(b).payload["text"] == "scratch"


def test_idempotency_key_replays_without_writing(mem: MemoryStore, dsn: str):
    f = Fact(type="note", payload={"text": "once"})
    a = mem.commit(f, namespace="i", idempotency_key="req-1")
    before = (count(dsn, "commits"), count(dsn, "fact_versions"))
    b = mem.commit(f, namespace="i", idempotency_key="req-1")
    assert a == b and (count(dsn, "commits"), count(dsn, "fact_versions")) == before
    c = mem.commit(f, namespace="other", idempotency_key="req-1")  # keys are per namespace
    assert c != a
    with mem.transaction("i", idempotency_key="tx-1") as tx:
        ids = [
            tx.commit(Fact(type="note", payload={"text": "t1"})),
            tx.commit(Fact(type="note", payload={"text": "t2"})),
        ]
    with mem.transaction("i", idempotency_key="tx-1") as tx:
        assert tx.replayed
        again = [
            tx.commit(Fact(type="note", payload={"text": "t1"})),
            tx.commit(Fact(type="note", payload={"text": "t2"})),
        ]
    assert again == ids and len(mem.query(namespace="i")) == 3


def test_idempotency_under_concurrent_retries(mem: MemoryStore, dsn: str):
    results = []

    def retry():
        results.append(
            mem.commit(
                Fact(type="note", payload={"text": "x"}), namespace="ic", idempotency_key="k"
            )
        )

    threads = [threading.Thread(target=retry) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(mem.query(namespace="ic")) == 1


def test_recreate_with_explicit_id_continues_versions(mem: MemoryStore):
    fid = mem.commit(Fact(type="note", payload={"text": "a"}), namespace="x")
    mem.delete(fid)
    again = mem.commit(Fact(id=fid, type="note", payload={"text": "b"}), namespace="x")
    assert again == fid and mem.get(fid).version == 3
    with pytest.raises(ConflictError, match="another namespace"):
        mem.delete(fid)
        mem.commit(Fact(id=fid, type="note", payload={"text": "c"}), namespace="y")


def test_store_bound_to_a_namespace(dsn: str, mem: MemoryStore):
    other = mem.commit(Fact(type="note", payload={"text": "not yours"}), namespace="B")
    bound = MemoryStore(dsn, namespace="A", max_size=2)
    try:
        fid = bound.commit(Fact(type="note", payload={"text": "mine"}))
        assert bound.get(fid).namespace == "A"
        assert bound.get(other) is None
        with pytest.raises(PermissionDenied):
            bound.query(namespace="B")
        with pytest.raises(NotFound):
            bound.delete(other)
    finally:
        bound.close()


def test_thread_safety_of_a_shared_store(mem: MemoryStore):
    errors = []

    def writer(n):
        try:
            for i in range(15):
                mem.commit(Fact(type="note", payload={"text": f"{n}-{i}"}), namespace="threads")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(mem.query(namespace="threads")) == 60


def test_selective_filter_search_is_exact_and_large_filter_uses_hnsw(mem: MemoryStore, dsn: str):
    mem.register_schema("item", None, text_field="text")
    facts = [
        Fact(
            type="item",
            payload={
                "text": f"memory {i} about topic {i % 7} and colour {i % 11}",
                "bucket": i % 100,
            },
        )
        for i in range(400)
    ]
    mem.commit_many(facts, namespace="f")
    query = "memory about topic 3 and colour 5"
    qvec = mem.embedder.embed([query])[0]

    def exact(bucket):
        import math

        def cos(a, b):
            return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(
                sum(x * x for x in a) * sum(y * y for y in b)
            )

        rows = [f for f in mem.query("item", {"bucket": bucket}, namespace="f")]
        vecs = mem.embedder.embed([f.content for f in rows])
        return sorted(cos(qvec, v) for v in vecs)[::-1][:3]

    hits = mem.search(query, k=3, namespace="f", filters={"bucket": 7})
    assert len(hits) == 3 and all(h.fact.payload["bucket"] == 7 for h in hits)
    assert [round(h.score, 4) for h in hits] == [round(x, 4) for x in exact(7)]
    with psycopg.connect(dsn, autocommit=True) as conn:  # force the HNSW path for the same filter
        conn.execute("UPDATE memstate.config SET value = '1' WHERE key = 'search_exact_max'")
    hits = mem.search(query, k=3, namespace="f", filters={"bucket": 7})
    assert len(hits) == 3 and all(h.fact.payload["bucket"] == 7 for h in hits)
    assert mem.search(query, k=3, namespace="f", filters={"bucket": 1000}) == []


def test_ef_search_reaches_the_connection(dsn: str):
    store = MemoryStore(dsn, ef_search=123, max_size=1)
    try:
        with store.pool.connection() as conn:
            assert conn.execute("SHOW hnsw.ef_search").fetchone()[0] == "123"
    finally:
        store.close()
    with pytest.raises(ValueError):
        MemoryStore(dsn, ef_search=0)
