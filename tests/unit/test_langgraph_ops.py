"""The LangGraph store's operations driven with scripted results, no database: they speak
memstate-pg's one request vocabulary (Embed / Begin / Exec / ExecMany / Attempt), compose
the memory store's core operations, and refuse a bad batch before any I/O."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import uuid4

import pytest
from langchain_core.embeddings import Embeddings
from langgraph.store.base import GetOp, PutOp, SearchOp

from memstate_pg import HashingEmbedder
from memstate_pg._core.ops import StoreCore
from memstate_pg._core.protocol import Attempt, Begin, Embed, Exec, ExecMany, Outcome
from memstate_pg.errors import ConflictError, NotFound, PermissionDenied, ValidationFailed
from memstate_pg.langgraph.embeddings import DocumentEmbedder, QueryEmbedder
from memstate_pg.langgraph.store.base import (
    GET_SQL,
    MAX_FILTER_CONDITIONS,
    SEARCH_SQL,
    TYPE_SQL,
    StoreBase,
    translate_filter,
)

DIM = 8


class Store(StoreBase):
    """StoreBase over the sans-IO core of a memory store (no pool, no database)."""

    def __init__(self, **kwargs: Any) -> None:
        self._init_base(
            StoreCore(embedder=HashingEmbedder(dim=DIM)),
            index=kwargs.pop("index", None),
            namespace=None,
            ttl=None,
            actor="langgraph",
        )


def drive(op: Any, answer: Callable[[Any], Any]) -> tuple[Any, list[Any]]:
    """Run `op`, answering each request with `answer(request)`; (value, requests)."""
    seen: list[Any] = []
    try:
        request = next(op)
        while True:
            seen.append(request)
            request = op.send(answer(request))
    except StopIteration as stop:
        return stop.value, seen


class Script:
    """Answers for a batch of writes: the item type is registered, `live` items exist, a
    delete's Attempt ends with `delete_outcome`."""

    def __init__(self, live: list[dict[str, Any]] | None = None, delete_outcome: Any = None):
        self.live = live or []
        self.delete_outcome = delete_outcome or Outcome(1)

    def __call__(self, request: Any) -> Any:
        if isinstance(request, Embed):
            return request.embedder.embed(request.texts)
        if isinstance(request, Begin):
            return None
        if isinstance(request, Attempt):
            request.op.close()
            return self.delete_outcome
        if isinstance(request, ExecMany):
            return [{"fact_id": uuid4()} for _ in request.params]
        assert isinstance(request, Exec)
        if request.query == TYPE_SQL:
            return {"singleton_key": "ns_key"}
        if request.query == GET_SQL:
            return self.live
        if "get_type" in request.query or "FROM memstate.types" in request.query:
            return {
                "type": "lg_item",
                "singleton_key": "ns_key",
                "immutable": False,
                "text_field": None,
                "json_schema": None,
            }
        if "open_commit" in request.query:
            return {"seq": 7, "replayed": False, "result": None}
        if "write_facts" in request.query:
            return [{"fact_id": uuid4(), "version": 1} for _ in request.params["types"]]
        if "write_fact" in request.query:
            return {"fact_id": uuid4(), "version": 1, "seq": 7, "replayed": False}
        return None


def _live(key: str) -> dict[str, Any]:
    return {"fact_id": uuid4(), "version": 1, "payload": {"ns_key": f'["n","{key}"]'}}


def test_a_batch_is_one_commit_with_deletes_in_savepoints() -> None:
    store = Store()
    script = Script(live=[_live("gone")])
    _, seen = drive(
        store._op_batch([PutOp(("n",), "a", {"x": 1}), PutOp(("n",), "gone", None)]), script
    )
    kinds = [type(r).__name__ for r in seen]
    writes = [i for i, r in enumerate(seen) if isinstance(r, Exec) and "write_facts" in r.query]
    assert "Begin" in kinds and len(writes) == 1 and kinds.index("Begin") < writes[0]
    assert kinds[-1] == "Attempt"  # the delete, after the puts, in the same transaction
    assert seen[writes[0]].params["actor"] == "langgraph"  # write_facts opens the commit
    assert all(isinstance(r, Embed | Exec | ExecMany | Begin | Attempt) for r in seen)


@pytest.mark.parametrize("lost", [NotFound("gone meanwhile"), ConflictError("changed")])
def test_a_lost_delete_race_does_not_spoil_the_batch(lost: Exception) -> None:
    store = Store()
    value, _ = drive(
        store._op_batch([PutOp(("n",), "gone", None)]),
        Script(live=[_live("gone")], delete_outcome=Outcome(error=lost)),
    )
    assert value == [None]


def test_any_other_delete_error_ends_the_batch() -> None:
    store = Store()
    with pytest.raises(PermissionDenied):
        drive(
            store._op_batch([PutOp(("n",), "gone", None)]),
            Script(live=[_live("gone")], delete_outcome=Outcome(error=PermissionDenied("no"))),
        )


def test_the_sweep_deletes_in_savepoints_and_counts_only_what_it_deleted() -> None:
    store = Store()
    expired = [{"fact_id": uuid4(), "version": 3}, {"fact_id": uuid4(), "version": 1}]
    outcomes = iter([Outcome(1), Outcome(error=ConflictError("refreshed meanwhile"))])

    def answer(request: Any) -> Any:
        if isinstance(request, Exec) and "lg_expired" in request.query:
            return expired
        if isinstance(request, Attempt):
            request.op.close()
            return next(outcomes)
        return Script()(request)

    swept, seen = drive(store._op_sweep(), answer)
    assert swept == 1
    assert sum(isinstance(r, Attempt) for r in seen) == 2


def test_one_put_is_one_statement() -> None:
    store = Store()
    _, seen = drive(store._op_batch([PutOp(("n",), "a", {"x": 1})]), Script())
    assert not any(isinstance(r, Begin | ExecMany | Attempt) for r in seen)
    assert sum(isinstance(r, Exec) and "write_fact" in r.query for r in seen) == 1


class FakeEmbeddings(Embeddings):
    """LangChain Embeddings that tell documents from queries."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [[1.0] + [0.0] * (DIM - 1) for _ in texts]

    def embed_query(self, text: str) -> list[float]:
        return [0.0, 1.0] + [0.0] * (DIM - 2)


def test_langchain_embeddings_are_embedders_for_documents_and_for_queries() -> None:
    store = Store(index={"dims": DIM, "embed": FakeEmbeddings(), "model": "fake-8"})
    _, seen = drive(
        store._op_batch([SearchOp(("n",), query="q"), PutOp(("n",), "a", {"text": "t"})]),
        lambda r: [] if isinstance(r, Exec) and r.query == SEARCH_SQL else Script()(r),
    )
    embeds = [r for r in seen if isinstance(r, Embed)]
    assert [type(r.embedder) for r in embeds] == [QueryEmbedder, DocumentEmbedder]
    assert embeds[0].embedder.embed(["q"]) == [[0.0, 1.0] + [0.0] * (DIM - 2)]
    assert store.embedder.model == "fake-8" and store.embedder.dim == DIM


def test_a_wrong_sized_vector_from_the_embedder_is_refused() -> None:
    store = Store(index={"dims": DIM, "embed": FakeEmbeddings(), "model": "fake-8"})

    def answer(request: Any) -> Any:
        return [[1.0, 0.0]] if isinstance(request, Embed) else Script()(request)

    with pytest.raises(ValidationFailed, match="dimensions"):
        drive(store._op_batch([PutOp(("n",), "a", {"text": "t"})]), answer)


# --- bounded filters (issue 11 item 9) --------------------------------------------------


def _conditions(n: int) -> dict[str, Any]:
    return {f"f{i}": {"$ne": i} for i in range(n)}


def test_a_filter_at_the_limit_is_accepted() -> None:
    _, conditions = translate_filter(_conditions(MAX_FILTER_CONDITIONS))
    assert len(conditions) == MAX_FILTER_CONDITIONS


@pytest.mark.parametrize("n", [MAX_FILTER_CONDITIONS + 1, 40_000])
def test_too_many_filter_conditions_are_refused_before_any_io(n: int) -> None:
    store = Store()
    op = store._op_batch([GetOp(("n",), "a"), SearchOp(("n",), filter=_conditions(n), query="q")])
    with pytest.raises(ValidationFailed, match=f"at most {MAX_FILTER_CONDITIONS} conditions"):
        next(op)  # the first request is never made


def test_a_huge_or_deep_filter_is_refused() -> None:
    with pytest.raises(ValidationFailed, match="bytes"):
        translate_filter({"text": "x" * 70_000})
    with pytest.raises(ValidationFailed, match="bytes"):
        translate_filter({"tags": {"$ne": ["x" * 1000] * 70}})
    deep: dict[str, Any] = {"leaf": 1}
    for _ in range(40):
        deep = {"d": deep}
    with pytest.raises(ValidationFailed, match="nest"):
        translate_filter(deep)
