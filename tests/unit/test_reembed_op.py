"""The re-embed operation (StoreCore._op_reembed) driven with scripted rows: it embeds with
the new embedder in batches, stages each batch, switches in a transaction of its own, and
goes round again when the switch reports facts it has no vector for."""

from __future__ import annotations

from typing import Any
from uuid import UUID

import pytest

from memstate_pg import ConflictError, ReembedReport, ValidationFailed
from memstate_pg._core import ops
from memstate_pg._core.ops import StoreCore
from memstate_pg._core.protocol import Attempt, Begin, Embed, Exec, ExecMany, Outcome, Request
from memstate_pg.embedders import HashingEmbedder
from memstate_pg.queries import get as Q
from tests.unit.test_ops import drive

OLD = HashingEmbedder(dim=8)
NEW = HashingEmbedder(dim=4, seed=3)


class Namespace:
    """Live facts (id -> (version, content)), the staged versions, and a writer that adds
    `late` facts when the first switch is tried."""

    def __init__(self, n: int, late: int = 0, always_late: bool = False) -> None:
        self.facts = {UUID(int=i + 1): (1, f"fact {i}") for i in range(n)}
        self.staged: dict[UUID, int] = {}
        self.late, self.always_late = late, always_late
        self.switched = False
        self.batches: list[int] = []
        self.in_tx = False

    def missing(self) -> list[UUID]:
        return sorted(f for f, (v, _) in self.facts.items() if self.staged.get(f) != v)

    def __call__(self, request: Request) -> Any:
        if isinstance(request, Embed):
            assert request.embedder is NEW  # never the store's own embedder
            return NEW.embed(request.texts)
        if isinstance(request, Begin):
            self.in_tx = True
            return None
        if isinstance(request, Attempt):
            try:
                return Outcome(drive(request.op, self)[0])
            except Exception as exc:  # noqa: BLE001 - handed back as the runner does
                return Outcome(error=exc)  # type: ignore[arg-type]
            finally:
                self.in_tx = False
        if isinstance(request, ExecMany):
            assert request.query == Q("reembed_stage") and self.in_tx
            self.batches.append(len(request.params))
            for p in request.params:
                assert p["model"] == NEW.model and len(p["embedding"].values) == NEW.dim
                self.staged[UUID(p["fact_id"])] = p["version"]
            return [{"fact_id": p["fact_id"]} for p in request.params]
        assert isinstance(request, Exec)
        params = request.params or {}
        if request.query == Q("register_model"):
            assert request.autonomous
            return {}
        if request.query == Q("reembed_todo"):
            return {"total": len(self.facts), "pending": len(self.missing())}
        if request.query == Q("reembed_pending"):
            after = UUID(str(params["after"]))
            rows = [f for f in self.missing() if f > after][: params["limit"]]
            return [
                {"fact_id": f, "version": self.facts[f][0], "content": self.facts[f][1]}
                for f in rows
            ]
        if request.query == Q("reembed_apply"):
            assert self.in_tx
            if self.late:
                base = len(self.facts)
                for i in range(self.late):
                    self.facts[UUID(int=1000 + base + i)] = (1, f"late {i}")
                if not self.always_late:
                    self.late = 0
            missing = len(self.missing())
            if missing:
                return {"switched": 0, "missing": missing}
            self.switched = True
            return {"switched": len(self.facts), "missing": 0}
        raise AssertionError(f"unexpected query {request.query[:60]}")


def core() -> StoreCore:
    return StoreCore(embedder=OLD)


def test_batches_then_one_switch_in_its_own_transaction() -> None:
    store, db = core(), Namespace(5)
    progress: list[tuple[int, int | None]] = []
    report, seen = drive(
        store._op_reembed(
            NEW, namespace="a", batch_size=2, progress=lambda d, t: progress.append((d, t))
        ),
        db,
    )
    assert isinstance(report, ReembedReport)
    assert (report.namespace, report.model, report.staged, report.switched) == (
        "a",
        NEW.model,
        5,
        5,
    )
    assert [len(r.texts) for r in seen if isinstance(r, Embed)] == [2, 2, 1]
    assert db.batches == [2, 2, 1]  # each batch staged in a transaction of its own
    attempts = [r for r in seen if isinstance(r, Attempt)]
    assert len(attempts) == 4 and seen[-1] is attempts[-1]  # the switch comes last
    assert progress == [(0, 5), (2, 5), (4, 5), (5, 5)]
    assert db.switched and store.embedder is NEW


def test_the_switch_step_opens_a_transaction_first() -> None:
    _, seen = drive(
        ops._apply_reembed("a", NEW.model, None, None),
        lambda r: {"switched": 1, "missing": 0} if isinstance(r, Exec) else None,
    )
    assert isinstance(seen[0], Begin) and isinstance(seen[1], Exec)
    assert seen[1].query == Q("reembed_apply")


def test_facts_written_before_the_switch_are_staged_in_a_second_round() -> None:
    store, db = core(), Namespace(3, late=2)
    report, seen = drive(store._op_reembed(NEW, namespace="a", batch_size=10), db)
    assert (report.staged, report.switched) == (5, 5)
    assert [len(r.texts) for r in seen if isinstance(r, Embed)] == [3, 2]
    assert db.batches == [3, 2]


def test_a_namespace_that_never_settles_gives_up_with_a_conflict() -> None:
    store, db = core(), Namespace(1, late=1, always_late=True)
    with pytest.raises(ConflictError, match="kept changing"):
        drive(store._op_reembed(NEW, namespace="a"), db)
    assert store.embedder is OLD  # no switch, no change of the store's embedder


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"batch_size": 0}, "batch_size"),
        ({"namespace": "bad\x00ns"}, "namespace"),
        ({"actor": "x" * 300}, "actor"),
    ],
)
def test_bad_arguments_are_refused_before_any_request(kwargs: dict[str, Any], match: str) -> None:
    seen: list[Request] = []
    with pytest.raises(ValidationFailed, match=match):
        drive(core()._op_reembed(NEW, **kwargs), lambda r: seen.append(r))
    assert seen == []


def test_vectors_of_the_wrong_dimension_are_never_staged() -> None:
    class Liar:
        model, dim = "liar", 4

        def embed(self, texts: list[str]) -> list[list[float]]:
            return [[1.0] * 3 for _ in texts]

    db = Namespace(2)

    def respond(request: Request) -> Any:
        if isinstance(request, Embed):
            return Liar().embed(request.texts)
        return db(request)

    store = core()
    with pytest.raises(ValidationFailed):
        drive(store._op_reembed(Liar(), namespace="a"), respond)  # type: ignore[arg-type]
    assert db.staged == {} and store.embedder is OLD
