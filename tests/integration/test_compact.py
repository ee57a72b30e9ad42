"""Retention (memstate_pg.compaction, `memstate-pg compact`): what compaction keeps, what it
removes, the horizon it records, and that as_of / rollback / revert inside the window give
the same answers before and after it while older points raise HistoryCompacted.

History is made "old" by backdating the commits of the first phase by two days (as the
superuser, with triggers off for that one UPDATE), so the tests never wait for a window.
"""

from __future__ import annotations

import json
import threading
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from psycopg.rows import dict_row

from memstate_pg import (
    AsyncMemoryStore,
    Fact,
    HistoryCompacted,
    MemoryStore,
    PermissionDenied,
    security,
)
from memstate_pg.compaction import parse_duration, run_compact
from tests.integration.test_cli import assert_fails, cli
from tests.integration.test_rls import login, secured, stores  # noqa: F401 (fixtures)
from tests.support.loop import on

NS = "agent"


def backdate(dsn: str, upto_seq: int, days: float = 2) -> None:
    """Make the commits up to `upto_seq` (and their versions) `days` old."""
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")  # append-only triggers off
        conn.execute(
            "UPDATE memstate.commits SET created_at = created_at - %s * interval '1 day' "
            "WHERE seq <= %s",
            [days, upto_seq],
        )
        conn.execute(
            "UPDATE memstate.fact_versions SET created_at = created_at - %s * interval '1 day' "
            "WHERE seq <= %s",
            [days, upto_seq],
        )


def last_seq(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT max(seq) FROM memstate.commits").fetchone()[0]


def rows(dsn: str, query: str, params: Any = None) -> list[dict[str, Any]]:
    with psycopg.connect(dsn, row_factory=dict_row) as conn:
        return conn.execute(query, params).fetchall()


def state(facts: list[Fact]) -> list[tuple]:
    return sorted((str(f.id), f.version, json.dumps(f.payload, sort_keys=True)) for f in facts)


def undo_outcomes(dsn: str, calls: list[tuple[str, list[Any]]]) -> list[Any]:
    """Each undo call run in a transaction that is rolled back: the live state it would
    leave (or the SQLSTATE it raised)."""
    out: list[Any] = []
    with psycopg.connect(dsn) as conn:
        for query, params in calls:
            try:
                with conn.transaction(force_rollback=True):
                    conn.execute(query, params)
                    out.append(
                        conn.execute(
                            "SELECT fact_id::text, payload::text, encode(sha256("
                            "embedding::text::bytea), 'hex') FROM memstate.facts "
                            "WHERE namespace = %s ORDER BY 1",
                            [NS],
                        ).fetchall()
                    )
            except psycopg.Error as exc:
                out.append(exc.sqlstate)
    return out


def make_history(mem: MemoryStore, dsn: str) -> dict[str, Any]:
    """Old phase (backdated): a fact updated 5 times, one deleted, one later updated in the
    window, one deleted in the window, an undone commit; then the window's commits."""
    a = mem.commit(Fact(type="note", payload={"text": "a0"}), namespace=NS)
    for i in range(1, 6):
        mem.update(a, {"payload": {"text": f"a{i}"}})
    b = mem.commit(Fact(type="note", payload={"text": "b0"}), namespace=NS)
    mem.update(b, {"payload": {"text": "b1"}})
    mem.delete(b)
    c = mem.commit(Fact(type="note", payload={"text": "c0"}), namespace=NS)
    mem.update(c, {"payload": {"text": "c1"}})
    e = mem.commit(Fact(type="note", payload={"text": "e0"}), namespace=NS)
    mem.commit(Fact(type="note", payload={"text": "oops"}), namespace=NS)
    mem.rollback(namespace=NS)  # an undone commit and its rollback, both old
    old = last_seq(dsn)
    backdate(dsn, old)
    # the window
    mem.update(c, {"payload": {"text": "c2"}})
    mem.update(a, {"payload": {"text": "a6"}})
    d = mem.commit(Fact(type="note", payload={"text": "d0"}), namespace=NS)
    mem.delete(e)
    mem.update(d, {"payload": {"text": "d1"}})
    return {"a": a, "b": b, "c": c, "d": d, "e": e, "old": old, "new": last_seq(dsn)}


def test_inside_the_window_nothing_changes_outside_it_is_refused(mem: MemoryStore, dsn: str):
    h = make_history(mem, dsn)
    old, new = h["old"], h["new"]
    points = list(range(old, new + 1))
    as_of_before = {s: state(mem.as_of(s, namespace=NS)) for s in points}
    window = [r["seq"] for r in rows(dsn, "SELECT seq FROM memstate.commits WHERE seq > %s", [old])]
    undo_calls = [("SELECT memstate.rollback(%s, %s)", [NS, k]) for k in (1, 2, 3)]
    undo_calls += [("SELECT memstate.revert(%s)", [s]) for s in window]
    undo_before = undo_outcomes(dsn, undo_calls)
    live_before = state(mem.query(namespace=NS))
    versions_before = {
        r["fact_id"]: r["n"]
        for r in rows(
            dsn, "SELECT fact_id, count(*) AS n FROM memstate.fact_versions GROUP BY fact_id"
        )
    }

    report = mem.compact(keep_versions=2, older_than=timedelta(days=1), namespace=NS)

    assert [(n.namespace, n.horizon_seq) for n in report.namespaces] == [(NS, old)]
    assert {s: state(mem.as_of(s, namespace=NS)) for s in points} == as_of_before
    assert undo_outcomes(dsn, undo_calls) == undo_before
    assert state(mem.query(namespace=NS)) == live_before

    kept = {}
    for r in rows(
        dsn,
        "SELECT fact_id, array_agg(version ORDER BY version) AS v, "
        "array_agg(op ORDER BY version) AS ops FROM memstate.fact_versions GROUP BY fact_id",
    ):
        kept[r["fact_id"]] = (r["v"], r["ops"])
    assert kept[h["a"]][0] == [6, 7]  # a0..a5 old: keep 2 newest (a5 is also the base)
    assert kept[h["b"]] == ([3], ["delete"])  # deleted before the window: its tombstone
    assert kept[h["c"]][0] == [2, 3]  # c1 (the base, among the 2 newest) and c2 (window)
    assert kept[h["d"]][0] == [1, 2] and kept[h["e"]][0] == [1, 2]  # in the window / 2 newest
    assert report.versions_deleted == sum(versions_before.values()) - sum(
        len(v) for v, _ in kept.values()
    )
    # the undone commit's fact: deleted before the window by the rollback -> tombstone only
    oops = [fid for fid in kept if fid not in {h["a"], h["b"], h["c"], h["d"], h["e"]}]
    assert len(oops) == 1 and kept[oops[0]][1] == ["delete"]
    # commits without versions are gone, the window's are all there
    left = [r["seq"] for r in rows(dsn, "SELECT seq FROM memstate.commits ORDER BY seq")]
    assert set(window) <= set(left)
    assert report.commits_deleted == old - len([s for s in left if s <= old])
    assert report.commits_deleted > 0

    # outside the window: a clear error naming the horizon
    with pytest.raises(HistoryCompacted, match=f"commit {old}"):
        mem.as_of(old - 1, namespace=NS)
    with pytest.raises(HistoryCompacted):
        mem.as_of(datetime.now(UTC) - timedelta(days=3), namespace=NS)
    with pytest.raises(HistoryCompacted, match="rollback"):
        mem.rollback(len(window) + 1, namespace=NS)
    with pytest.raises(HistoryCompacted, match="revert"):
        mem.revert(old)
    assert mem.history(h["a"])[0].version == 6  # history lists what is kept

    again = mem.compact(keep_versions=2, older_than=timedelta(days=1), namespace=NS)
    assert (again.versions_deleted, again.commits_deleted) == (0, 0)


def test_vectors_are_materialised_on_the_oldest_kept_version(mem: MemoryStore, dsn: str):
    """Version rows carry a vector only when it changed (NULL: as the previous version);
    removing the version that carried it must put it on the oldest one kept."""
    a = mem.commit(Fact(type="note", payload={"text": "same"}), namespace=NS)
    for i in range(4):
        mem.update(a, {"payload": {"text": "same", "tags": [str(i)]}})  # same text: same vector
    with psycopg.connect(dsn, autocommit=True) as conn, conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        conn.execute("UPDATE memstate.fact_versions SET embedding = NULL WHERE version > 1")
    vector = rows(dsn, "SELECT embedding::text AS e FROM memstate.facts")[0]["e"]
    backdate(dsn, last_seq(dsn))

    report = mem.compact(keep_versions=2, older_than="1d")

    kept = rows(
        dsn, "SELECT version, embedding::text AS e FROM memstate.fact_versions ORDER BY version"
    )
    assert [r["version"] for r in kept] == [4, 5]
    assert kept[0]["e"] == vector and kept[1]["e"] is None
    assert report.vectors_materialised == 1


def test_tenants_cannot_compact_nor_bypass_the_append_only_log(
    mem: MemoryStore,
    dsn: str,
    login,  # noqa: F811
    stores,  # noqa: F811
):
    make_history(mem, dsn)
    counts = rows(dsn, "SELECT (SELECT count(*) FROM memstate.fact_versions) AS v")[0]
    tenant = login("memstate_app", NS)
    with pytest.raises(PermissionDenied):
        stores(tenant).compact(keep_versions=1, older_than="1d", namespace=NS)
    with psycopg.connect(tenant, autocommit=True) as conn:
        for query in (
            "SELECT * FROM memstate.compact_begin('agent', 1, now())",
            "SELECT * FROM memstate.compact_versions('agent', 1, NULL, 10)",
            "SELECT * FROM memstate.compact_commits('agent', 0, 10)",
            "SELECT * FROM memstate.compact_plan('agent', 1, now())",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(query)
        conn.execute("SET memstate.compacting = 'on'")
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("DELETE FROM memstate.fact_versions")
    # a role that does hold DELETE and UPDATE (granted by a careless admin), with RLS off,
    # forging the setting, is still refused by the append-only trigger: only code running as
    # the owner passes
    security.disable_rls(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(
            "GRANT DELETE, UPDATE ON memstate.fact_versions, memstate.commits TO memstate_app"
        )
    with psycopg.connect(tenant, autocommit=True) as conn:
        conn.execute("SET memstate.compacting = 'on'")
        for query in (
            "DELETE FROM memstate.fact_versions WHERE namespace = 'agent'",
            "UPDATE memstate.fact_versions SET payload = '{}' WHERE namespace = 'agent'",
            "DELETE FROM memstate.commits WHERE namespace = 'agent'",
        ):
            with pytest.raises(psycopg.Error) as refused:
                conn.execute(query)
            assert refused.value.sqlstate == "MSC01", query
    # nor does the owner's raw SQL without going through compaction's functions
    with psycopg.connect(dsn, autocommit=True) as conn:
        with pytest.raises(psycopg.Error) as refused:
            conn.execute("DELETE FROM memstate.fact_versions")
        assert refused.value.sqlstate == "MSC01"
    assert rows(dsn, "SELECT (SELECT count(*) FROM memstate.fact_versions) AS v")[0] == counts


def test_a_concurrent_writer_is_not_held_up(mem: MemoryStore, dsn: str):
    """Compaction in small batches while a writer keeps updating the very facts whose old
    versions go: the writer never waits on a lock for a second (lock_timeout) and keeps
    committing during the compaction."""
    ids = mem.commit_many(
        [Fact(type="note", payload={"text": f"f{i}"}) for i in range(300)], namespace=NS
    )
    for round_ in range(3):
        for fid in ids:
            mem.update(fid, {"payload": {"text": f"r{round_}"}})
    backdate(dsn, last_seq(dsn))
    stop = threading.Event()
    written: list[float] = []
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            impatient = make_conninfo(dsn, options="-c lock_timeout=1000")  # ms
            with MemoryStore(impatient, max_size=1) as w:
                i = 0
                while not stop.is_set():
                    w.update(ids[i % len(ids)], {"payload": {"text": f"live{i}"}})
                    written.append(time.monotonic())
                    i += 1
        except BaseException as exc:  # reported below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        while not written:
            time.sleep(0.01)
        started = time.monotonic()
        report = mem.compact(keep_versions=1, older_than="1d", batch_size=25)
        ended = time.monotonic()
    finally:
        stop.set()
        thread.join(30)
    assert not errors, errors
    assert report.versions_deleted >= 300 * 3 - 300  # at least every old non-current version
    assert any(started < t < ended for t in written)
    for fid in ids[:20]:
        assert mem.get(fid) is not None


def test_dry_run_changes_nothing_and_says_what_would_go(mem: MemoryStore, dsn: str):
    make_history(mem, dsn)
    before = rows(
        dsn,
        "SELECT (SELECT count(*) FROM memstate.fact_versions) AS v, "
        "(SELECT count(*) FROM memstate.commits) AS c",
    )[0]
    plan = mem.compact(keep_versions=2, older_than="1d", dry_run=True)
    assert (
        rows(
            dsn,
            "SELECT (SELECT count(*) FROM memstate.fact_versions) AS v, "
            "(SELECT count(*) FROM memstate.commits) AS c",
        )[0]
        == before
    )
    assert rows(dsn, "SELECT count(*) AS n FROM memstate.compactions")[0]["n"] == 0
    done = mem.compact(keep_versions=2, older_than="1d")
    assert (plan.versions_deleted, plan.commits_deleted) == (
        done.versions_deleted,
        done.commits_deleted,
    )


def test_other_namespaces_are_untouched_and_the_async_store_compacts(loop, mem, dsn):
    make_history(mem, dsn)
    other = rows(dsn, "SELECT count(*) AS n FROM memstate.fact_versions")[0]["n"]
    mem.commit(Fact(type="note", payload={"text": "x"}), namespace="other")
    mem.update(mem.query(namespace="other")[0].id, {"payload": {"text": "y"}})
    backdate(dsn, last_seq(dsn), days=3)

    async def go() -> Any:
        async with AsyncMemoryStore(dsn, max_size=2) as store:
            return await store.compact(keep_versions=1, older_than="1d", namespace=NS)

    report = on(loop, go())
    assert [n.namespace for n in report.namespaces] == [NS]
    assert (
        rows(dsn, "SELECT count(*) AS n FROM memstate.fact_versions WHERE namespace = 'other'")[0][
            "n"
        ]
        == 2
    )
    assert report.versions_deleted > 0 and other > report.versions_deleted
    with pytest.raises(HistoryCompacted):
        mem.rollback(namespace=NS)  # every commit of the namespace is before the window
    assert mem.rollback(namespace="other")  # not compacted


def test_parse_duration():
    assert parse_duration("30d") == timedelta(days=30)
    assert parse_duration("1d12h") == timedelta(days=1, hours=12)
    assert parse_duration("90m") == timedelta(minutes=90)
    assert parse_duration("2w") == timedelta(weeks=2)
    for bad in ("", "30", "3 days", "-1d", "1y"):
        with pytest.raises(ValueError):
            parse_duration(bad)


def test_cli_compact(mem: MemoryStore, dsn: str, login):  # noqa: F811
    h = make_history(mem, dsn)
    out = cli("compact", "--dsn", dsn, "--older-than", "1d")
    assert out.returncode == 2 and "--keep-versions" in out.stderr  # both flags are required
    out = cli("compact", "--dsn", dsn, "--keep-versions", "1", "--older-than", "soon")
    assert_fails(out, 2, "not a duration", "30d")

    out = cli(
        "compact",
        "--dsn",
        dsn,
        "--keep-versions",
        "2",
        "--older-than",
        "1d",
        "--dry-run",
        "--json",
    )
    assert out.returncode == 0, out.stderr
    plan = json.loads(out.stdout)
    assert plan["dry_run"] and plan["versions_deleted"] > 0
    out = cli("compact", "--dsn", dsn, "--keep-versions", "2", "--older-than", "1d", "-n", NS)
    assert out.returncode == 0, out.stderr
    assert f"versions removed: {plan['versions_deleted']}" in out.stdout
    assert f"horizon {h['old']}" in out.stdout

    out = cli("rollback", "20", "--dsn", dsn, "-n", NS)
    assert_fails(out, 2, f"before its compaction horizon, commit {h['old']}", "backup")

    tenant = login("memstate_app", NS)
    out = cli("compact", "--dsn", tenant, "--keep-versions", "1", "--older-than", "1d")
    assert_fails(out, 4, "permission denied", "owner")


def test_run_compact_for_scripts(mem: MemoryStore, dsn: str):
    make_history(mem, dsn)
    report = run_compact(dsn, keep_versions=1, older_than="1d")
    assert report.versions_deleted > 0 and report.versions_per_second > 0


def test_housekeeping_removes_only_what_can_never_be_used(mem: MemoryStore, dsn: str):
    live = mem.commit(Fact(type="note", payload={"text": "live"}), namespace=NS)
    gone = mem.commit(Fact(type="note", payload={"text": "gone"}), namespace=NS)
    mem.delete(gone)
    model = mem.embedder.model
    with psycopg.connect(dsn, autocommit=True) as conn:
        vec = conn.execute("SELECT embedding::text FROM memstate.facts").fetchone()[0]
        conn.execute("SELECT memstate.register_model('other-384', 384)")
        for fid, version in ((live, 1), (gone, 1)):  # a re-embed in progress / a stale row
            conn.execute(
                "INSERT INTO memstate.reembed_vectors VALUES ('other-384', %s, %s, %s, %s)",
                [fid, NS, version, vec],
            )
        conn.execute("INSERT INTO memstate.mirrors (name, kind) VALUES ('m', 'memory')")
        conn.execute(
            "INSERT INTO memstate.outbox (mirror, fact_id, namespace, seq, version, op, dead_at)"
            " VALUES ('m', %s, %s, 1, 1, 'put', now() - interval '3 days'),"
            " ('m', %s, %s, 1, 1, 'put', now())",
            [live, NS, live, NS],
        )
    assert model != "other-384"
    backdate(dsn, last_seq(dsn))
    first = mem.compact(keep_versions=1, older_than="1d")
    assert (first.reembed_staging_deleted, first.dead_outbox_rows) == (1, 1)
    assert rows(dsn, "SELECT fact_id FROM memstate.reembed_vectors") == [{"fact_id": live}]
    assert rows(dsn, "SELECT count(*) AS n FROM memstate.outbox")[0]["n"] == 2  # only counted
    second = mem.compact(keep_versions=1, older_than="1d", drop_dead_outbox=True)
    assert second.dead_outbox_rows == 1 and second.dead_outbox_deleted
    assert rows(dsn, "SELECT count(*) AS n FROM memstate.outbox")[0]["n"] == 1  # the recent one


def test_a_database_owner_without_superuser_compacts(pg_admin_dsn: str):
    """The usual deployment: the schema's owner is an ordinary role (it migrated)."""
    import secrets
    import uuid

    from psycopg import sql
    from psycopg.conninfo import conninfo_to_dict

    from tests.support.database import with_database

    role, password = f"ms_owner_{uuid.uuid4().hex[:8]}", secrets.token_hex(8)
    name = f"memstate_c_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        conn.execute(
            sql.SQL("CREATE DATABASE {} OWNER {}").format(*map(sql.Identifier, (name, role)))
        )
    admin = with_database(pg_admin_dsn, name)
    as_owner = make_conninfo(admin, user=role, password=password)
    try:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE EXTENSION vector")
        with MemoryStore(as_owner, max_size=2) as owner:
            owner.migrate()
            fid = owner.commit(Fact(type="note", payload={"text": "v1"}), namespace=NS)
            owner.update(fid, {"payload": {"text": "v2"}})
            backdate(admin, last_seq(admin))
            report = owner.compact(keep_versions=1, older_than="1d")
            assert report.versions_deleted == 1 and report.commits_deleted == 1
            assert [v.version for v in owner.history(fid)] == [2]
        assert conninfo_to_dict(as_owner)["user"] == role
    finally:
        with psycopg.connect(pg_admin_dsn, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
