"""RAG over memstate-pg with LangChain: a knowledge base whose documents are versioned,
undoable facts, behind a standard LangChain retriever.

A small chain (retriever -> prompt -> "model") answers from the documents. Then a document
is edited by mistake, the answer goes wrong, and one rollback brings the old text back,
for the retriever too. The "model" is a function that quotes its context, and the
embeddings are memstate's deterministic HashingEmbedder, so it runs offline; swap in any
LangChain chat model and Embeddings.

    python examples/langchain_rag.py                   # the embedded server
    python examples/langchain_rag.py --dsn postgresql://user@host/db
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.prompts import ChatPromptTemplate
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from memstate_pg import HashingEmbedder, MemoryStore
from memstate_pg.langchain import MemStateVectorStore


class HashingEmbeddings(Embeddings):
    """memstate's offline test embedder as LangChain Embeddings (matches words, not
    meaning): replace with OpenAIEmbeddings, HuggingFaceEmbeddings, ..."""

    def __init__(self, dim: int = 256) -> None:
        self._embedder = HashingEmbedder(dim=dim)

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return self._embedder.embed(texts)

    def embed_query(self, text: str) -> list[float]:
        return self._embedder.embed([text])[0]


DOCS = [
    Document(
        id="refunds",
        page_content="Refunds: customers get a refund within 30 days of purchase.",
        metadata={"source": "policy"},
    ),
    Document(
        id="shipping",
        page_content="Shipping: orders ship within 2 business days, free above 50 euros.",
        metadata={"source": "policy"},
    ),
    Document(
        id="support",
        page_content="Support: write to help@example.com, we answer within one day.",
        metadata={"source": "faq"},
    ),
]

PROMPT = ChatPromptTemplate.from_messages(
    [("system", "Answer from the context only.\n\nContext:\n{context}"), ("human", "{question}")]
)


def fake_model(prompt: Any) -> str:
    """Stands for a chat model: answers with the first line of its context."""
    system = prompt.to_messages()[0].content
    return system.split("Context:\n", 1)[1].splitlines()[0]


def build_chain(vs: MemStateVectorStore) -> Any:
    retriever = vs.as_retriever(search_kwargs={"k": 1, "filter": {"source": "policy"}})

    def context(docs: list[Document]) -> str:
        return "\n".join(d.page_content for d in docs)

    return (
        {"context": retriever | RunnableLambda(context), "question": RunnablePassthrough()}
        | PROMPT
        | RunnableLambda(fake_model)
    )


def main(dsn: str | None = None) -> dict[str, Any]:
    mem = MemoryStore(dsn) if dsn else MemoryStore.embedded()
    try:
        mem.migrate()
        vs = MemStateVectorStore(mem, HashingEmbeddings(), namespace="kb")
        vs.add_documents(DOCS, reason="initial import")  # one commit, ids from Document.id
        chain = build_chain(vs)
        question = "How many days do customers have to get a refund?"
        out: dict[str, Any] = {"before": chain.invoke(question)}
        print("answer:", out["before"])

        # an edit by mistake (30 became 3): the same id, so an update (version 2)
        vs.add_documents(
            [
                Document(
                    id="refunds",
                    page_content="Refunds: customers get a refund within 3 days of purchase.",
                    metadata={"source": "policy"},
                )
            ],
            reason="bulk edit script",
        )
        out["wrong"] = chain.invoke(question)
        print("answer after the bad edit:", out["wrong"])

        mem.rollback(1, namespace="kb", reason="the bulk edit was wrong")  # undo, as a commit
        out["after"] = chain.invoke(question)
        print("answer after rollback:", out["after"])

        history = mem.history(vs.fact_id("refunds"))
        out["history"] = [(v.version, v.op, v.kind, v.reason) for v in history]
        for v in history:
            print(f"  v{v.version} {v.op:6} {v.kind:8} {v.reason!r}: {v.content}")

        # MMR, scores and metadata filters work as in any LangChain vector store
        out["mmr"] = [
            d.id for d in vs.max_marginal_relevance_search("refund shipping", k=2, fetch_k=3)
        ]
        out["faq"] = [
            d.id for d in vs.similarity_search("write to us", k=3, filter={"source": "faq"})
        ]
        return out
    finally:
        mem.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dsn", default=os.environ.get("MEMSTATE_DSN"))
    main(parser.parse_args().dsn)
