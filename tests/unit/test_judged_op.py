"""The search-via-a-mirror operation (memstate_pg._core.judged) driven without a database:
the mirror is a real InMemoryMirror (its query is performed as the runner would perform the
`Call`), the rows of Postgres are scripted. Checks the requests it makes and what it keeps."""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any
from uuid import uuid4

import pytest

from memstate_pg import NotFound, ValidationFailed
from memstate_pg._core.judged import JudgedHits, search_via
from memstate_pg._core.ops import StoreCore
from memstate_pg._core.protocol import Call, Embed, Exec, Request
from memstate_pg.embedders import HashingEmbedder
from memstate_pg.mirrors import InMemoryMirror, MirrorRecord
from memstate_pg.mirrors.faults import FlakyMirror
from memstate_pg.queries import get as Q
from memstate_pg.sync.outbox import q as sync_q
from tests.unit.test_ops import drive

EMB = HashingEmbedder(dim=8)
NOW = datetime(2026, 1, 1, tzinfo=timezone.utc)


def row(fid: str, version: int, text: str, *, source: str = "hit", hit_version: Any = None):
    return {
        "source": source,
        "hit_version": hit_version,
        "fact_id": fid,
        "version": version,
        "matches": True,
        "score": 0.9 if "apple" in text else 0.1,
        "type": "note",
        "session_id": None,
        "payload": {"text": text},
        "content": text,
        "embedding_model": EMB.model,
        "commit_seq": 1,
        "created_at": NOW,
        "updated_at": NOW,
    }


class World:
    """A mirror holding `points` {fact_id: (version, text)}; Postgres holding `facts`."""

    def __init__(self, points: dict[str, tuple[int, str]], facts: dict[str, tuple[int, str]]):
        self.mirror = InMemoryMirror()
        self.mirror.upsert(
            [
                MirrorRecord(fid, v, "default", "note", EMB.embed([t])[0], EMB.model, t, {})
                for fid, (v, t) in points.items()
            ]
        )
        self.facts = facts
        self.pending: list[str] = []  # facts with an outbox row waiting

    def __call__(self, request: Request) -> Any:
        if isinstance(request, Embed):
            return EMB.embed(request.texts)
        if isinstance(request, Call):
            return request.fn(*request.args)
        assert isinstance(request, Exec)
        params = request.params or {}
        if request.query == Q("judge_hits"):
            out = []
            for fid, seen in zip(params["ids"], params["versions"], strict=True):
                live = self.facts.get(fid)
                if live is None:
                    out.append({"source": "hit", "hit_version": seen, "fact_id": None})
                else:
                    out.append(row(fid, live[0], live[1], hit_version=seen))
            out += [row(f, *self.facts[f], source="lag") for f in self.pending if f in self.facts]
            return out
        if request.query == Q("model_registered"):
            return {"registered": True}
        if request.query == Q("search_model"):
            return {"dim": EMB.dim, "index_name": None, "vector_schema": "public"}
        if request.query == Q("search") or {"query", "k", "namespace"} <= set(params):
            # pgvector's search: memstate.search, or its statement run directly
            return [row(fid, v, t) for fid, (v, t) in list(self.facts.items())[:3]]
        raise AssertionError(f"unexpected query {request.query[:60]!r}")


def core_with(mirror: Any) -> StoreCore:
    core = StoreCore(embedder=EMB)
    core._mirrors["m"] = mirror
    return core


def queries(seen: list[Request]) -> list[str]:
    names = {Q(n): n for n in ("judge_hits", "search", "search_model")}
    return [names.get(r.query, "search") for r in seen if isinstance(r, Exec)]


def ids(n: int) -> list[str]:
    return [str(uuid4()) for _ in range(n)]


def test_a_caught_up_mirror_answers_alone_in_one_statement() -> None:
    a, b, c, d = ids(4)
    facts = {a: (1, "apple pie"), b: (1, "apple tart"), c: (1, "pear"), d: (1, "plum")}
    world = World(dict(facts), facts)
    got, seen = drive(search_via(core_with(world.mirror), "m", "apple", 2), world)
    assert isinstance(got, JudgedHits) and len(got) == 2
    assert queries(seen) == ["judge_hits"]  # no pgvector search
    assert [type(r).__name__ for r in seen] == ["Embed", "Call", "Exec"]
    assert (got.candidates, got.corrected, got.from_mirror) == (4, 0, 2)


def test_stale_and_deleted_candidates_are_dropped_and_the_lag_is_scored() -> None:
    a, b, c, d = ids(4)
    world = World(
        {a: (1, "apple pie"), b: (1, "apple tart"), c: (1, "apple cake"), d: (1, "pear")},
        {a: (2, "apple crumble"), c: (1, "apple cake"), d: (1, "pear")},  # a changed, b deleted
    )
    world.pending = [a, b]
    got, seen = drive(search_via(core_with(world.mirror), "m", "apple", 2), world)
    assert (got.stale, got.deleted) == (1, 1)
    assert {str(h.fact.id): h.fact.version for h in got} == {c: 1, a: 2}  # a at version 2
    assert got.from_outbox == 1 and str(b) not in {str(h.fact.id) for h in got}


def test_too_few_survivors_are_completed_from_pgvector() -> None:
    a, b = ids(2)
    world = World({a: (1, "apple"), b: (1, "apple pie")}, {a: (2, "x"), b: (1, "apple pie")})
    got, seen = drive(search_via(core_with(world.mirror), "m", "apple", 2), world)
    assert queries(seen) == ["judge_hits", "search_model", "search"]
    assert got.stale == 1 and got.from_pgvector >= 1


def test_a_mirror_that_is_down_falls_back_to_pgvector() -> None:
    a = str(uuid4())
    world = World({a: (1, "apple")}, {a: (1, "apple")})
    flaky = FlakyMirror(world.mirror)
    flaky.set_down()
    got, seen = drive(search_via(core_with(flaky), "m", "apple", 1), world)
    assert got.fallback == "injected: mirror down"
    assert queries(seen) == ["search_model", "search"] and got.from_pgvector == len(got)


def test_unknown_and_blind_mirrors_are_refused_before_any_query() -> None:
    core = StoreCore(embedder=EMB)
    seen: list[Request] = []

    def answer(request: Request) -> Any:
        seen.append(request)
        assert isinstance(request, Exec) and request.query == sync_q("mirror_config")

    with pytest.raises(NotFound):
        drive(search_via(core, "nope", "apple"), answer)
    assert len(seen) == 1

    class Blind(InMemoryMirror):
        can_query = False

    with pytest.raises(ValidationFailed, match="cannot answer queries"):
        drive(search_via(core_with(Blind()), "m", "apple"), answer)
    with pytest.raises(ValidationFailed, match="k must be"):
        drive(search_via(core_with(InMemoryMirror()), "m", "apple", 0), answer)
    assert len(seen) == 1


def test_a_point_with_an_impossible_version_is_stale_not_an_error() -> None:
    a, b = ids(2)
    world = World(
        {a: (2**40, "apple"), b: (1, "apple pie")}, {a: (1, "apple"), b: (1, "apple pie")}
    )
    got, seen = drive(search_via(core_with(world.mirror), "m", "apple", 1), world)
    judge = next(r for r in seen if isinstance(r, Exec) and r.query == Q("judge_hits"))
    assert judge.params is not None and sorted(judge.params["versions"]) == [-1, 1]
    assert got.stale == 1 and [str(h.fact.id) for h in got] == [b]
