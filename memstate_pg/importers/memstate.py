"""Import a MemState (PyPI `memstate` 0.5.1) database into memstate-pg.

What MemState 0.5.1 writes (memstate/backends/sqlite.py and postgres.py of the release):

* SQLite (`SQLiteStorage(path)`): table ``facts(id, type, data, created_at)`` where `data`
  is the JSON of a ``Fact`` (id, type, payload, source, session_id, ts), and table
  ``tx_log(tx_id, uuid, timestamp, data)`` where `data` is the JSON of a ``TxEntry``
  (uuid, session_id, seq, ts, op, fact_id, fact_before, fact_after, actor, reason).
* PostgreSQL (`PostgresStorage(url, table_prefix="memstate")`): ``<prefix>_facts(id, doc
  jsonb)`` and ``<prefix>_log(seq, session_id, entry jsonb)``, same documents.

The log is MemState's history: one entry per COMMIT, COMMIT_EPHEMERAL, UPDATE, PROMOTE
(each with the fact's state after it), DELETE, and DISCARD_SESSION (no fact id: every fact
of the session went). MemState's `rollback` restores the earlier states and *deletes* the
rolled-back entries; its `discard_session` deletes facts without a per-fact entry. So the
log is replayed in its order (`tx_id` / `seq`; the entries' own `seq` restarts in every
process and is not used), and the facts table, MemState's current state, has the last word.

How it maps (see docs/from-memstate.md):

* every log entry becomes **one memstate-pg commit**, in order, through the public
  MemoryStore API (so the outbox feeds every mirror, and `rollback(n, session_id=…)` undoes
  what MemState's `rollback(session_id, n)` would have): a fact state becomes a new version
  (put/update), DELETE a delete version, DISCARD_SESSION one commit deleting the facts the
  session held at that point. The commit's `session_id` and `actor` are the entry's.
* the original times cannot go into memstate-pg's commit rows (their `created_at` is set by
  the database and history is append-only), so each commit's `reason` is
  ``memstate-import {"op": …, "ts": …, …}``: the MemState operation, the entry's timestamp,
  the original reason, the fact's `source` and `ts`, and its original id when it was not a
  UUID (`parse_import_reason` reads it back).
* then every fact of the facts table whose replayed state differs (a rolled-back or pruned
  log) gets one more commit with its current state, and every replayed fact that is not in
  the facts table any more (discarded, rolled back) is deleted.
* ids: a MemState id that is a UUID (what MemState generates) is the fact id; any other id
  (`Fact(id="user-name", …)`) becomes ``uuid5(MEMSTATE_ID_NAMESPACE, id)``, stable across
  runs (`fact_id_for`).
* types: MemState keeps schemas in the process, not in the database. A type the target
  does not know is registered without a model (schemaless: any JSON object), with
  ``text_field="content"`` (or ``"text"``) when every current fact of the type has such a
  string field, so the right text is embedded. A type you registered before importing keeps
  your model and constraints, and its payloads are validated.
* vectors: MemState keeps them in the vector database, not in SQL; every version is
  embedded again by the target store's embedder.
* idempotent: each commit carries the idempotency key ``memstate:<entry uuid>`` (final-state
  commits ``memstate:state:…``); keys already present in the namespace are skipped without
  any work, and the database's unique key makes a concurrent second run write nothing
  twice. An interrupted import resumes where it stopped when run again.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sqlite3
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote
from uuid import UUID, uuid5

import psycopg
from psycopg import sql

from ..errors import MemStateError, Unavailable, translate
from ..models import Fact
from ..store import MemoryStore

__all__ = [
    "KEY_PREFIX",
    "MEMSTATE_ID_NAMESPACE",
    "ImportReport",
    "SourceUnavailable",
    "fact_id_for",
    "import_memstate",
    "open_source",
    "parse_import_reason",
]

#: uuid5 namespace of the ids of MemState facts whose id is not a UUID:
#: ``uuid5(NAMESPACE_URL, "https://pypi.org/project/memstate/")``.
MEMSTATE_ID_NAMESPACE = UUID("661b0f2d-c5c6-578b-887a-5686dd698b74")
KEY_PREFIX = "memstate:"
REASON_PREFIX = "memstate-import "
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,40}")
REASON_LIMIT = 2000

ProgressFn = Callable[[str, int, int], None]  # (phase, done, total)


class SourceUnavailable(MemStateError):
    """The MemState database cannot be read: no such file, not a MemState database,
    PostgreSQL unreachable. `remedy` says what to do."""

    def __init__(self, message: str, remedy: str) -> None:
        super().__init__(message)
        self.remedy = remedy


def fact_id_for(memstate_id: str, namespace: str = "default") -> UUID:
    """The memstate-pg fact id of a MemState fact id imported into `namespace`: the same
    UUID when it is one (any case), else ``uuid5(MEMSTATE_ID_NAMESPACE, namespace + NUL +
    memstate_id)`` — fact ids are global, so two MemState databases whose facts are named
    alike (``"profile"``) can be imported into two namespaces."""
    if _UUID.fullmatch(memstate_id):
        return UUID(memstate_id)
    return uuid5(MEMSTATE_ID_NAMESPACE, f"{namespace}\x00{memstate_id}")


def parse_import_reason(reason: str | None) -> dict[str, Any] | None:
    """The MemState metadata an imported commit carries in its reason (op, ts, reason,
    source, fact_ts, memstate_id), or None for a commit the importer did not write."""
    if not reason or not reason.startswith(REASON_PREFIX):
        return None
    try:
        found = json.loads(reason[len(REASON_PREFIX) :])
    except ValueError:
        return None
    return found if isinstance(found, dict) else None


# --- the source ------------------------------------------------------------------------


@dataclass(frozen=True)
class Entry:
    """One row of MemState's transaction log."""

    position: int  # tx_id (SQLite) / seq (PostgreSQL): the log's order
    uuid: str | None
    ts: str | None
    op: str
    fact_id: str | None
    session_id: str | None
    fact_after: dict[str, Any] | None
    actor: str | None
    reason: str | None

    @classmethod
    def from_doc(cls, position: int, doc: Any) -> Entry:
        if isinstance(doc, str):
            doc = json.loads(doc)
        if not isinstance(doc, dict):
            raise ValueError("a log entry is not a JSON object")
        after = doc.get("fact_after")
        return cls(
            position=int(position),
            uuid=_str_or_none(doc.get("uuid")),
            ts=_str_or_none(doc.get("ts")),
            op=str(doc.get("op") or ""),
            fact_id=_str_or_none(doc.get("fact_id")),
            session_id=_str_or_none(doc.get("session_id")),
            fact_after=after if isinstance(after, dict) else None,
            actor=_str_or_none(doc.get("actor")),
            reason=_str_or_none(doc.get("reason")),
        )


def _str_or_none(value: Any) -> str | None:
    return None if value is None else str(value)


class Source:
    """A MemState database opened read-only, in one consistent snapshot."""

    kind = ""
    where = ""

    def count(self) -> tuple[int, int]:
        """(log entries, facts)."""
        raise NotImplementedError

    def entries(self) -> Iterator[Entry]:
        raise NotImplementedError

    def facts(self) -> Iterator[dict[str, Any]]:
        raise NotImplementedError

    def type_stats(self) -> dict[str, tuple[int, int, int]]:
        """type -> (current facts, with a string `content`, with a string `text`); types
        found only in the log have (0, 0, 0)."""
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Source:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SQLiteSource(Source):
    kind = "sqlite"

    def __init__(self, path: str) -> None:
        self.where = path
        if not os.path.isfile(path):
            raise SourceUnavailable(
                f"no MemState database at {path!r}: no such file",
                "give the path of the file MemState's SQLiteStorage(...) wrote, or a PostgreSQL DSN",
            )
        try:
            self._conn = sqlite3.connect(
                f"file:{quote(os.path.abspath(path))}?mode=ro", uri=True, isolation_level=None
            )
            self._conn.execute("BEGIN")  # one snapshot for the whole import
            tables = {
                r[0]
                for r in self._conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
            }
        except sqlite3.Error as exc:
            raise SourceUnavailable(
                f"cannot read {path!r} as SQLite: {exc}",
                "check that the file is a MemState SQLite database and readable",
            ) from None
        missing = {"facts", "tx_log"} - tables
        if missing:
            self._conn.close()
            raise SourceUnavailable(
                f"{path!r} is not a MemState database: no table {', '.join(sorted(missing))}",
                "give the file MemState's SQLiteStorage(...) wrote (tables facts and tx_log)",
            )

    def count(self) -> tuple[int, int]:
        (entries,) = self._conn.execute("SELECT count(*) FROM tx_log").fetchone()
        (facts,) = self._conn.execute("SELECT count(*) FROM facts").fetchone()
        return entries, facts

    def entries(self) -> Iterator[Entry]:
        for position, data in self._conn.execute("SELECT tx_id, data FROM tx_log ORDER BY tx_id"):
            yield Entry.from_doc(position, data)

    def facts(self) -> Iterator[dict[str, Any]]:
        for fid, ftype, data in self._conn.execute("SELECT id, type, data FROM facts ORDER BY id"):
            doc = json.loads(data)
            doc.setdefault("id", fid)
            doc.setdefault("type", ftype)
            yield doc

    def type_stats(self) -> dict[str, tuple[int, int, int]]:
        stats: dict[str, tuple[int, int, int]] = {}
        for t, n, c, x in self._conn.execute(
            "SELECT type, count(*),"
            " sum(json_type(data, '$.payload.content') = 'text'),"
            " sum(json_type(data, '$.payload.text') = 'text')"
            " FROM facts GROUP BY type"
        ):
            stats[t] = (n, c or 0, x or 0)
        for (t,) in self._conn.execute(
            "SELECT DISTINCT json_extract(data, '$.fact_after.type') FROM tx_log"
            " WHERE json_extract(data, '$.fact_after.type') IS NOT NULL"
        ):
            stats.setdefault(t, (0, 0, 0))
        return stats

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):
            self._conn.close()


class PostgresSource(Source):
    kind = "postgresql"

    def __init__(self, dsn: str, table_prefix: str = "memstate") -> None:
        if not _PREFIX.fullmatch(table_prefix):
            raise SourceUnavailable(
                f"table prefix {table_prefix!r} is not a plain SQL name",
                "give the table_prefix you passed to MemState's PostgresStorage (default memstate)",
            )
        self.where = _redact(dsn)
        self._facts = sql.Identifier(f"{table_prefix}_facts")
        self._log = sql.Identifier(f"{table_prefix}_log")
        try:
            self._conn = psycopg.connect(_libpq_dsn(dsn), connect_timeout=10)
            self._conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            self._conn.read_only = True
            found = self._conn.execute(
                "SELECT to_regclass(%s) IS NOT NULL, to_regclass(%s) IS NOT NULL",
                [f"{table_prefix}_facts", f"{table_prefix}_log"],
            ).fetchone()
        except psycopg.Error as exc:
            raise SourceUnavailable(
                f"cannot read the MemState database at {self.where}: {_first_line(exc)}",
                "check the DSN, that the server runs, and that the role may read the tables",
            ) from None
        assert found is not None, "SELECT without FROM returns one row"
        if not all(found):
            self._conn.close()
            raise SourceUnavailable(
                f"no MemState tables {table_prefix}_facts / {table_prefix}_log at {self.where}",
                "give the database MemState's PostgresStorage(...) wrote, and --table-prefix "
                "if it was not 'memstate'",
            )

    def count(self) -> tuple[int, int]:
        return self._count(self._log), self._count(self._facts)

    def _count(self, table: sql.Identifier) -> int:
        row = self._conn.execute(sql.SQL("SELECT count(*) FROM {}").format(table)).fetchone()
        assert row is not None, "an aggregate without GROUP BY returns one row"
        return int(row[0])

    def entries(self) -> Iterator[Entry]:
        with self._conn.cursor(name="memstate_import_log") as cur:
            cur.execute(sql.SQL("SELECT seq, entry FROM {} ORDER BY seq").format(self._log))
            for position, doc in cur:
                yield Entry.from_doc(position, doc)

    def facts(self) -> Iterator[dict[str, Any]]:
        with self._conn.cursor(name="memstate_import_facts") as cur:
            cur.execute(sql.SQL("SELECT id, doc FROM {} ORDER BY id").format(self._facts))
            for fid, doc in cur:
                doc = dict(doc)
                doc.setdefault("id", fid)
                yield doc

    def type_stats(self) -> dict[str, tuple[int, int, int]]:
        stats: dict[str, tuple[int, int, int]] = {}
        for t, n, c, x in self._conn.execute(
            sql.SQL(
                "SELECT doc->>'type', count(*),"
                " count(*) FILTER (WHERE jsonb_typeof(doc->'payload'->'content') = 'string'),"
                " count(*) FILTER (WHERE jsonb_typeof(doc->'payload'->'text') = 'string')"
                " FROM {} GROUP BY 1"
            ).format(self._facts)
        ):
            if t is not None:
                stats[t] = (n, c, x)
        for (t,) in self._conn.execute(
            sql.SQL(
                "SELECT DISTINCT entry->'fact_after'->>'type' FROM {}"
                " WHERE entry->'fact_after'->>'type' IS NOT NULL"
            ).format(self._log)
        ):
            stats.setdefault(t, (0, 0, 0))
        return stats

    def close(self) -> None:
        with contextlib.suppress(psycopg.Error):
            self._conn.close()


def _libpq_dsn(dsn: str) -> str:
    """MemState takes SQLAlchemy URLs (`postgresql+psycopg://…`): drop the driver part."""
    return re.sub(r"^(postgres(?:ql)?)\+[A-Za-z0-9_]+://", r"\1://", dsn)


def _redact(dsn: str) -> str:
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", dsn)


def _first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def is_postgres(source: str) -> bool:
    return bool(re.match(r"^postgres(ql)?(\+[A-Za-z0-9_]+)?://", source)) or (
        "=" in source and not os.path.exists(source)  # a libpq key=value DSN
    )


def open_source(source: str, *, table_prefix: str = "memstate") -> Source:
    """A MemState database: a PostgreSQL DSN / SQLAlchemy URL, `sqlite:///path`, or a path."""
    if is_postgres(source):
        return PostgresSource(source, table_prefix)
    if source.startswith("sqlite:///"):
        source = source[len("sqlite:///") :]
    return SQLiteSource(source)


# --- the import ------------------------------------------------------------------------


@dataclass
class ImportReport:
    """What an import did (or, with dry_run, would do)."""

    source: str
    namespace: str
    dry_run: bool = False
    entries: int = 0  # log entries read
    source_facts: int = 0  # rows of the facts table
    imported: int = 0  # log entries written as commits now
    already: int = 0  # log entries an earlier run imported (skipped)
    nothing_to_do: int = 0  # e.g. DELETE of a fact that was not live, empty DISCARD_SESSION
    excluded: int = 0  # log entries and facts of the excluded types
    state_commits: int = 0  # commits bringing a fact to its state in the facts table
    versions: int = 0  # fact versions written (puts, updates and deletes)
    facts: int = 0  # distinct fact ids met
    facts_written: int = 0  # distinct facts that got a version now
    sessions: int = 0  # distinct session ids met
    live: int = 0  # facts live after the import (the facts table's rows)
    mapped_ids: int = 0  # ids that were not UUIDs (uuid5-mapped)
    types: list[str] = field(default_factory=list)
    types_registered: list[str] = field(default_factory=list)
    failed: list[dict[str, Any]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def facts_per_s(self) -> float:
        return self.facts_written / self.seconds if self.seconds > 0 else 0.0

    @property
    def versions_per_s(self) -> float:
        return self.versions / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["facts_per_s"] = round(self.facts_per_s, 1)
        out["versions_per_s"] = round(self.versions_per_s, 1)
        out["seconds"] = round(self.seconds, 3)
        return out


@dataclass
class _Live:
    type: str
    session_id: str | None
    payload: dict[str, Any]


@dataclass
class _Write:
    """One commit to make: facts to write (in order) and facts to delete before them."""

    key: str
    session_id: str | None  # the commit's session
    actor: str | None
    reason: str
    deletes: list[UUID] = field(default_factory=list)
    puts: list[Fact] = field(default_factory=list)


def _fact_id(fact: Fact) -> UUID:
    """The id of a fact the importer built (_fact always sets it)."""
    assert fact.id is not None, "the importer gives every fact its id"
    return fact.id


class _Importer:
    def __init__(
        self,
        store: MemoryStore,
        source: Source,
        namespace: str,
        dry_run: bool,
        progress: ProgressFn | None,
        exclude_types: frozenset[str] = frozenset(),
    ) -> None:
        self.store = store
        self.source = source
        self.ns = namespace
        self.dry_run = dry_run
        self.progress = progress
        self.exclude = exclude_types
        self.report = ImportReport(source=f"{source.kind}:{source.where}", namespace=namespace)
        self.report.dry_run = dry_run
        self.live: dict[UUID, _Live] = {}  # the replayed MemState state
        self.touched: set[UUID] = set()  # dry run: facts the replay would write
        self.written: set[UUID] = set()
        self.seen: set[UUID] = set()
        self.sessions: set[str] = set()
        self.mapped: set[str] = set()
        self.done_keys: set[str] = set()
        self._ready = False
        self.conn: psycopg.Connection | None = None

    # -- target --------------------------------------------------------------------------

    @contextlib.contextmanager
    def _connection(self) -> Iterator[psycopg.Connection]:
        """A pooled connection of the target; database errors become MemStateErrors
        (a lost server: Unavailable), as they do in the store's own calls."""
        try:
            with contextlib.ExitStack() as stack:  # says why, soon, if the server is gone
                yield self.store._connection(stack)
        except psycopg.Error as exc:
            err = translate(exc)
            if err is exc:
                raise
            raise err from exc

    def _target_ready(self) -> bool:
        with self._connection() as conn:
            row = conn.execute("SELECT to_regclass('memstate.commits') IS NOT NULL").fetchone()
            assert row is not None, "SELECT without FROM returns one row"
            return bool(row[0])

    def _load_done_keys(self) -> None:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT idempotency_key FROM memstate.commits"
                " WHERE namespace = %s AND idempotency_key LIKE 'memstate:%%'",
                [self.ns],
            ).fetchall()
        self.done_keys = {r[0] for r in rows}

    def _registered_types(self) -> set[str]:
        with self._connection() as conn:
            return {r[0] for r in conn.execute("SELECT type FROM memstate.types").fetchall()}

    def _register_types(self, ready: bool) -> None:
        stats = self.source.type_stats()
        stats = {t: v for t, v in stats.items() if t not in self.exclude}
        self.report.types = sorted(stats)
        known = self._registered_types() if ready else set()
        for name in self.report.types:
            if name in known:
                continue
            n, with_content, with_text = stats[name]
            text_field = None
            if n and with_content == n:
                text_field = "content"
            elif n and with_text == n:
                text_field = "text"
            if not self.dry_run:
                try:
                    self.store.register_schema(name, None, text_field=text_field)
                except MemStateError as exc:
                    self._fail(None, "register type", name, exc)
                    continue
            self.report.types_registered.append(name)

    # -- mapping -------------------------------------------------------------------------

    def _fid(self, memstate_id: str) -> UUID:
        fid = fact_id_for(memstate_id, self.ns)
        self.seen.add(fid)
        if not _UUID.fullmatch(memstate_id):
            self.mapped.add(memstate_id)
        return fid

    def _reason(self, meta: dict[str, Any]) -> str:
        meta = {k: v for k, v in meta.items() if v is not None}
        text = REASON_PREFIX + json.dumps(meta, ensure_ascii=False, separators=(",", ":"))
        if len(text) > REASON_LIMIT and "reason" in meta:
            over = len(text) - REASON_LIMIT + 1
            meta["reason"] = meta["reason"][: max(0, len(meta["reason"]) - over)] + "…"
            text = REASON_PREFIX + json.dumps(meta, ensure_ascii=False, separators=(",", ":"))
        return text[:REASON_LIMIT]

    def _fact(self, fid: UUID, doc: dict[str, Any]) -> Fact:
        payload = doc.get("payload")
        if not isinstance(payload, dict) or not isinstance(doc.get("type"), str):
            raise ValueError("the fact has no type or its payload is not a JSON object")
        return Fact(
            id=fid,
            type=doc["type"],
            payload=payload,
            namespace=self.ns,
            session_id=_str_or_none(doc.get("session_id")),
        )

    # -- replay --------------------------------------------------------------------------

    def _plan(self, e: Entry) -> _Write | None:
        """The commit that reproduces entry `e`, or None when it changes nothing. Updates
        the replayed state."""
        meta = {"op": e.op, "ts": e.ts, "reason": e.reason}
        key = KEY_PREFIX + (e.uuid or f"{self.source.kind}:{e.position}")
        if e.session_id is not None:
            self.sessions.add(e.session_id)
        if e.fact_after is not None:
            doc = e.fact_after
            if doc.get("type") in self.exclude:
                self.report.excluded += 1
                return None
            original = str(doc.get("id") or e.fact_id or "")
            if not original:
                raise ValueError("the entry's fact has no id")
            fid = self._fid(original)
            fact = self._fact(fid, doc)
            if fact.session_id is not None:
                self.sessions.add(fact.session_id)
            meta.update(
                source=_str_or_none(doc.get("source")),
                fact_ts=_str_or_none(doc.get("ts")),
                memstate_id=original if original in self.mapped else None,
            )
            write = _Write(key, e.session_id, e.actor, self._reason(meta), puts=[fact])
            before = self.live.get(fid)
            if before is not None and before.type != fact.type:
                write.deletes.append(fid)  # memstate-pg keeps a fact's type: delete, re-create
            self.live[fid] = _Live(fact.type, fact.session_id, fact.payload)
            return write
        if e.op == "DELETE" and e.fact_id:
            fid = self._fid(e.fact_id)
            if self.live.pop(fid, None) is None:
                return None
            if e.fact_id in self.mapped:
                meta["memstate_id"] = e.fact_id
            return _Write(key, e.session_id, e.actor, self._reason(meta), deletes=[fid])
        if e.op == "DISCARD_SESSION" and e.session_id is not None:
            gone = [fid for fid, st in self.live.items() if st.session_id == e.session_id]
            for fid in gone:
                del self.live[fid]
            if not gone:
                return None
            return _Write(key, e.session_id, e.actor, self._reason(meta), deletes=gone)
        raise ValueError(f"unknown MemState operation {e.op!r}")

    def _apply(self, w: _Write) -> bool:
        """One commit, through the public API (the outbox feeds the mirrors). Deletes of
        facts the target does not hold (their creation was refused earlier) are left out;
        returns False when that leaves nothing to write."""
        store, ns = self.store, self.ns
        if not w.deletes and len(w.puts) == 1 and w.puts[0].session_id == w.session_id:
            store.commit(
                w.puts[0],
                namespace=ns,
                actor=w.actor,
                reason=w.reason,
                idempotency_key=w.key,
                conn=self.conn,
            )
            self.report.versions += 1
            self.written.add(_fact_id(w.puts[0]))
            return True
        deletes = w.deletes
        if deletes:
            assert self.conn is not None
            held = {
                r[0]
                for r in self.conn.execute(
                    "SELECT fact_id FROM memstate.facts WHERE fact_id = ANY(%s) AND namespace = %s",
                    [deletes, ns],
                )
            }
            deletes = [fid for fid in deletes if fid in held]
        if not deletes and not w.puts:
            return False
        # A transaction even for one delete: it claims the idempotency key before touching
        # the fact, so a second import running at the same time replays instead of failing.
        with store.transaction(
            ns,
            session_id=w.session_id,
            actor=w.actor,
            reason=w.reason,
            idempotency_key=w.key,
            conn=self.conn,
        ) as tx:
            if tx.replayed:
                return False
            tx.session_id = None  # each fact keeps its own session (PROMOTE clears it)
            for fid in deletes:
                tx.delete(fid)
            for fact in w.puts:
                tx.commit(fact)
        self.report.versions += len(deletes) + len(w.puts)
        self.written.update(deletes)
        self.written.update(_fact_id(f) for f in w.puts)
        return True

    def _fail(self, e: Entry | None, op: str, what: Any, exc: BaseException) -> None:
        self.report.failed.append(
            {
                "position": e.position if e is not None else None,
                "op": op,
                "fact_id": None if what is None else str(what),
                "error": f"{type(exc).__name__}: {_first_line(exc)}",
            }
        )

    def _tick(self, phase: str, done: int, total: int) -> None:
        if self.progress is not None:
            self.progress(phase, done, total)

    def run(self) -> ImportReport:
        started = time.perf_counter()
        n_entries, n_facts = self.source.count()
        self.report.entries, self.report.source_facts = n_entries, n_facts
        ready = self._target_ready()
        if not ready and not self.dry_run:
            self.store.migrate()
            ready = True
        self._ready = ready
        if ready:
            self._load_done_keys()
        self._register_types(ready)
        total = n_entries + n_facts
        self._tick("import", 0, total)
        with self._connection() as conn:
            self.conn = conn
            try:
                # Each commit need not wait for its WAL flush: a commit lost in a server
                # crash is imported again by the next run (idempotency keys). The import
                # ends with one durable commit, which flushes every commit before it.
                conn.execute("SET synchronous_commit = off")
                self._replay(total)
                self._final_state(n_entries, total)
                if not self.dry_run:
                    conn.execute("SET synchronous_commit = on")
                    with conn.transaction():
                        conn.execute("SELECT pg_catalog.txid_current()")
            finally:
                self.conn = None
                if not conn.closed:
                    with contextlib.suppress(psycopg.Error):
                        conn.execute("RESET synchronous_commit")
        self.report.facts = len(self.seen)
        self.report.facts_written = len(self.written)
        self.report.sessions = len(self.sessions)
        self.report.mapped_ids = len(self.mapped)
        self.report.seconds = time.perf_counter() - started
        self._tick("import", total, total)
        return self.report

    def _replay(self, total: int) -> None:
        done = 0
        for e in self.source.entries():
            done += 1
            try:
                write = self._plan(e)
            except (ValueError, MemStateError) as exc:
                self._fail(e, e.op, e.fact_id, exc)
                continue
            if write is None:
                if e.fact_after is None or e.fact_after.get("type") not in self.exclude:
                    self.report.nothing_to_do += 1
            elif write.key in self.done_keys:
                self.report.already += 1
            elif self.dry_run:
                self.touched.update(write.deletes)
                self.touched.update(f.id for f in write.puts if f.id is not None)
                self.written.update(self.touched)
                self.report.imported += 1
                self.report.versions += len(write.deletes) + len(write.puts)
            else:
                try:
                    if self._apply(write):
                        self.report.imported += 1
                    else:
                        self.report.nothing_to_do += 1
                except Unavailable:
                    raise
                except MemStateError as exc:
                    self._fail(e, e.op, e.fact_id, exc)
            if done % 50 == 0:
                self._tick("import", done, total)

    def _final_state(self, done: int, total: int) -> None:
        """The facts table has the last word: bring every fact of it to its state there in
        the target, and delete the imported facts it does not hold. Compared with the
        target's live facts (not the replay), so a fact the source changed back since an
        earlier run is caught too; keyed by the target's version, so two runs at once
        write one commit."""
        target: dict[UUID, Fact] = {}
        if self._ready:
            assert self.conn is not None
            for fid, ftype, session_id, payload, version in self.conn.execute(
                "SELECT fact_id, type, session_id, payload, version FROM memstate.facts"
                " WHERE namespace = %s",
                [self.ns],
            ):
                target[fid] = Fact(
                    id=fid, type=ftype, session_id=session_id, payload=payload, version=version
                )
        in_table: set[UUID] = set()
        for doc in self.source.facts():
            done += 1
            if doc.get("type") in self.exclude:
                self.report.excluded += 1
                continue
            original = str(doc.get("id") or "")
            try:
                fid = self._fid(original)
                fact = self._fact(fid, doc)
            except (ValueError, MemStateError) as exc:
                self._fail(None, "STATE", original, exc)
                continue
            in_table.add(fid)
            if fact.session_id is not None:
                self.sessions.add(fact.session_id)
            now = target.get(fid)
            if fid in self.touched:  # dry run: the state the replay would have left
                st = self.live.get(fid)
                now = (
                    None
                    if st is None
                    else Fact(type=st.type, payload=st.payload, session_id=st.session_id, version=0)
                )
            if now is not None and (now.type, now.session_id, now.payload) == (
                fact.type,
                fact.session_id,
                self._normalized(fact),
            ):
                continue
            meta = {
                "op": "STATE",
                "source": _str_or_none(doc.get("source")),
                "fact_ts": _str_or_none(doc.get("ts")),
                "memstate_id": original if original in self.mapped else None,
            }
            key = f"{KEY_PREFIX}state:{fid}:{self._version_of(fid, now)}"
            write = _Write(key, None, None, self._reason(meta), puts=[fact])
            if now is not None and now.type != fact.type:
                write.deletes.append(fid)  # memstate-pg keeps a fact's type: delete, re-create
            self._state_commit(write, fid)
            if done % 50 == 0:
                self._tick("import", done, total)
        for fid in sorted(self.seen - in_table):
            now = target.get(fid)
            if fid in self.touched and fid not in self.live:
                now = None
            elif fid in self.touched:
                now = Fact(type="", payload={}, version=0)
            if now is None:
                continue
            meta = {"op": "STATE", "reason": "not in MemState's facts table"}
            key = f"{KEY_PREFIX}state:{fid}:{now.version}:delete"
            self._state_commit(_Write(key, None, None, self._reason(meta), deletes=[fid]), fid)
        self.report.live = len(in_table)

    def _normalized(self, fact: Fact) -> dict[str, Any]:
        """The payload as the target stores it: a type registered in this process with a
        pydantic model stores the model's dump; any other type stores the payload as is."""
        ftype = self.store._types.get(fact.type)
        if ftype is None or ftype.model is None:
            return fact.payload
        try:
            return ftype.validate(fact.payload)
        except MemStateError:
            return fact.payload

    def _version_of(self, fid: UUID, now: Fact | None) -> str:
        if now is not None:
            return str(now.version)
        if not self._ready:
            return "0"
        assert self.conn is not None
        row = self.conn.execute(
            "SELECT max(version) FROM memstate.fact_versions WHERE fact_id = %s", [fid]
        ).fetchone()
        assert row is not None, "an aggregate without GROUP BY returns one row"
        (last,) = row
        return f"gone{last}" if last is not None else "0"

    def _state_commit(self, write: _Write, fid: UUID) -> None:
        if write.key in self.done_keys:
            return
        self.report.state_commits += 1
        if self.dry_run:
            self.report.versions += len(write.deletes) + len(write.puts)
            self.written.add(fid)
            return
        try:
            self._apply(write)
        except Unavailable:
            raise
        except MemStateError as exc:
            self._fail(None, "STATE", fid, exc)


def import_memstate(
    store: MemoryStore,
    source: str | Source,
    *,
    namespace: str | None = None,
    dry_run: bool = False,
    table_prefix: str = "memstate",
    exclude_types: Iterable[str] = (),
    progress: ProgressFn | bool | None = None,
) -> ImportReport:
    """Import a MemState 0.5.1 database (a SQLite path or a PostgreSQL DSN) into `store`,
    under `namespace` (default: the store's, else "default"). Idempotent: run it again and
    only what is new is written. `dry_run` writes nothing (not even the migration) and
    reports what would be written. `progress=True` shows a rich progress bar on stderr;
    a callable gets `(phase, done, total)`. `exclude_types` leaves facts of those types out
    (e.g. MemState's LangGraph checkpoints: "langgraph_checkpoint", "langgraph_write").

    Raises SourceUnavailable when the source cannot be read and Unavailable when the target
    database drops; entries the target refuses (e.g. a payload your registered model
    rejects) are listed in `report.failed` and the rest is imported.
    """
    ns = namespace if namespace is not None else (store.namespace or "default")
    store._ns(ns)  # the same namespace checks as every write
    src = open_source(source, table_prefix=table_prefix) if isinstance(source, str) else source
    try:
        excluded = frozenset(exclude_types)
        if progress is True:
            with rich_progress() as fn:
                return _Importer(store, src, ns, dry_run, fn, excluded).run()
        return _Importer(store, src, ns, dry_run, progress or None, excluded).run()
    finally:
        if isinstance(source, str):
            src.close()


@contextlib.contextmanager
def rich_progress() -> Iterator[ProgressFn]:
    """A rich progress bar on stderr, as a ProgressFn."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    ) as bar:
        tasks: dict[str, Any] = {}

        def update(phase: str, done: int, total: int) -> None:
            if phase not in tasks:
                tasks[phase] = bar.add_task(f"{phase} (log entries + facts)", total=total)
            bar.update(tasks[phase], completed=done, total=total)

        yield update
