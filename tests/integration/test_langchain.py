"""MemStateVectorStore against LangChain's own standard vector-store suite (langchain-tests,
unmodified), on a MemoryStore (sync, async in worker threads) and on an AsyncMemoryStore
(async only, native); then what the suite does not cover: filters, MMR, scores, the
retriever, ids, namespaces, and versions/history/rollback of documents."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import psycopg
import pytest

pytest.importorskip("langchain_core", reason="the 'langchain' extra is not installed")
langchain_tests = pytest.importorskip("langchain_tests", reason="langchain-tests not installed")

import pytest_asyncio  # noqa: E402
from langchain_core.documents import Document  # noqa: E402
from langchain_core.embeddings import DeterministicFakeEmbedding  # noqa: E402
from langchain_core.vectorstores import VectorStore  # noqa: E402
from langchain_tests.integration_tests import VectorStoreIntegrationTests  # noqa: E402

from memstate_pg import AsyncMemoryStore, MemoryStore, PermissionDenied  # noqa: E402
from memstate_pg.embedders import HashingEmbedder  # noqa: E402
from memstate_pg.langchain import MemStateVectorStore  # noqa: E402

# The suite's async tests are plain `async def` (LangChain runs them with asyncio_mode=auto);
# the mark makes pytest-asyncio run them here in strict mode. Their bodies are untouched.
# (pytest-asyncio warns that the suite's sync tests carry the mark too: harmless, silenced.)
pytestmark = [
    pytest.mark.asyncio,
    pytest.mark.filterwarnings("ignore:The test <Function .*is not an async function"),
]


class TestMemStateVectorStoreSync(VectorStoreIntegrationTests):
    """On a MemoryStore: every sync test, and the async ones through LangChain's default
    run_in_executor path (plus our async methods' fallbacks)."""

    @pytest.fixture
    def vectorstore(self, dsn: str) -> Iterator[VectorStore]:
        mem = MemoryStore(dsn, max_size=4, embedder=HashingEmbedder(dim=16))
        try:
            yield MemStateVectorStore(mem, self.get_embeddings(), namespace="lc")
        finally:
            mem.close()


class TestMemStateVectorStoreAsync(VectorStoreIntegrationTests):
    """On an AsyncMemoryStore: the async tests, natively. The sync tests are skipped by the
    suite itself (has_sync=False): sync calls cannot run on an async pool."""

    @property
    def has_sync(self) -> bool:
        return False

    @pytest_asyncio.fixture
    async def vectorstore(self, dsn: str) -> AsyncIterator[VectorStore]:
        amem = await AsyncMemoryStore.open(dsn, max_size=4, embedder=HashingEmbedder(dim=16))
        try:
            yield MemStateVectorStore(amem, self.get_embeddings(), namespace="lc")
        finally:
            await amem.close()


# --- beyond the standard suite ---------------------------------------------------------------


def versions(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT count(*) FROM memstate.fact_versions").fetchone()
        assert row is not None
        return int(row[0])


@pytest.fixture
def mem(dsn: str) -> Iterator[MemoryStore]:
    store = MemoryStore(dsn, max_size=4, embedder=HashingEmbedder(dim=64))
    try:
        yield store
    finally:
        store.close()


@pytest.fixture
def vs(mem: MemoryStore) -> MemStateVectorStore:
    return MemStateVectorStore(mem, DeterministicFakeEmbedding(size=32), namespace="kb")


DOCS = [
    Document(page_content="cats purr", metadata={"source": "faq", "n": 1}),
    Document(page_content="dogs bark", metadata={"source": "faq", "n": 2}),
    Document(page_content="cats purr", metadata={"source": "blog", "n": 3}),
    Document(page_content="birds sing", metadata={"source": "blog", "n": 4, "a": {"b": 1}}),
]


def test_metadata_filters_and_scores(vs: MemStateVectorStore) -> None:
    ids = vs.add_documents(DOCS, ids=["c1", "d1", "c2", "b1"])
    found = vs.similarity_search("cats purr", k=4, filter={"source": "blog"})
    assert [d.id for d in found] == ["c2", "b1"]
    assert [d.id for d in vs.similarity_search("x", k=4, filter={"a.b": 1})] == ["b1"]
    [(doc, score)] = vs.similarity_search_with_score("cats purr", k=1, filter={"n": 1})
    assert doc.id == "c1" and score == pytest.approx(1.0, abs=1e-5)
    scored = vs.similarity_search_with_relevance_scores("dogs bark", k=2)
    assert scored[0][0].id == "d1" and scored[0][1] == pytest.approx(1.0, abs=1e-5)
    vec = vs.embeddings.embed_query("birds sing")
    assert vs.similarity_search_by_vector(vec, k=1)[0].id == "b1"
    assert ids == ["c1", "d1", "c2", "b1"]
    with pytest.raises(ValueError, match="only equality"):
        vs.similarity_search("x", filter={"$or": []})


def test_mmr_prefers_diverse_documents(vs: MemStateVectorStore) -> None:
    vs.add_documents(DOCS, ids=["c1", "d1", "c2", "b1"])
    plain = [d.id for d in vs.similarity_search("cats purr", k=2)]
    assert set(plain) == {"c1", "c2"}  # the two identical texts
    mmr = [d.id for d in vs.max_marginal_relevance_search("cats purr", k=2, fetch_k=4)]
    assert mmr[0] in {"c1", "c2"} and mmr[1] not in {"c1", "c2"}  # the duplicate is skipped
    mmr_blog = vs.max_marginal_relevance_search("cats purr", k=2, filter={"source": "blog"})
    assert [d.id for d in mmr_blog] == ["c2", "b1"]
    retriever = vs.as_retriever(search_type="mmr", search_kwargs={"k": 2, "fetch_k": 4})
    assert [d.id for d in retriever.invoke("cats purr")] == mmr


def test_as_retriever(vs: MemStateVectorStore) -> None:
    vs.add_documents(DOCS, ids=["c1", "d1", "c2", "b1"])
    retriever = vs.as_retriever(search_kwargs={"k": 1, "filter": {"source": "faq"}})
    assert [d.id for d in retriever.invoke("dogs bark")] == ["d1"]
    threshold = vs.as_retriever(
        search_type="similarity_score_threshold", search_kwargs={"score_threshold": 0.99}
    )
    assert [d.id for d in threshold.invoke("birds sing")] == ["b1"]


def test_documents_are_versioned_facts_with_history_and_rollback(
    vs: MemStateVectorStore, mem: MemoryStore, dsn: str
) -> None:
    vs.add_documents([Document(page_content="v1", metadata={"k": 1})], ids=["doc"], reason="r1")
    vs.add_documents([Document(page_content="v2", metadata={"k": 2})], ids=["doc"])
    fid = vs.fact_id("doc")
    fact = mem.get(fid)
    assert fact is not None and fact.version == 2 and fact.type == "lc_document"
    assert fact.payload == {"page_content": "v2", "metadata": {"k": 2}, "id": "doc"}
    history = mem.history(fid)
    assert [(v.version, v.op, v.actor) for v in history] == [
        (1, "put", "langchain"),
        (2, "update", "langchain"),
    ]
    assert history[0].reason == "r1"
    mem.rollback(1, namespace="kb")  # undo the update
    assert vs.get_by_ids(["doc"])[0].page_content == "v1"
    vs.delete(["doc"], reason="cleanup")
    assert vs.get_by_ids(["doc"]) == []
    assert mem.history(fid)[-1].reason == "cleanup"
    mem.rollback(1, namespace="kb")  # undo the delete
    assert vs.get_by_ids(["doc"]) == [Document(id="doc", page_content="v1", metadata={"k": 1})]
    # a bulk delete is one commit: one rollback brings every document back
    vs.add_documents(DOCS, ids=["c1", "d1", "c2", "b1"])
    vs.delete(["c1", "d1", "missing"])
    before = versions(dsn)
    mem.rollback(1, namespace="kb")
    assert versions(dsn) == before + 2
    assert {d.id for d in vs.get_by_ids(["c1", "d1"])} == {"c1", "d1"}


def test_ids_map_to_fact_ids(vs: MemStateVectorStore, mem: MemoryStore) -> None:
    u = "0b7f2d7e-1c8a-4f3e-9d2b-5a6c7e8f9a0b"
    ids = vs.add_texts(["a", "b", "c"], ids=[u, "plain", "plain"])
    assert ids == [u, "plain", "plain"]  # a repeated id in one call: the last one wins
    assert str(vs.fact_id(u)) == u
    assert vs.fact_id("plain") == vs.fact_id("plain") != vs.fact_id("Plain")
    docs = {d.id: d.page_content for d in vs.get_by_ids([u, "plain"])}
    assert docs == {u: "a", "plain": "c"}
    generated = vs.add_texts(["d"])
    assert vs.get_by_ids(generated)[0].page_content == "d"
    # the same LangChain id in another namespace is another fact
    other = MemStateVectorStore(mem, DeterministicFakeEmbedding(size=32), namespace="kb2")
    assert other.fact_id("plain") != vs.fact_id("plain")
    assert other.get_by_ids(["plain"]) == [] and other.similarity_search("c", k=5) == []
    other.delete(["plain"])  # not its document: nothing happens
    assert vs.get_by_ids(["plain"])[0].page_content == "c"


def test_a_bound_store_refuses_another_namespace(dsn: str) -> None:
    with MemoryStore(dsn, namespace="a", max_size=1, embedder=HashingEmbedder(dim=8)) as bound:
        with pytest.raises(PermissionDenied):
            MemStateVectorStore(bound, DeterministicFakeEmbedding(size=8), namespace="b")
        assert MemStateVectorStore(bound, DeterministicFakeEmbedding(size=8)).namespace == "a"


def test_from_texts_and_the_async_store_refuses_sync_calls(dsn: str, mem: MemoryStore) -> None:
    vs = MemStateVectorStore.from_texts(
        ["alpha", "beta"],
        DeterministicFakeEmbedding(size=8),
        metadatas=[{"i": 0}, {"i": 1}],
        ids=["x", "y"],
        store=mem,
        namespace="ft",
    )
    assert vs.similarity_search("beta", k=1)[0] == Document(
        id="y", page_content="beta", metadata={"i": 1}
    )
    amem = AsyncMemoryStore(dsn, max_size=1)
    avs = MemStateVectorStore(amem, DeterministicFakeEmbedding(size=8))
    with pytest.raises(TypeError, match="async methods"):
        avs.similarity_search("x")


async def test_async_mmr_filters_and_retriever(dsn: str) -> None:
    amem = await AsyncMemoryStore.open(dsn, max_size=2, embedder=HashingEmbedder(dim=16))
    try:
        vs = MemStateVectorStore(amem, DeterministicFakeEmbedding(size=32), namespace="kb")
        await vs.aadd_documents(DOCS, ids=["c1", "d1", "c2", "b1"])
        found = await vs.asimilarity_search("cats purr", k=4, filter={"source": "blog"})
        assert [d.id for d in found] == ["c2", "b1"]
        mmr = await vs.amax_marginal_relevance_search("cats purr", k=2, fetch_k=4)
        assert mmr[0].id in {"c1", "c2"} and mmr[1].id not in {"c1", "c2"}
        retriever = vs.as_retriever(search_kwargs={"k": 1})
        assert [d.id for d in await retriever.ainvoke("dogs bark")] == ["d1"]
        await vs.adelete(["d1"])
        assert await vs.aget_by_ids(["d1"]) == []
        assert await amem.rollback(1, namespace="kb")
        assert [d.id for d in await vs.aget_by_ids(["d1"])] == ["d1"]
    finally:
        await amem.close()
