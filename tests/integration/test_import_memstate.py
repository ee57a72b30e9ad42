"""import-memstate: MemState 0.5.1 databases, written by MemState 0.5.1 itself, imported.

The fixtures run MemState's own API (its README's MemoryStore(storage), commit_model with a
registered schema and a singleton constraint, commit with unregistered types, update,
delete, sessions, promote, discard, rollback) on SQLite and on PostgreSQL (a separate
empty database of the test server), then import into a fresh memstate-pg database.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from pathlib import Path

import psycopg
import pytest
from memstate import Constraint as MSConstraint
from memstate import Fact as MSFact
from memstate import MemoryStore as MSMemoryStore
from memstate import SQLiteStorage
from memstate.backends.postgres import PostgresStorage
from psycopg.conninfo import conninfo_to_dict
from pydantic import BaseModel

from memstate_pg import MemoryStore, SyncWorker
from memstate_pg.importers import cli as import_cli
from memstate_pg.importers.memstate import (
    MEMSTATE_ID_NAMESPACE,
    fact_id_for,
    import_memstate,
    open_source,
    parse_import_reason,
)
from memstate_pg.mirrors import InMemoryMirror


class UserPref(BaseModel):
    content: str
    role: str


def write_history(storage) -> dict[str, str]:
    """A MemState history touching every operation; returns MemState's ids."""
    mem = MSMemoryStore(storage)
    mem.register_schema("preference", UserPref, constraint=MSConstraint(singleton_key="role"))
    ids: dict[str, str] = {}
    ids["pref"] = mem.commit_model(
        model=UserPref(content="User prefers vegetarian", role="diet"), actor="agent"
    )
    mem.commit_model(model=UserPref(content="User prefers vegan", role="diet"))  # singleton: update
    ids["city"] = mem.commit(
        MSFact(type="profile_update", payload={"content": "lives in Berlin", "role": "city"}),
        actor="agent",
        reason="user said so",
    )
    mem.update(ids["city"], {"payload": {"content": "lives in Paris"}}, reason="moved")
    ids["draft"] = mem.commit(MSFact(type="note", payload={"text": "draft"}), session_id="s1")
    mem.update(ids["draft"], {"payload": {"text": "draft 2"}})
    mem.rollback("s1", 1)  # draft back to "draft"; the UPDATE entry leaves the log
    ids["custom"] = mem.commit(
        MSFact(id="custom-id", type="note", payload={"text": "kept"}, source="chat"),
        session_id="s2",
    )
    mem.promote_session("s2")
    ids["scratch"] = mem.commit(MSFact(type="note", payload={"text": "scratch"}), session_id="s3")
    mem.discard_session("s3")
    ids["gone"] = mem.commit(MSFact(type="note", payload={"text": "to delete"}))
    mem.delete(None, ids["gone"])
    # A rollback that leaves the facts table away from the replayed log: promote, update
    # outside the session, then roll the promote back (MemState restores its fact_before).
    ids["twisted"] = mem.commit(MSFact(type="note", payload={"text": "t1"}), session_id="s5")
    mem.promote_session("s5")
    mem.update(ids["twisted"], {"payload": {"text": "t2"}})
    mem.rollback("s5", 1)
    return ids


def sqlite_source(tmp_path: Path) -> tuple[str, dict[str, str]]:
    path = str(tmp_path / "agent_memory.db")
    storage = SQLiteStorage(path)
    ids = write_history(storage)
    storage.close()
    return path, ids


def sqlalchemy_url(dsn: str) -> str:
    """The form MemState's PostgresStorage takes: postgresql+psycopg://…"""
    params = conninfo_to_dict(dsn)
    db = params.pop("dbname")
    return f"postgresql+psycopg:///{db}?" + "&".join(f"{k}={v}" for k, v in params.items())


def postgres_source(empty_dsn: str) -> tuple[str, dict[str, str]]:
    url = sqlalchemy_url(empty_dsn)
    storage = PostgresStorage(url)
    ids = write_history(storage)
    storage.close()
    return url, ids


def commit_count(dsn: str) -> int:
    with psycopg.connect(dsn) as conn:
        return conn.execute("SELECT count(*) FROM memstate.commits").fetchone()[0]


def check_imported(mem: MemoryStore, ids: dict[str, str]) -> None:
    fid = {k: fact_id_for(v, "agent") for k, v in ids.items()}
    assert fid["pref"] == uuid.UUID(ids["pref"])  # MemState's UUIDs are kept
    # other ids map into the target namespace (fact ids are global)
    assert fid["custom"] == uuid.uuid5(MEMSTATE_ID_NAMESPACE, "agent\x00custom-id")
    live = {f.id: f for f in mem.query(namespace="agent")}
    assert set(live) == {fid["pref"], fid["city"], fid["draft"], fid["custom"], fid["twisted"]}
    assert live[fid["pref"]].payload == {"content": "User prefers vegan", "role": "diet"}
    assert live[fid["pref"]].type == "preference"
    assert live[fid["city"]].payload == {"content": "lives in Paris", "role": "city"}
    assert live[fid["draft"]].payload == {"text": "draft"}
    assert live[fid["draft"]].session_id == "s1"
    assert live[fid["custom"]].session_id is None  # promoted
    assert live[fid["twisted"]].payload == {"text": "t1"}
    assert live[fid["twisted"]].session_id == "s5"  # the promote was rolled back

    def story(key: str) -> list[tuple[str, str | None, dict | None]]:
        return [
            (v.op, (parse_import_reason(v.reason) or {}).get("op"), v.payload)
            for v in mem.history(fid[key])
        ]

    assert story("pref") == [
        ("put", "COMMIT", {"content": "User prefers vegetarian", "role": "diet"}),
        ("update", "UPDATE", {"content": "User prefers vegan", "role": "diet"}),
    ]
    assert story("draft") == [("put", "COMMIT", {"text": "draft"})]
    assert [s[:2] for s in story("custom")] == [("put", "COMMIT"), ("update", "PROMOTE")]
    assert [s[:2] for s in story("scratch")] == [("put", "COMMIT"), ("delete", "DISCARD_SESSION")]
    assert [s[:2] for s in story("gone")] == [("put", "COMMIT"), ("delete", "DELETE")]
    assert [s[:2] for s in story("twisted")] == [
        ("put", "COMMIT"),
        ("update", "UPDATE"),  # MemState's rollback took the PROMOTE out of its log
        ("update", "STATE"),  # and its facts table has the last word
    ]
    first = mem.history(fid["city"])[0]
    meta = parse_import_reason(first.reason)
    assert first.actor == "agent"
    assert meta["reason"] == "user said so" and meta["ts"].startswith("20")
    assert parse_import_reason(mem.history(fid["custom"])[0].reason)["memstate_id"] == "custom-id"
    assert parse_import_reason(mem.history(fid["custom"])[0].reason)["source"] == "chat"
    # sessions: a commit's session is the MemState entry's, so undo by session works
    commits = {c["seq"]: c for c in mem.commits(namespace="agent", limit=100)}
    promote_seq = mem.history(fid["custom"])[1].seq
    assert commits[promote_seq]["session_id"] == "s2"
    # vectors: re-embedded by the store's embedder, searchable
    hits = mem.search("User prefers vegan", k=1, namespace="agent")
    assert hits and hits[0].fact.id == fid["pref"] and hits[0].score > 0.99


def run_twice(dsn: str, source: str, ids: dict[str, str]) -> None:
    mirror = InMemoryMirror()
    with MemoryStore(dsn) as mem:
        mem.add_mirror(mirror, "memory")
        ticks: list[tuple[str, int, int]] = []
        report = import_memstate(
            mem, source, namespace="agent", progress=lambda *tick: ticks.append(tick)
        )
        assert not report.failed, report.failed
        assert ticks[0] == ("import", 0, 18) and ticks[-1] == ("import", 18, 18)
        assert report.facts_written == 7 and report.facts_per_s > 0
        assert report.entries == 13 and report.already == 0
        assert report.imported == 13 and report.state_commits == 1
        assert report.versions == 14 and report.live == 5 and report.facts == 7
        assert report.mapped_ids == 1 and report.sessions == 4
        assert report.types == ["note", "preference", "profile_update"]
        assert report.types_registered == report.types
        check_imported(mem, ids)
        commits = commit_count(dsn)
        versions = len(mem.history(namespace="agent"))

        again = import_memstate(mem, source, namespace="agent")
        assert not again.failed
        assert (again.imported, again.state_commits, again.versions) == (0, 0, 0)
        assert again.facts_written == 0 and again.facts_per_s == 0
        assert again.already == 13 and again.types_registered == []
        assert commit_count(dsn) == commits
        assert len(mem.history(namespace="agent")) == versions
        check_imported(mem, ids)

        # the mirror got the facts through the outbox, like any commit
        with SyncWorker(mem, {"memory": mirror}) as worker:
            assert worker.drain(timeout=60)
        live = {str(f.id): f.version for f in mem.query(namespace="agent")}
        assert {fid: p.version for fid, p in mirror.get(list(live)).items()} == live
        assert mirror.count() == len(live)
        assert mem.reconcile("memory", repair=False).drift == 0


def test_import_sqlite_written_by_memstate(dsn: str, tmp_path: Path) -> None:
    source, ids = sqlite_source(tmp_path)
    run_twice(dsn, source, ids)


def test_import_postgres_written_by_memstate(dsn: str, empty_dsn: str) -> None:
    source, ids = postgres_source(empty_dsn)
    run_twice(dsn, source, ids)


def test_dry_run_writes_nothing(dsn: str, tmp_path: Path) -> None:
    source, _ = sqlite_source(tmp_path)
    with MemoryStore(dsn) as mem:
        before = commit_count(dsn)
        report = import_memstate(mem, source, namespace="agent", dry_run=True, progress=True)
        assert report.dry_run and report.imported == 13 and report.versions == 14
        assert report.types_registered == ["note", "preference", "profile_update"]
        assert commit_count(dsn) == before
        assert mem.query(namespace="agent") == []
        with psycopg.connect(dsn) as conn:
            assert conn.execute("SELECT count(*) FROM memstate.types").fetchone()[0] == 0


class Dies(Exception):
    pass


def test_dry_run_on_an_empty_database_creates_nothing(empty_dsn: str, tmp_path: Path) -> None:
    source, _ = sqlite_source(tmp_path)
    with MemoryStore(empty_dsn) as mem:
        report = import_memstate(mem, source, namespace="agent", dry_run=True)
    assert report.imported == 13 and report.state_commits == 1 and report.versions == 14
    with psycopg.connect(empty_dsn) as conn:
        assert conn.execute("SELECT to_regnamespace('memstate')").fetchone()[0] is None


def test_resumes_after_an_interrupted_import(dsn: str, tmp_path: Path) -> None:
    """An import that died half way (here: reading the source's log fails after 7 entries,
    as if the process was killed) imports only the rest when run again."""
    path, ids = sqlite_source(tmp_path)
    source = open_source(path)
    entries = source.entries

    def dying():
        for n, entry in enumerate(entries()):
            if n == 7:
                raise Dies()
            yield entry

    source.entries = dying
    with MemoryStore(dsn) as mem:
        with pytest.raises(Dies):
            import_memstate(mem, source, namespace="agent")
        source.close()
        assert commit_count(dsn) == 7
        rest = import_memstate(mem, path, namespace="agent")
        assert rest.already == 7 and rest.imported == 6 and not rest.failed
        assert rest.state_commits == 1
        check_imported(mem, ids)


def test_target_lost_mid_import_raises_unavailable_and_a_rerun_completes(
    dsn: str, tmp_path: Path
) -> None:
    """The target's connections are terminated after 7 entries (a server restart, a
    failover): the import stops with Unavailable (the CLI's exit 3), and the next run
    imports the rest."""
    from memstate_pg import Unavailable

    path, ids = sqlite_source(tmp_path)
    source = open_source(path)
    entries = source.entries

    def cut_off():
        for n, entry in enumerate(entries()):
            if n == 7:
                with psycopg.connect(dsn, autocommit=True) as admin:
                    admin.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    )
            yield entry

    source.entries = cut_off
    with MemoryStore(dsn) as mem:
        with pytest.raises(Unavailable):
            import_memstate(mem, source, namespace="agent")
        source.close()
    with MemoryStore(dsn) as mem:  # the next run (a new process)
        rest = import_memstate(mem, path, namespace="agent")
        assert rest.already == 7 and rest.imported == 6 and not rest.failed
        check_imported(mem, ids)


def test_types_registered_beforehand_with_a_constraint_import_cleanly(
    dsn: str, tmp_path: Path
) -> None:
    """The MemState app's own schema and singleton constraint, registered on the target
    first: the history passes them (MemState enforced the same), and they hold after."""
    from memstate_pg import ConflictError, Constraint, Fact

    source, ids = sqlite_source(tmp_path)
    with MemoryStore(dsn) as mem:
        mem.register_schema(
            "preference",
            UserPref,
            constraint=Constraint(singleton_key="role"),
            text_field="content",
        )
        report = import_memstate(mem, source, namespace="agent")
        assert not report.failed and "preference" not in report.types_registered
        check_imported(mem, ids)
        # a new commit with the same singleton key updates the imported fact
        fid = mem.commit(
            Fact(type="preference", payload={"content": "User eats fish", "role": "diet"}),
            namespace="agent",
        )
        assert fid == fact_id_for(ids["pref"], "agent") and mem.get(fid).version == 3
        with pytest.raises(ConflictError):  # a second fact may not take the key
            mem.commit(
                Fact(
                    id=uuid.uuid4(),
                    type="preference",
                    payload={"content": "x", "role": "diet"},
                ),
                namespace="agent",
            )


def test_registered_type_keeps_its_model_and_refusals_are_listed(dsn: str, tmp_path: Path) -> None:
    """A type registered before the import keeps its model (the importer registers only the
    missing ones); a payload that model refuses is listed, the rest is imported."""

    class Note(BaseModel):
        text: str
        stars: int  # MemState's notes have no stars: every note is refused

    source, _ = sqlite_source(tmp_path)
    with MemoryStore(dsn) as mem:
        mem.register_schema("note", Note, text_field="text")
        report = import_memstate(mem, source, namespace="agent")
        assert "note" not in report.types_registered
        assert report.failed and all("stars: Field required" in f["error"] for f in report.failed)
        assert {f.type for f in mem.query(namespace="agent")} == {"preference", "profile_update"}
        with psycopg.connect(dsn) as conn:
            schema = conn.execute(
                "SELECT json_schema FROM memstate.types WHERE type = 'note'"
            ).fetchone()[0]
        assert "stars" in schema["properties"]


def test_a_fact_whose_type_changed_is_deleted_and_recreated(dsn: str, tmp_path: Path) -> None:
    """MemState lets a commit with a known id change the fact's type; memstate-pg keeps a
    fact's type, so the import deletes it and re-creates it under the same id, in one
    commit."""
    path = str(tmp_path / "retyped.db")
    storage = SQLiteStorage(path)
    ms = MSMemoryStore(storage)
    fid = ms.commit(MSFact(type="draft", payload={"text": "an idea"}))
    ms.commit(MSFact(id=fid, type="plan", payload={"text": "a plan"}))
    storage.close()
    with MemoryStore(dsn) as mem:
        report = import_memstate(mem, path, namespace="agent")
        assert not report.failed and report.versions == 3 and report.state_commits == 0
        fact = mem.get(fid)
        assert (fact.type, fact.payload) == ("plan", {"text": "a plan"})
        assert [(v.op, v.type) for v in mem.history(fid)] == [
            ("put", "draft"),
            ("delete", "draft"),
            ("put", "plan"),
        ]
        assert len({v.seq for v in mem.history(fid)[1:]}) == 1  # one commit


def test_two_imports_at_once_write_everything_once(dsn: str, tmp_path: Path) -> None:
    import threading

    source, ids = sqlite_source(tmp_path)
    with MemoryStore(dsn, max_size=4) as mem:
        reports, errors = [], []

        def run() -> None:
            try:
                reports.append(import_memstate(mem, source, namespace="agent"))
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=run) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors and all(not r.failed for r in reports), [r.failed for r in reports]
        check_imported(mem, ids)
        assert len(mem.history(namespace="agent")) == 14  # as one import writes
        with psycopg.connect(dsn) as conn:
            (keys,) = conn.execute(
                "SELECT count(DISTINCT idempotency_key) = count(*) FROM memstate.commits"
                " WHERE namespace = 'agent'"
            ).fetchone()
        assert keys


# --- the CLI ---------------------------------------------------------------------------


def cli(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="memstate-pg")
    import_cli.add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return args.func(args)


def test_cli_imports_and_prints_json(dsn: str, tmp_path: Path, capsys) -> None:
    source, _ = sqlite_source(tmp_path)
    argv = ["import-memstate", source, "--namespace", "agent", "--dsn", dsn, "--json"]
    assert cli(argv) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["imported"] == 13 and out["live"] == 5 and out["versions"] == 14
    assert out["facts_per_s"] > 0
    assert cli(argv) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["imported"] == 0 and again["already"] == 13


def test_cli_summary_table(dsn: str, tmp_path: Path, capsys) -> None:
    source, _ = sqlite_source(tmp_path)
    assert cli(["import-memstate", source, "-n", "agent", "--dsn", dsn, "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "dry run" in out and "would be written" in out and "14" in out


def test_cli_unavailable_source_and_target(dsn: str, tmp_path: Path, capsys) -> None:
    missing = str(tmp_path / "nope.db")
    assert cli(["import-memstate", missing, "--dsn", dsn]) == 3
    err = capsys.readouterr().err
    assert "no such file" in err and "Traceback" not in err

    not_memstate = tmp_path / "other.db"
    sqlite3.connect(not_memstate).execute("CREATE TABLE t (x)").connection.close()
    assert cli(["import-memstate", str(not_memstate), "--dsn", dsn]) == 3
    assert "not a MemState database" in capsys.readouterr().err

    bad_pg = "postgresql://nobody@127.0.0.1:1/none"
    assert cli(["import-memstate", bad_pg, "--dsn", dsn]) == 3
    assert "cannot read the MemState database" in capsys.readouterr().err

    source, _ = sqlite_source(tmp_path)
    down = "postgresql://nobody@127.0.0.1:1/none?connect_timeout=2"
    assert cli(["import-memstate", source, "--dsn", down]) == 3
    err = capsys.readouterr().err
    assert "unavailable" in err or "cannot open" in err
    assert "Traceback" not in err


def test_cli_lists_refused_entries_and_exits_1(dsn: str, tmp_path: Path, capsys) -> None:
    """The same MemState database into a second namespace: its UUIDs are taken there, so
    every write is refused, listed, and the exit code says so."""
    source, _ = sqlite_source(tmp_path)
    assert cli(["import-memstate", source, "-n", "one", "--dsn", dsn]) == 0
    capsys.readouterr()
    assert cli(["import-memstate", source, "-n", "two", "--dsn", dsn]) == 1
    out = capsys.readouterr().out
    assert "refused by the target" in out and "another namespace" in out


def test_excluded_types_are_left_out(dsn: str, tmp_path: Path) -> None:
    source, ids = sqlite_source(tmp_path)
    with MemoryStore(dsn) as mem:
        report = import_memstate(mem, source, namespace="agent", exclude_types=["note"])
        assert not report.failed
        assert report.types == ["preference", "profile_update"]
        assert report.excluded == 7 + 3  # log entries of notes + notes in the facts table
        assert {f.type for f in mem.query(namespace="agent")} == {"preference", "profile_update"}
        assert report.live == 2 and report.nothing_to_do == 2  # the note's DELETE, the DISCARD


def test_cli_usage_errors(dsn: str, tmp_path: Path, capsys) -> None:
    with pytest.raises(SystemExit) as exc:
        cli(["import-memstate"])
    assert exc.value.code == 2
    source, _ = sqlite_source(tmp_path)
    assert cli(["import-memstate", source, "--dsn", dsn, "--namespace", ""]) == 2
    assert "namespace" in capsys.readouterr().err


def _hand_made_source(path: Path, fid: str, content: str) -> str:
    """A MemState SQLite file in 0.5.1's layout with one committed fact of id `fid`."""
    import json
    import sqlite3

    fact = {
        "id": fid,
        "type": "note",
        "payload": {"content": content},
        "source": None,
        "session_id": None,
        "ts": "2025-01-01T00:00:00",
    }
    entry = {
        "uuid": str(uuid.uuid4()),
        "session_id": None,
        "seq": 1,
        "ts": "2025-01-01T00:00:00",
        "op": "COMMIT",
        "fact_id": fid,
        "fact_before": None,
        "fact_after": fact,
        "actor": None,
        "reason": None,
    }
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE facts(id TEXT PRIMARY KEY, type TEXT, data TEXT, created_at TEXT)")
    conn.execute(
        "CREATE TABLE tx_log(tx_id INTEGER PRIMARY KEY, uuid TEXT, timestamp TEXT, data TEXT)"
    )
    conn.execute("INSERT INTO tx_log VALUES (1, ?, 't', ?)", (entry["uuid"], json.dumps(entry)))
    conn.execute("INSERT INTO facts VALUES (?, 'note', ?, 't')", (fid, json.dumps(fact)))
    conn.commit()
    conn.close()
    return str(path)


def test_two_sources_with_alike_ids_import_into_two_namespaces(dsn: str, tmp_path: Path) -> None:
    """Found by review: ids that are not UUIDs mapped to the same fact id in every
    namespace, so bob's "profile" was refused once alice's was imported."""
    alice = _hand_made_source(tmp_path / "alice.db", "profile", "alice lives in Paris")
    bob = _hand_made_source(tmp_path / "bob.db", "profile", "bob lives in Rome")
    with MemoryStore(dsn, max_size=2) as mem:
        import_memstate(mem, alice, namespace="alice")
        report = import_memstate(mem, bob, namespace="bob")
        assert not report.failed, report.failed
        assert [f.content for f in mem.query(namespace="alice")] == ["alice lives in Paris"]
        assert [f.content for f in mem.query(namespace="bob")] == ["bob lives in Rome"]
