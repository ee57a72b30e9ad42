"""The operations of memstate_pg._core.ops driven without a database, as h11 drives its
state machine with bytes: each test scripts the rows the database would return and checks
the requests an operation makes — and that a refusal makes none that write."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any
from uuid import UUID, uuid4

import pytest

from memstate_pg import ConflictError, Fact, NotFound, PermissionDenied, ValidationFailed
from memstate_pg._core import ops
from memstate_pg._core.ops import StoreCore, TransactionBase
from memstate_pg._core.protocol import Begin, Embed, Exec, ExecMany, Op, Request
from memstate_pg.embedders import HashingEmbedder
from memstate_pg.queries import get as Q

T = Any


def drive(op: Op[T], respond: Callable[[Request], Any]) -> tuple[T, list[Request]]:
    """Run `op`, answering each request with `respond(request)`; the value and the requests."""
    seen: list[Request] = []
    try:
        request = next(op)
        while True:
            seen.append(request)
            request = op.send(respond(request))
    except StopIteration as stop:
        return stop.value, seen


def refused(
    op: Op[Any], respond: Callable[[Request], Any], error: type[Exception]
) -> list[Request]:
    seen: list[Request] = []

    def recording(request: Request) -> Any:
        seen.append(request)
        return respond(request)

    with pytest.raises(error):
        drive(op, recording)
    return seen


def writes(requests: list[Request]) -> list[str]:
    """The names of the writing queries among `requests`."""
    writing = {
        Q(n): n
        for n in ("write_fact", "write_facts", "delete_fact", "open_commit", "rollback", "revert")
    }
    found = []
    for r in requests:
        if isinstance(r, (Exec, ExecMany)) and r.query in writing:
            found.append(writing[r.query])
    return found


class Database:
    """Scripted answers: registered types, live facts, and a counter for written facts."""

    def __init__(self) -> None:
        self.types: dict[str, dict[str, Any]] = {}
        self.facts: dict[str, dict[str, Any]] = {}

    def __call__(self, request: Request) -> Any:
        if isinstance(request, Embed):
            return HashingEmbedder(dim=8).embed(request.texts)
        if isinstance(request, Begin):
            return None
        if isinstance(request, ExecMany):
            return [{"fact_id": uuid4()} for _ in request.params]
        assert isinstance(request, Exec)
        params = request.params or {}
        if request.query == Q("get_type"):
            return self.types.get(params["type"])
        if request.query == Q("register_model"):
            return {"model": params["model"]}
        if request.query == Q("write_fact"):
            return {
                "fact_id": UUID(params["fact_id"]) if params["fact_id"] else uuid4(),
                "version": 1,
            }
        if request.query == Q("write_facts"):
            return [{"fact_id": uuid4(), "version": 1} for _ in params["types"]]
        if request.query == Q("get_fact"):
            return self.facts.get(params["fact_id"])
        if request.query == Q("open_commit"):
            return {"seq": 7, "replayed": False, "result": None}
        if request.query in (Q("rollback"), Q("revert"), Q("delete_fact")):
            return {"seq": 9}
        raise AssertionError(f"unexpected query {request.query[:60]!r}")


@pytest.fixture
def core() -> StoreCore:
    return StoreCore(embedder=HashingEmbedder(dim=8))


def test_commit_embeds_once_registers_the_model_once_and_writes_one_statement(
    core: StoreCore,
) -> None:
    db = Database()
    fid, seen = drive(core._op_commit(Fact(type="note", payload={"text": "hello"})), db)
    assert isinstance(fid, UUID)
    assert [type(r).__name__ for r in seen] == ["Exec", "Embed", "Exec", "Exec"]
    get_type, embed, model, write = seen
    assert isinstance(embed, Embed) and embed.texts == ["hello"]  # schemaless: the text key
    assert isinstance(model, Exec) and model.autonomous  # survives a caller's rollback
    assert isinstance(write, Exec) and write.params is not None
    assert write.params["namespace"] == "default" and write.params["mode"] == "put"
    assert writes(seen) == ["write_fact"]  # (the helper the refusal tests rely on sees writes)
    # the second commit knows the type and the model: one request to embed, one to write
    _, again = drive(core._op_commit(Fact(type="note", payload={"text": "again"})), db)
    assert [type(r).__name__ for r in again] == ["Embed", "Exec"]


def test_strict_types_refuses_an_unknown_type_before_embedding(core: StoreCore) -> None:
    core.strict_types = True
    seen = refused(core._op_commit(Fact(type="nope", payload={})), Database(), ValidationFailed)
    assert not any(isinstance(r, Embed) for r in seen) and not writes(seen)


def test_registered_model_validates_before_any_write(core: StoreCore) -> None:
    db = Database()
    db.types["profile"] = {
        "type": "profile",
        "json_schema": {"type": "object", "required": ["city"]},
        "singleton_key": None,
        "immutable": False,
        "text_field": "city",
    }
    _, seen = drive(core._op_commit(Fact(type="profile", payload={"city": "Berlin"})), db)
    assert seen[1] == Embed(["Berlin"])  # the registered text_field


@pytest.mark.parametrize(
    ("make", "error"),
    [
        (lambda c: c._op_rollback(0), ValidationFailed),
        (lambda c: c._op_rollback(True), ValidationFailed),
        (lambda c: c._op_revert(-(2**64)), ValidationFailed),
        (lambda c: c._op_search("q", k=0), ValidationFailed),
        (lambda c: c._op_search("q", k=1001), ValidationFailed),
        (lambda c: c._op_query(limit=-1), ValidationFailed),
        (lambda c: c._op_get("not-a-uuid"), ValidationFailed),
        (
            lambda c: c._op_commit(Fact(type="t", payload={}), namespace="bad\x00ns"),
            ValidationFailed,
        ),
        (
            lambda c: c._op_commit_many(
                [Fact(type="t", payload={}, embedding=[1.0] * 8), Fact(type="t", payload={})]
            ),
            ValidationFailed,
        ),
        (lambda c: c._op_update(uuid4(), {"type": "other"}), ValidationFailed),
        (lambda c: c._op_commit(Fact(type="t", payload={}, embedding=[0.0] * 8)), ValidationFailed),
    ],
)
def test_bad_input_is_refused_before_any_write(
    core: StoreCore, make: Any, error: type[Exception]
) -> None:
    assert not writes(refused(make(core), Database(), error))


def test_a_bound_store_refuses_other_namespaces_without_io() -> None:
    bound = StoreCore(embedder=HashingEmbedder(dim=8), namespace="alice")
    assert (
        refused(
            bound._op_commit(Fact(type="t", payload={}), namespace="bob"),
            Database(),
            PermissionDenied,
        )
        == []
    )
    assert refused(bound._op_rollback(1, namespace="bob"), Database(), PermissionDenied) == []


def test_update_of_a_missing_fact_is_not_found_and_writes_nothing(core: StoreCore) -> None:
    seen = refused(core._op_update(uuid4(), {"payload": {"a": 1}}), Database(), NotFound)
    assert not writes(seen)


def test_commit_many_is_one_statement(core: StoreCore) -> None:
    facts = [Fact(type="note", payload={"text": f"n{i}"}) for i in range(3)]
    ids, seen = drive(core._op_commit_many(facts, actor="me"), Database())
    assert len(ids) == 3
    embeds = [r for r in seen if isinstance(r, Embed)]
    assert len(embeds) == 1 and embeds[0].texts == ["n0", "n1", "n2"]
    assert not any(isinstance(r, Begin | ExecMany) for r in seen)
    assert writes(seen) == ["write_facts"]  # the commit is opened by write_facts itself
    many = seen[-1]
    assert isinstance(many, Exec) and many.params is not None
    assert many.params["types"] == ["note"] * 3 and many.params["actor"] == "me"


def test_commit_many_returns_the_replayed_ids_in_order(core: StoreCore) -> None:
    first = [uuid4(), uuid4()]
    db = Database()

    def respond(request: Request) -> Any:
        if isinstance(request, Exec) and request.query == Q("write_facts"):
            assert request.params is not None and request.params["idempotency_key"] == "k"
            return [{"fact_id": f, "version": None, "replayed": True} for f in first]
        return db(request)

    facts = [Fact(type="note", payload={"text": "a"}), Fact(type="note", payload={"text": "b"})]
    ids, seen = drive(core._op_commit_many(facts, idempotency_key="k"), respond)
    assert ids == first
    assert writes(seen) == ["write_facts"]


def test_as_of_a_time_before_the_first_commit_is_empty(core: StoreCore) -> None:
    facts, seen = drive(
        core._op_as_of(datetime(2000, 1, 1, tzinfo=timezone.utc)), lambda r: {"seq": None}
    )
    assert facts == [] and len(seen) == 1


def test_backfill_pages_until_a_short_page_and_notifies_only_when_it_queued() -> None:
    pages = iter(
        [
            {"scanned": 2, "queued": 2, "last_id": uuid4()},
            {"scanned": 1, "queued": 0, "last_id": uuid4()},
        ]
    )
    config = {
        "name": "m",
        "kind": "memory",
        "enabled": True,
        "namespaces": None,
        "types": None,
        "metadata_fields": [],
        "options": {},
    }
    progress: list[tuple[int, int | None]] = []

    def respond(request: Request) -> Any:
        assert isinstance(request, Exec)
        if request.query == ops.q("mirror_config"):
            return config
        if request.query == ops.q("scope_count"):
            return {"n": 3}
        if request.query == ops.q("backfill_page"):
            return next(pages)
        if request.query == ops.q("notify"):
            return None
        raise AssertionError(request.query)

    queued, seen = drive(
        ops.backfill("m", page_size=2, progress=lambda a, b: progress.append((a, b))), respond
    )
    assert queued == 2 and progress == [(0, 3), (2, 3), (3, 3)]
    assert sum(1 for r in seen if isinstance(r, Exec) and r.query == ops.q("notify")) == 1


def test_a_retried_idempotent_transaction_that_writes_more_than_its_first_run_conflicts() -> None:
    tx: TransactionBase[None, None] = TransactionBase(
        None, None, "ns", {"seq": 4, "replayed": True, "result": [str(uuid4())]}, None
    )
    tx._replayed()
    with pytest.raises(ConflictError, match="fewer facts"):
        tx._replayed()
