"""Search served by a mirror, judged by Postgres: ``search(q, via="qdrant")``.

A registered mirror that can answer queries (Chroma, Qdrant, the in-memory mirror) carries
the nearest-neighbour work; Postgres stays the truth. One operation, written once for
MemoryStore and AsyncMemoryStore:

1. the query is embedded (or taken as given) exactly as a plain search does;
2. the mirror answers ``2*k`` candidates ``(fact_id, version, score)`` of the namespace
   (a ``Call`` request: blocking I/O the async runner puts in a thread);
3. ONE statement (``judge_hits`` in sql/queries.sql), run as the caller so Row Level
   Security applies, checks every candidate against ``memstate.facts``: the fact must be
   live, in the searched namespace, at the very version the mirror holds, and pass the
   search's model / type / filters / session. Whatever it returns comes from Postgres
   (content, payload, version, and the score, recomputed from the current vector): the
   mirror only proposes ids, so a reader never gets a ghost or an old version, however far
   the sync worker lags. Stale candidates (the mirror holds an older version) and deleted
   ones (no live fact of that id visible in the namespace) are dropped;
4. the same statement scores exactly the facts the mirror has not received yet (those
   with an outbox row of this mirror waiting: new, updated, restored), its ``k`` nearest:
   a changed fact competes with its current vector, a new one is found at once. The cost
   grows with the worker's lag, not with the namespace;
5. when fewer than ``k`` current candidates survive (heavy lag, a mirror whose scope does
   not cover the namespace, filters the mirror cannot apply), the plain pgvector search
   runs too; everything is merged by score.

With the worker caught up (nothing stale, nothing deleted, ``k`` survivors), the result is
the mirror's top ``k``, rescored by Postgres, and pgvector's ANN is not run at all.

The result is a :class:`JudgedHits`: the list of ``Hit`` a plain search returns, with the
counts of what the judge did (``stale``, ``deleted``, ``corrected``, ``from_pgvector``...).

Errors: an unknown mirror name is ``NotFound``; a mirror that cannot answer queries is
``ValidationFailed``. A mirror that fails to answer (down, timing out: ``MirrorError`` or
``OSError``) does not fail the search: it falls back to the plain pgvector search, logs a
warning, and says so in ``JudgedHits.fallback`` (the error text).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from typing import Any
from uuid import UUID

from .. import queries
from ..errors import MirrorError, ValidationFailed
from ..mirrors.base import Mirror, MirrorHit
from ..models import Hit
from ..vectors import Vec
from .checks import INT4_MAX, check_mirror_name
from .ops import StoreCore, check_search, fact_from_row, mirror_config, rebuild_mirror
from .protocol import Call, Exec, Op, Outcome

__all__ = ["OVERFETCH", "JudgedHits", "search_via"]

logger = logging.getLogger("memstate_pg")

#: Candidates asked of the mirror per result wanted: stale and deleted hits are dropped, so
#: the mirror proposes more than ``k``.
OVERFETCH = 2


class JudgedHits(list[Hit]):
    """The hits of ``search(q, via=name)``: a list of ``Hit`` like a plain search returns,
    closest first, each checked against Postgres, with what the check did:

    - ``via``: the mirror's name; ``candidates``: how many points the mirror proposed;
    - ``stale``: candidates whose fact has a newer version than the mirror's point;
    - ``deleted``: candidates with no live fact of that id visible in the namespace;
    - ``corrected``: ``stale + deleted``, the hits a mirror-only search would have got wrong;
    - ``filtered``: current candidates that fail the search's type / filters / session;
    - ``from_mirror``: returned hits the mirror proposed (at their current version);
    - ``from_outbox``: returned hits the mirror has not received yet (new or changed facts
      with an outbox row waiting), scored by Postgres;
    - ``from_pgvector``: returned hits of the plain pgvector search, run when the mirror
      proposed fewer than ``k`` current facts;
    - ``fallback``: None, or why the mirror could not answer (then every hit is pgvector's).
    """

    via: str
    candidates: int
    stale: int
    deleted: int
    filtered: int
    from_mirror: int
    from_outbox: int
    from_pgvector: int
    fallback: str | None

    def __init__(
        self,
        hits: Sequence[Hit] = (),
        *,
        via: str = "",
        candidates: int = 0,
        stale: int = 0,
        deleted: int = 0,
        filtered: int = 0,
        from_outbox: int = 0,
        from_pgvector: int = 0,
        fallback: str | None = None,
    ) -> None:
        super().__init__(hits)
        self.via = via
        self.candidates = candidates
        self.stale = stale
        self.deleted = deleted
        self.filtered = filtered
        self.from_outbox = from_outbox
        self.from_pgvector = from_pgvector
        self.from_mirror = len(self) - from_outbox - from_pgvector
        self.fallback = fallback

    @property
    def corrected(self) -> int:
        """Candidates dropped because the mirror lagged: ``stale + deleted``."""
        return self.stale + self.deleted

    def report(self) -> dict[str, Any]:
        """The counts as a dict (logs, benchmarks)."""
        return {
            "via": self.via,
            "candidates": self.candidates,
            "stale": self.stale,
            "deleted": self.deleted,
            "corrected": self.corrected,
            "filtered": self.filtered,
            "from_mirror": self.from_mirror,
            "from_outbox": self.from_outbox,
            "from_pgvector": self.from_pgvector,
            "fallback": self.fallback,
        }

    def __repr__(self) -> str:
        return f"JudgedHits({list.__repr__(self)}, {self.report()!r})"


def _ask(
    mirror: Mirror,
    vector: list[float],
    k: int,
    namespace: str,
    type: str | None,
    model: str,
) -> Outcome[list[MirrorHit]]:
    """The mirror's candidates, or the error that says it is down (never raised: the
    operation falls back to pgvector)."""
    try:
        return Outcome(
            mirror.query(vector, k, namespace=namespace, type=type, embedding_model=model)
        )
    except (MirrorError, OSError) as exc:
        if isinstance(exc, MirrorError):
            return Outcome(error=exc)
        return Outcome(error=MirrorError(f"{exc.__class__.__name__}: {exc}"))


def resolve(core: StoreCore, name: str) -> Op[Mirror]:
    """The Mirror object registered as `name`: the one this process holds, else rebuilt
    from the registry's options (NotFound for an unknown name), and able to query."""
    mirror = core._held_mirror(name)
    if mirror is None:
        config = yield from mirror_config(name)
        mirror = yield Call(rebuild_mirror, (name, config))
        core._mirrors[name] = mirror
    if not mirror.can_query:
        raise ValidationFailed(
            f"mirror {name!r} ({mirror.kind}) cannot answer queries: search without via=, "
            "or via a chroma, qdrant or memory mirror"
        )
    return mirror


def search_via(
    core: StoreCore,
    via: str,
    query: str | Sequence[float],
    k: int = 5,
    *,
    namespace: str | None = None,
    type: str | None = None,
    filters: dict[str, Any] | None = None,
    session_id: str | None = None,
) -> Op[JudgedHits]:
    """Nearest live facts, the candidates found by mirror `via` and judged by Postgres (see
    the module docstring)."""
    check_mirror_name(via)
    doc = check_search(k, type, session_id, filters)
    ns = core._ns(namespace)
    mirror = yield from resolve(core, via)
    vectors, model = yield from core._op_query_vector(query)
    vector = vectors[0]

    def pgvector(want: int) -> Op[list[Hit]]:
        return core._op_search(
            vector, want, namespace=ns, type=type, filters=filters, session_id=session_id
        )

    asked = yield Call(_ask, (mirror, vector, min(OVERFETCH * k, 2000), ns, type, model))
    if not asked.ok:
        logger.warning("search via mirror %r fell back to pgvector: %s", via, asked.error)
        hits = yield from pgvector(k)
        return JudgedHits(hits, via=via, from_pgvector=len(hits), fallback=str(asked.error))
    proposed: list[MirrorHit] = asked.value or []

    ids: list[str] = []
    versions: list[int] = []
    seen: set[UUID] = set()
    unknown = 0  # points whose id is no fact id at all: ghosts by definition
    for hit in proposed:
        try:
            fid = UUID(str(hit.fact_id))
        except ValueError:
            unknown += 1
            continue
        if fid not in seen:
            seen.add(fid)
            ids.append(str(fid))
            # a version no fact can have (a foreign or corrupted point) is simply stale
            ok = isinstance(hit.version, int) and 0 < hit.version <= INT4_MAX
            versions.append(hit.version if ok else -1)
    rows: list[dict[str, Any]] = yield Exec(
        queries.get("judge_hits"),
        {
            "ids": ids,
            "versions": versions,
            "mirror": via,
            "namespace": ns,
            "query": Vec(vector),
            "k": k,
            "model": model,
            "type": type,
            "filter": json.dumps(doc) if doc is not None else None,
            "session_id": session_id,
        },
        "all",
    )

    def hit_of(row: dict[str, Any]) -> Hit:
        return Hit(fact=fact_from_row({**row, "namespace": ns}), score=row["score"])

    valid: list[Hit] = []
    lagging: list[Hit] = []
    stale = filtered = 0
    deleted = unknown
    for row in rows:
        if row["source"] == "lag":
            lagging.append(hit_of(row))
        elif row["fact_id"] is None:
            deleted += 1
        elif row["version"] != row["hit_version"]:
            stale += 1
        elif not row["matches"]:
            filtered += 1
        else:
            valid.append(hit_of(row))

    def closest(hit: Hit) -> tuple[float, str]:
        return (-hit.score, str(hit.fact.id))

    found = {hit.fact.id: hit for hit in valid}
    mirrored = set(found)
    for late in lagging:
        found.setdefault(late.fact.id, late)
    judged = set(found)
    if len(valid) < k:
        # the mirror proposed too few current facts (lag, a scope without this namespace,
        # facts never enqueued for it): pgvector's own answer fills the rest
        extra = yield from pgvector(k)
        for filler in extra:
            found.setdefault(filler.fact.id, filler)
    merged = sorted(found.values(), key=closest)[:k]
    from_pgvector = sum(1 for hit in merged if hit.fact.id not in judged)
    from_outbox = sum(1 for hit in merged if hit.fact.id in judged and hit.fact.id not in mirrored)
    return JudgedHits(
        merged,
        via=via,
        candidates=len(proposed),
        stale=stale,
        deleted=deleted,
        filtered=filtered,
        from_outbox=from_outbox,
        from_pgvector=from_pgvector,
    )
