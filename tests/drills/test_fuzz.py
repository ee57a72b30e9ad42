"""Hostile input, fuzzed (hypothesis): whatever a model or a caller sends, every call ends in
success or a clear refusal, writes all or nothing, and never touches a row it should not.

* Python API (MemoryStore): success or a MemStateError subclass with a message, never a
  raw driver error (or any other exception type). A refused call leaves the whole database
  as it was; a successful one changes no namespace but its own and stores exactly what was
  given (namespace, session and payload round-trip).
* SQL functions, called directly by a login role IN memstate_app under RLS (granted `fz*`):
  success, a memstate SQLSTATE (MSV01 / MSC01 / MSN01), a policy refusal (42501), or a
  documented data-error class (22 data exception, 23 integrity, 54 program limit). Never a
  syntax error (which would mean injected SQL got parsed), never an internal error. The
  `victim` namespace is hashed before and after every case.

Budget: MEMSTATE_FUZZ_PROFILE=default (`make test`, a few seconds per family) or `long`
(`make fuzz`). The cases run per family are reported in pytest's terminal summary.
"""

from __future__ import annotations

import json
import math
import os
import secrets
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from memstate_pg import Fact, MemoryStore, MemStateError, ValidationFailed, security
from memstate_pg.mirrors.memory import InMemoryMirror
from memstate_pg.types import check_json, check_name
from memstate_pg.vectors import vector_text
from tests.integration.test_rls import with_user

# --- budget and bookkeeping ------------------------------------------------------------------

_COMMON = dict(
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
        HealthCheck.filter_too_much,
    ],
)
settings.register_profile("memstate-fuzz-default", max_examples=40, **_COMMON)
settings.register_profile("memstate-fuzz-long", max_examples=600, **_COMMON)
PROFILE = os.environ.get("MEMSTATE_FUZZ_PROFILE", "default")
FUZZ = settings.get_profile(f"memstate-fuzz-{PROFILE}")

CASES: Counter[str] = Counter()  # family -> cases run
OUTCOMES: Counter[tuple[str, str]] = Counter()  # (family, "ok" | error class | SQLSTATE) -> n


class _Summary:
    """Reports the fuzz counts at the end of the pytest run (a late-registered plugin)."""

    def pytest_terminal_summary(self, terminalreporter) -> None:
        if not CASES:
            return
        terminalreporter.write_sep("-", f"fuzz ({PROFILE} profile): {sum(CASES.values())} cases")
        for family, n in sorted(CASES.items()):
            outcomes = ", ".join(
                f"{k} {v}" for (f, k), v in sorted(OUTCOMES.items()) if f == family
            )
            terminalreporter.write_line(f"  {family}: {n} ({outcomes})")


@pytest.fixture(scope="module", autouse=True)
def _fuzz_summary(request) -> Iterator[None]:
    manager = request.config.pluginmanager
    if not manager.has_plugin("memstate-fuzz-summary"):
        manager.register(_Summary(), "memstate-fuzz-summary")
    yield
    print(f"\nfuzz cases ({PROFILE}): {dict(CASES)}")


def attempt(family: str, call: Callable[[], Any]) -> tuple[bool, Any]:
    """Run one case of the Python API: (True, result) or (False, the MemStateError).
    Any other exception propagates and fails the test."""
    CASES[family] += 1
    try:
        result = call()
    except MemStateError as exc:
        assert str(exc).strip(), f"{type(exc).__name__} without a message"
        OUTCOMES[family, type(exc).__name__] += 1
        return False, exc
    OUTCOMES[family, "ok"] += 1
    return True, result


# --- strategies -----------------------------------------------------------------------------------

INJECTIONS = [
    "'",
    "''",
    '"',
    "\\",
    "';--",
    "'); DROP TABLE memstate.facts; --",
    "1' OR '1'='1",
    "$$; DROP SCHEMA memstate CASCADE; $$",
    "%s",
    "%(namespace)s",
    "{}",
    "[",
    "a.b",
    "a..b",
    ".",
    "\u202e\u0645\u0631\u062d\u0628\u0627",
    "𝔘𝔫𝔦𝔠𝔬𝔡𝔢",
    "e\u0301",
    "\ufeff",
    "\u2028",
    "%",
    "_",
    "*",
    "NULL",
    "null",
    "true",
    "-0",
    "1e999",
    "\t\n\r",
    " ",
    "\x7f",
    "\x1b[31m",
    "victim",
    "fz",
]
HUGE = ["x" * 250, "é" * 70_000, "z" * (1 << 20) + "!", "y" * (2 << 20)]
hostile_text = st.one_of(
    st.sampled_from(INJECTIONS),
    st.text(max_size=30),
    st.text(st.characters(exclude_categories=()), max_size=12),  # lone surrogates included
    st.sampled_from(["a\x00b", "\x00", "\ud800", "x\udfff"]),
    st.sampled_from(HUGE[:2]),
)


fz_namespace = st.one_of(st.just("fz"), hostile_text.map(lambda t: "fz" + t), hostile_text)


def _deep(depth: int, leaf: Any = 1) -> Any:
    value = leaf
    for i in range(depth):
        value = [value] if i % 2 else {"k": value}
    return value


json_leaf = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(10**400), max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    hostile_text,
    st.sampled_from(HUGE),
)
json_key = st.one_of(
    hostile_text,
    st.integers(),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=True),
    st.tuples(st.integers()),
)
json_value = st.recursive(
    json_leaf,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(json_key, inner, max_size=4)
    ),
    max_leaves=12,
)
# JSON PostgreSQL can hold, with hostile-looking text: these must be stored verbatim
clean_text = st.one_of(
    st.sampled_from([t for t in INJECTIONS if "\x00" not in t]),
    st.text(st.characters(exclude_categories=("Cs",), exclude_characters="\x00"), max_size=30),
)
valid_json = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(10**400), max_value=10**400),
        st.floats(allow_nan=False, allow_infinity=False),
        clean_text,
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(clean_text, inner, max_size=4)
    ),
    max_leaves=16,
)
payloads = st.one_of(
    st.dictionaries(clean_text, valid_json, max_size=6),
    st.dictionaries(clean_text, valid_json, min_size=1, max_size=6),
    st.dictionaries(json_key, json_value, max_size=5),
    st.dictionaries(st.text(max_size=10), json_value, max_size=5),
    st.sampled_from([100, 199, 200, 201, 1000, 5000]).map(
        lambda d: {"text": "deep", "x": _deep(d)}
    ),
    json_value,  # not even an object, most of the time
)
vector_items = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.floats(-1, 1),
    st.integers(-(10**40), 10**40),
    st.sampled_from([1e39, -1e39, 5e-324, None, "1", True]),
)
vectors = st.one_of(
    st.integers(0, 500).map(lambda n: [0.5] * n),
    st.lists(vector_items, min_size=384, max_size=384),
    st.tuples(st.integers(0, 383), vector_items).map(
        lambda t: [0.1] * t[0] + [t[1]] + [0.1] * (383 - t[0])
    ),
    st.sampled_from([[], "[1,2,3]", None, [[0.1] * 384], {"a": 1}, 3.0]),
)


texts = st.one_of(st.just(""), st.just("   "), hostile_text, st.sampled_from(HUGE))


# --- fixtures and checks -------------------------------------------------------------------------

TABLES = ("facts", "fact_versions", "commits", "outbox")


GLOBAL = ("types", "embedding_models", "config")


def state(
    conn: psycopg.Connection,
    *,
    namespace: str | None = None,
    exclude: str | None = None,
    mirrors: bool = True,
) -> dict:
    """A hash of every row per table: of one namespace, of all but one, or of everything
    (the registries included; `mirrors=False` leaves the mirror registry out)."""
    out = {}
    tables = (
        TABLES if namespace is not None else (*TABLES, *GLOBAL, *(("mirrors",) if mirrors else ()))
    )
    for table in tables:
        where = ""
        params: list[Any] = []
        if table in TABLES and namespace is not None:
            where, params = "WHERE namespace = %s", [namespace]
        elif table in TABLES and exclude is not None:
            where, params = "WHERE namespace IS DISTINCT FROM %s", [exclude]
        out[table] = conn.execute(
            f"SELECT count(*) || ':' || coalesce(md5(string_agg(t::text, '|' ORDER BY t::text)), '') "
            f"FROM memstate.{table} t {where}",
            params,
        ).fetchone()[0]
    return out


@pytest.fixture
def fz(mem: MemoryStore, dsn: str) -> Iterator[dict]:
    """The store, an admin connection, a watched mirror, a `free` type (no model), and a
    victim namespace with history that no case may change."""
    mem.register_schema("free", None)
    mem.add_mirror(InMemoryMirror(), "watch", backfill=False)
    victim = mem.commit(Fact(type="note", payload={"text": "victim"}), namespace="victim")
    mem.update(victim, {"payload": {"text": "victim v2"}})
    mem.commit(Fact(type="profile", payload={"field": "city", "value": "V"}), namespace="victim")
    anchor = mem.commit(Fact(type="note", payload={"text": "anchor"}), namespace="fz")
    with (
        psycopg.connect(dsn, autocommit=True) as admin,
        MemoryStore(dsn, namespace="fz", max_size=2) as bound,
        MemoryStore(dsn, strict_types=True, max_size=1) as strict,
    ):
        bound.register_schema("free", None)
        yield {
            "mem": mem,
            "bound": bound,
            "strict": strict,
            "admin": admin,
            "victim": victim,
            "anchor": anchor,
        }


def same_json(a: Any, b: Any) -> bool:
    """JSON equality where numbers compare by value (jsonb keeps decimals, not floats)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return a == b or math.isclose(float(a), float(b), rel_tol=1e-15)
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(same_json(a[k], b[k]) for k in a)
    if isinstance(a, list | tuple) and isinstance(b, list | tuple):
        return len(a) == len(b) and all(same_json(x, y) for x, y in zip(a, b, strict=True))
    return a == b


def fact(**fields: Any) -> Fact:
    """A Fact holding exactly these values: pydantic's own checks are bypassed when they
    would refuse, so the hostile value reaches the store's API."""
    try:
        return Fact(**fields)
    except Exception:
        return Fact.model_construct(
            **{
                "id": None,
                "namespace": None,
                "session_id": None,
                "content": None,
                "embedding": None,
                "embedding_model": None,
                **fields,
            }
        )


def guarded_write(
    fz: dict, family: str, namespace: Any, call: Callable[[], Any]
) -> tuple[bool, Any]:
    """A write: all or nothing; on success nothing outside `namespace` changed (the mirror
    registry aside), and the victim namespace never changes."""
    admin = fz["admin"]
    before = state(admin)
    victim = state(admin, namespace="victim")
    scope = namespace if isinstance(namespace, str) and _sql_text(namespace) == namespace else None
    others = state(admin, exclude=scope, mirrors=False)
    ok, result = attempt(family, call)
    if ok:
        assert state(admin, exclude=scope, mirrors=False) == others, (
            "a write changed another namespace"
        )
    else:
        assert state(admin) == before, f"refused ({result!r}) but wrote something"
    assert state(admin, namespace="victim") == victim
    return ok, result


# --- the Python API -------------------------------------------------------------------------------


@FUZZ
@given(payload=payloads, type_=st.sampled_from(["free", "free", "free", "note", "profile"]))
def test_fuzz_payloads(fz, payload, type_):
    mem = fz["mem"]
    ok, fid = guarded_write(
        fz,
        "python.payload",
        "fz",
        lambda: mem.commit(fact(type=type_, payload=payload), namespace="fz"),
    )
    if ok and type_ == "free":
        assert same_json(mem.get(fid).payload, payload)


@FUZZ
@given(
    namespace=fz_namespace,
    session=st.one_of(st.none(), hostile_text),
    actor=st.one_of(st.none(), hostile_text),
    reason=st.one_of(st.none(), hostile_text, st.just("r" * 3000)),
    key=st.one_of(st.none(), hostile_text),
)
def test_fuzz_names(fz, namespace, session, actor, reason, key):
    assume(namespace != "victim")
    if key is not None and len(key) < 150:
        key += uuid.uuid4().hex  # a fresh key: a replay would return an earlier (maybe undone) fact
    mem = fz["mem"]
    ok, fid = guarded_write(
        fz,
        "python.names",
        namespace,
        lambda: mem.commit(
            Fact(type="note", payload={"text": "named"}),
            namespace=namespace,
            session_id=session,
            actor=actor,
            reason=reason,
            idempotency_key=key,
        ),
    )
    if ok:
        stored = mem.get(fid)
        assert (stored.namespace, stored.session_id) == (namespace, session)
        assert fid in {f.id for f in mem.query(namespace=namespace, session_id=session)}
        assert [
            h.fact.id for h in mem.search("named", namespace=namespace, k=1, session_id=session)
        ] == [fid]
        assert [v.fact_id for v in mem.history(namespace=namespace)][-1] == fid
        assert fid in {f.id for f in mem.as_of(stored.commit_seq, namespace=namespace)}
        guarded_write(
            fz,
            "python.names",
            namespace,
            lambda: mem.rollback(
                namespace=namespace, session_id=session, actor=actor, reason=reason
            ),
        )
    else:
        for read in (
            lambda: mem.query(namespace=namespace),
            lambda: mem.search("x", namespace=namespace),
            lambda: mem.history(namespace=namespace),
            lambda: mem.as_of(1, namespace=namespace),
            lambda: mem.commits(namespace=namespace),
        ):
            attempt("python.names", read)


@FUZZ
@given(
    type_=hostile_text,
    payload=st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=2),
)
def test_fuzz_type_names(fz, type_, payload):
    """Unregistered types are schemaless (stored as given) when their name is a valid name,
    refused with nothing written otherwise; a strict_types store refuses them all."""
    mem = fz["mem"]
    try:
        check_name("type", type_)
        check_json("payload", payload)  # the payload's keys and values are fuzzed too
        valid = True
    except ValidationFailed:
        valid = False
    ok, fid = guarded_write(
        fz,
        "python.type",
        "fz",
        lambda: mem.commit(fact(type=type_, payload=payload), namespace="fz"),
    )
    assert ok == valid, (type_, fid)
    if ok:
        stored = mem.get(fid)
        assert stored is not None and stored.type == type_ and stored.payload == payload
        assert fid in [f.id for f in mem.query(type=type_, namespace="fz")]
    ok, _ = guarded_write(
        fz,
        "python.type.strict",
        "fz",
        lambda: fz["strict"].commit(fact(type=type_, payload=payload), namespace="fz"),
    )
    assert not ok  # none of them is registered
    attempt("python.type", lambda: mem.query(type=type_, namespace="fz"))
    attempt("python.type", lambda: mem.search("x", type=type_, namespace="fz"))


@FUZZ
@given(
    filters=st.one_of(
        st.dictionaries(json_key, json_value, max_size=3),
        st.dictionaries(hostile_text, st.one_of(st.text(max_size=5), st.integers()), max_size=3),
        json_value,
    )
)
def test_fuzz_filters(fz, filters):
    mem = fz["mem"]
    for call in (
        lambda: mem.query(filters=filters, namespace="fz"),
        lambda: mem.search("anchor", filters=filters, namespace="fz"),
    ):
        ok, found = attempt("python.filter", call)
        if ok:
            facts = [getattr(x, "fact", x) for x in found]
            assert all(f.namespace == "fz" for f in facts)


@FUZZ
@given(vector=vectors, query=vectors)
def test_fuzz_vectors(fz, vector, query):
    mem = fz["mem"]
    guarded_write(
        fz,
        "python.vector",
        "fz",
        lambda: mem.commit(
            fact(type="note", payload={"text": "vec"}, embedding=vector), namespace="fz"
        ),
    )
    ok, hits = attempt("python.vector", lambda: mem.search(query, namespace="fz", k=3))
    if ok:
        assert all(h.fact.namespace == "fz" and math.isfinite(h.score) for h in hits)


@FUZZ
@given(content=texts, query=texts)
def test_fuzz_text(fz, content, query):
    mem = fz["mem"]
    ok, fid = guarded_write(
        fz,
        "python.text",
        "fz",
        lambda: mem.commit(
            fact(type="note", payload={"text": "t"}, content=content), namespace="fz"
        ),
    )
    if ok:
        assert mem.get(fid).content == content
    attempt("python.text", lambda: mem.search(query, namespace="fz", k=2))


@FUZZ
@given(
    changes=st.one_of(
        st.dictionaries(
            st.one_of(
                st.sampled_from(
                    ["payload", "content", "session_id", "namespace", "type", "version", "id"]
                ),
                hostile_text,
            ),
            json_value,
            max_size=3,
        ),
        json_leaf,
        st.lists(json_value, max_size=3),
    ),
    expected=st.one_of(st.none(), st.integers(-3, 3), st.just(2**40)),
    target=st.sampled_from(["anchor", "victim", "random", "garbage"]),
)
def test_fuzz_updates_and_deletes(fz, changes, expected, target):
    """Through a store bound to namespace fz: the victim's fact is out of reach."""
    bound = fz["bound"]
    fid = {
        "anchor": fz["anchor"],
        "victim": fz["victim"],
        "random": uuid.uuid4(),
        "garbage": "'; --",
    }[target]
    guarded_write(
        fz, "python.update", "fz", lambda: bound.update(fid, changes, expected_version=expected)
    )
    guarded_write(fz, "python.update", "fz", lambda: bound.delete(fid, expected_version=expected))
    if bound.get(fz["anchor"]) is None:  # put it back for the next case
        bound.commit(Fact(id=fz["anchor"], type="note", payload={"text": "anchor"}))


@FUZZ
@given(
    seq=st.one_of(
        st.integers(-(2**63), 2**63 - 1),
        st.integers(-5, 50),
        st.sampled_from([True, "1", None, 2.0]),
    ),
    steps=st.one_of(
        st.integers(-2, 5),
        st.integers(-(2**31), 2**31 - 1),
        st.sampled_from([True, 2.5, "1", None]),
    ),
)
def test_fuzz_undo_arguments(fz, seq, steps):
    """Through a store bound to namespace fz: reverting the victim's commits is refused."""
    bound = fz["bound"]
    guarded_write(fz, "python.undo", "fz", lambda: bound.revert(seq))
    guarded_write(fz, "python.undo", "fz", lambda: bound.rollback(steps))
    attempt("python.undo", lambda: bound.as_of(seq))
    attempt("python.undo", lambda: bound.history(seq))
    attempt("python.undo", lambda: bound.commits(limit=3))


@FUZZ
@given(
    name=st.one_of(
        hostile_text,
        st.from_regex(r"[A-Za-z0-9_.-]{1,63}", fullmatch=True),
        st.sampled_from(["a" * 64, "ok-name", "x.y_z", None, 5]),
    ),
    namespaces=st.one_of(st.none(), st.lists(hostile_text, max_size=3)),
    fields=st.lists(hostile_text, max_size=3),
)
def test_fuzz_mirror_names(fz, name, namespaces, fields):
    mem = fz["mem"]
    ok, _ = guarded_write(
        fz,
        "python.mirror",
        None,
        lambda: mem.add_mirror(
            InMemoryMirror(), name, namespaces=namespaces, metadata_fields=fields, backfill=False
        ),
    )
    if ok:
        registered = "memory" if name is None else name  # None: the mirror's kind
        assert registered in {
            r[0] for r in fz["admin"].execute("SELECT name FROM memstate.mirrors")
        }
        assert registered in mem.status()
        attempt("python.mirror", lambda: mem.requeue(registered))
        guarded_write(fz, "python.mirror", None, lambda: mem.remove_mirror(registered))
    else:
        attempt("python.mirror", lambda: mem.requeue(name))
        attempt("python.mirror", lambda: mem.remove_mirror(name))


# --- defects the fuzzer found, now fixed ----------------------------------------------------------
# Inputs that once ended in a raw exception (or a silent surprise): kept as regression cases.

FOUND_DEFECTS: dict[str, Callable[[dict], Any]] = {
    "update: non-string change keys (TypeError in sorted)": lambda fz: fz["bound"].update(
        fz["anchor"], {None: 1, "x": 2}
    ),
    "rollback: steps beyond int4 (UndefinedFunction)": lambda fz: fz["mem"].rollback(
        2**31, namespace="fz"
    ),
    "revert: seq beyond int8 (UndefinedFunction)": lambda fz: fz["mem"].revert(2**63),
    "as_of: seq beyond int8 (UndefinedFunction)": lambda fz: fz["mem"].as_of(
        -(2**63) - 1, namespace="fz"
    ),
    "query: limit=True (DatatypeMismatch)": lambda fz: fz["mem"].query(namespace="fz", limit=True),
    "history: negative limit (InvalidRowCountInLimitClause)": lambda fz: fz["mem"].history(
        namespace="fz", limit=-1
    ),
    "commits: negative limit (InvalidRowCountInLimitClause)": lambda fz: fz["mem"].commits(
        namespace="fz", limit=-1
    ),
    "rollback: lone surrogate in actor (UnicodeEncodeError)": lambda fz: fz["mem"].rollback(
        namespace="fz", actor="\ud800"
    ),
    "rollback: lone surrogate in session_id (UnicodeEncodeError)": lambda fz: fz["mem"].rollback(
        namespace="fz", session_id="\ud800"
    ),
    "delete: lone surrogate in actor (UnicodeEncodeError)": lambda fz: fz["mem"].delete(
        fz["anchor"], actor="\ud800"
    ),
    "revert: lone surrogate in reason (UnicodeEncodeError)": lambda fz: fz["mem"].revert(
        1, reason="\ud800"
    ),
    "promote_session: lone surrogate in actor (UnicodeEncodeError)": lambda fz: fz[
        "mem"
    ].promote_session("s", namespace="fz", actor="\ud800"),
    "transaction: lone surrogate in reason (UnicodeEncodeError)": lambda fz: (
        fz["mem"].transaction(namespace="fz", reason="\ud800").__enter__()
    ),
    "commit: lone surrogate in embedding_model (UnicodeEncodeError)": lambda fz: fz["mem"].commit(
        Fact(type="note", payload={"text": "x"}, embedding=[0.1] * 3, embedding_model="m\ud800"),
        namespace="fz",
    ),
    "commit_many: an item that is not a Fact (AttributeError)": lambda fz: fz["mem"].commit_many(
        [Fact(type="note", payload={"text": "x"}), "x"], namespace="fz"
    ),
    "commit: all-zero vector (accepted, then never found by search)": lambda fz: fz["mem"].commit(
        Fact(type="note", payload={"text": "x"}, embedding=[0.0] * 384), namespace="fz"
    ),
    "search: all-zero query vector (NaN scores)": lambda fz: fz["mem"].search(
        [0.0] * 384, namespace="fz"
    ),
    "commit + search: a vector whose float4 norm overflows (NaN scores)": lambda fz: fz[
        "mem"
    ].commit(
        Fact(type="note", payload={"text": "x"}, embedding=[2e19] + [0.1] * 383), namespace="fz"
    ),
}


@pytest.mark.parametrize("case", list(FOUND_DEFECTS))
def test_found_defect_stays_fixed(fz, case):
    with pytest.raises(MemStateError):
        FOUND_DEFECTS[case](fz)


# --- the SQL functions, as a tenant under RLS ---------------------------------------------------------

ALLOWED_SQLSTATES = {"MSV01", "MSC01", "MSN01", "42501"}
ALLOWED_CLASSES = {"22", "23", "54"}  # data exception, integrity constraint, program limit


def _sql_text(text: str) -> str:
    """What a SQL client can send at all: no NUL, no lone surrogate (psycopg refuses those
    before sending, see test_sql_client_refuses_unencodable_text)."""
    return text.replace("\x00", "\\0").encode("utf-8", "replace").decode("utf-8")


sql_text = hostile_text.map(_sql_text)
json_texts = st.one_of(
    st.one_of(st.dictionaries(json_key, json_value, max_size=5), json_value)
    .map(lambda p: json.dumps(p, default=repr, allow_nan=True, ensure_ascii=False, skipkeys=True))
    .map(_sql_text),
    st.sampled_from(
        [
            '{"text": "a\\u0000b"}',
            '{"text": "\\ud800"}',
            "{",
            "[]",
            "null",
            '{"a":' * 3000 + "1" + "}" * 3000,
            '{"a": 1e999}',
            '{"a": NaN}',
            "",
            "'; DROP TABLE x; --",
        ]
    ),
    sql_text,
)
vector_texts = st.one_of(
    vectors.map(
        lambda v: (
            vector_text(v)
            if isinstance(v, list) and all(isinstance(x, float) for x in v)
            else str(v)
        )
    ).map(_sql_text),
    st.sampled_from(
        [
            "[]",
            "[1,2",
            "[NaN]",
            "[Infinity]",
            "[1e39]",
            "['1']",
            "",
            "[" + ",".join(["0.1"] * 384) + "]",
        ]
    ),
)


@pytest.fixture
def tenant(fz, dsn) -> Iterator[psycopg.Connection]:
    """A connection as a login role IN memstate_app, granted `fz*`, with RLS on."""
    security.create_roles(dsn)
    security.enable_rls(dsn)
    name, password = f"ms_fuzz_{uuid.uuid4().hex[:10]}", secrets.token_hex(12)
    security.create_login(dsn, name, "memstate_app", password=password)
    security.grant(dsn, name, ["fz*"])
    try:
        with psycopg.connect(with_user(dsn, name, password), autocommit=True) as conn:
            yield conn
    finally:
        security.drop_login(dsn, name)


def sql_case(fz: dict, conn: psycopg.Connection, family: str, query: str, params: list) -> str:
    """One call of a SQL function; returns "ok" or its SQLSTATE, after the checks."""
    admin = fz["admin"]
    victim = state(admin, namespace="victim")
    before = state(admin)
    CASES[family] += 1
    try:
        with conn.transaction():
            conn.execute(query, params).fetchall()
        outcome = "ok"
    except psycopg.Error as exc:
        outcome = exc.sqlstate or "client"
        assert exc.sqlstate is not None, f"client-side error {exc!r}"
        assert outcome in ALLOWED_SQLSTATES or outcome[:2] in ALLOWED_CLASSES, f"{outcome}: {exc}"
        assert state(admin) == before, f"refused ({outcome}) but wrote something"
    OUTCOMES[family, outcome] += 1
    assert state(admin, namespace="victim") == victim
    return outcome


GOOD_VECTOR = "[" + ",".join(["0.25"] * 384) + "]"
good_payloads = st.dictionaries(st.text(max_size=8), json_value, max_size=4).map(
    lambda d: _sql_text(
        json.dumps(
            {**d, "text": "t", "field": "f", "value": "v"},
            allow_nan=True,
            ensure_ascii=False,
            skipkeys=True,
            default=repr,
        )
    )
)


@st.composite
def perturbed(draw, valid: dict[str, Any], hostile: dict[str, st.SearchStrategy]) -> dict[str, Any]:
    """Valid arguments with up to three of them replaced by hostile values (often none or
    one, so that most cases get deep into the function before anything can refuse)."""
    args = dict(valid)
    for name in draw(st.lists(st.sampled_from(sorted(hostile)), max_size=3, unique=True)):
        args[name] = draw(hostile[name])
    return args


COMMIT_ARGS = perturbed(
    {
        "namespace": "fz",
        "type": "note",
        "payload": '{"text": "ok"}',
        "content": None,
        "vector": GOOD_VECTOR,
        "model": "__model__",
        "session": None,
        "fact_id": None,
    },
    {
        "namespace": st.one_of(sql_text.map(lambda t: "fz" + t), sql_text),
        "type": st.one_of(st.sampled_from(["free", "profile", "event"]), sql_text),
        "payload": st.one_of(good_payloads, json_texts),
        "content": sql_text,
        "vector": vector_texts,
        "model": sql_text,
        "session": sql_text,
        "fact_id": st.one_of(
            st.sampled_from(["__victim__", "__anchor__", "not-a-uuid", "'; --"]),
            st.uuids().map(str),
        ),
    },
)


@FUZZ
@given(args=COMMIT_ARGS)
def test_fuzz_sql_commit_fact(fz, tenant, args):
    model = fz["mem"].embedder.model if args["model"] == "__model__" else args["model"]
    fact_id = {"__victim__": str(fz["victim"]), "__anchor__": str(fz["anchor"])}.get(
        args["fact_id"], args["fact_id"]
    )
    sql_case(
        fz,
        tenant,
        "sql.commit_fact",
        "SELECT memstate.commit_fact(%s, %s, %s::jsonb, %s, %s::vector, %s, %s, %s::uuid)",
        [
            args["namespace"],
            args["type"],
            args["payload"],
            args["content"],
            args["vector"],
            model,
            args["session"],
            fact_id,
        ],
    )


SEARCH_ARGS = perturbed(
    {
        "namespace": "fz",
        "vector": GOOD_VECTOR,
        "k": 5,
        "filter": None,
        "type": None,
        "model": None,
        "session": None,
    },
    {
        "namespace": sql_text,
        "vector": vector_texts,
        "k": st.integers(-5, 2000),
        "filter": json_texts,
        "type": st.one_of(st.just("note"), sql_text),
        "model": st.one_of(st.just("__model__"), sql_text),
        "session": sql_text,
    },
)


@FUZZ
@given(args=SEARCH_ARGS)
def test_fuzz_sql_search(fz, tenant, args):
    model = fz["mem"].embedder.model if args["model"] == "__model__" else args["model"]
    params = [
        args["namespace"],
        args["vector"],
        args["k"],
        args["filter"],
        args["type"],
        model,
        args["session"],
    ]
    outcome = sql_case(
        fz,
        tenant,
        "sql.search",
        "SELECT * FROM memstate.search(%s, %s::vector, %s, %s::jsonb, %s, %s, %s)",
        params,
    )
    if outcome == "ok":
        rows = tenant.execute(
            "SELECT f.namespace FROM memstate.search(%s, %s::vector, %s, %s::jsonb, %s, %s, %s) s "
            "JOIN memstate.facts f USING (fact_id)",
            params,
        ).fetchall()
        assert {r[0] for r in rows} <= {args["namespace"]}


@FUZZ
@given(
    namespace=st.one_of(st.just("fz"), st.just("victim"), sql_text),
    steps=st.integers(-3, 5),
    seq=st.one_of(st.integers(-3, 40), st.integers(-(2**63), 2**63 - 1)),
    fact_id=st.one_of(
        st.sampled_from(["__victim__", "__anchor__", "zz", "'; --"]), st.uuids().map(str)
    ),
    session=st.one_of(st.none(), sql_text),
)
def test_fuzz_sql_undo_and_reads(fz, tenant, namespace, steps, seq, fact_id, session):
    fact_id = {"__victim__": str(fz["victim"]), "__anchor__": str(fz["anchor"])}.get(
        fact_id, fact_id
    )
    for query, params in (
        ("SELECT memstate.rollback(%s, %s, %s)", [namespace, steps, session]),
        ("SELECT memstate.revert(%s)", [seq]),
        ("SELECT memstate.delete_fact(%s::uuid)", [fact_id]),
        ("SELECT * FROM memstate.history(%s::uuid)", [fact_id]),
        ("SELECT * FROM memstate.as_of(%s, %s)", [namespace, seq]),
        ("SELECT memstate.promote_session(%s, %s)", [namespace, session]),
        ("SELECT memstate.discard_session(%s, %s)", [namespace, session]),
    ):
        sql_case(fz, tenant, "sql.undo_reads", query, params)
    assert fz["mem"].get(fz["victim"]).version == 2


def test_sql_client_refuses_unencodable_text(tenant):
    """NUL bytes and lone surrogates never reach the server: psycopg refuses them."""
    for bad in ("a\x00b", "\ud800"):
        with pytest.raises((psycopg.DataError, UnicodeEncodeError)):
            tenant.execute("SELECT memstate.rollback(%s, 1)", [bad])
