"""The memstate-pg command line, run as a user would: the `memstate-pg` console script in a
subprocess. Ergonomics here; failures in test_cli_errors.py, the demo in test_cli_demo.py,
serve/dsn in test_embedded.py. `cli()` and `assert_fails()` are shared with those files."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import psycopg

from memstate_pg import Fact, MemoryStore

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(sys.executable).parent / "memstate-pg"


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 120):
    """`memstate-pg ARGS` in a subprocess (this checkout's package first on the path)."""
    full_env = {**os.environ, "COLUMNS": "200", "PYTHONPATH": str(ROOT)}
    full_env.pop("MEMSTATE_DSN", None)
    full_env.update(env or {})
    command = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "memstate_pg"]
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=timeout,
        env=full_env,
    )


def assert_fails(out, code: int, cause: str, remedy: str) -> None:
    """Exit `code`, no traceback, and the last two lines of stderr are the cause (holding
    `cause`) and the remedy (holding `remedy`)."""
    assert out.returncode == code, (out.returncode, out.stdout, out.stderr)
    assert "Traceback" not in out.stderr, out.stderr
    lines = [line for line in out.stderr.splitlines() if line.strip()]
    assert len(lines) >= 2, out.stderr
    assert lines[-2].startswith("error: ") and cause in lines[-2], out.stderr
    assert lines[-1].startswith("hint: ") and remedy in lines[-1], out.stderr


def test_migrate_history_rollback(mem: MemoryStore, dsn: str):
    out = cli("migrate", "--dsn", dsn)
    assert out.returncode == 0, out.stderr
    assert "already at revision" in out.stdout
    fid = mem.commit(Fact(type="note", payload={"text": "from the api"}), namespace="cli")
    mem.update(fid, {"payload": {"text": "changed"}})
    out = cli("history", str(fid), "--dsn", dsn)
    assert out.returncode == 0 and "changed" in out.stdout and "from the api" in out.stdout
    out = cli("rollback", "1", "--namespace", "cli", "--dsn", dsn)
    assert out.returncode == 0, out.stderr
    assert mem.get(fid).payload["text"] == "from the api"
    out = cli("rollback", "1", "--namespace", "nothing", "--dsn", dsn)
    assert_fails(out, 2, "nothing to roll back", "commits -n NS")


def test_version_and_dsn_before_or_after_the_command(mem: MemoryStore, dsn: str):
    from memstate_pg import __version__

    out = cli("--version")
    assert out.returncode == 0 and out.stdout.strip() == f"memstate-pg {__version__}"
    mem.commit(Fact(type="note", payload={"text": "x"}), namespace="where")
    before = cli("--dsn", dsn, "commits", "-n", "where", "--json")
    after = cli("commits", "-n", "where", "--json", "--dsn", dsn)
    assert before.returncode == after.returncode == 0, before.stderr + after.stderr
    assert json.loads(before.stdout) == json.loads(after.stdout)
    assert len(json.loads(before.stdout)) == 1
    env = cli("commits", "-n", "where", "--json", env={"MEMSTATE_DSN": dsn})
    assert env.returncode == 0 and json.loads(env.stdout) == json.loads(before.stdout)


def test_sqlalchemy_urls_are_accepted(mem: MemoryStore, dsn: str):
    from psycopg.conninfo import conninfo_to_dict

    params = conninfo_to_dict(dsn)
    host = params.get("host", "")
    port = params.get("port", "5432")
    if host.startswith("/"):
        url = f"postgresql+psycopg://{params.get('user', 'postgres')}@/{params['dbname']}?host={host}&port={port}"
    else:
        password = f":{params['password']}" if params.get("password") else ""
        url = f"postgresql+psycopg://{params['user']}{password}@{host}:{port}/{params['dbname']}"
    out = cli("status", "--dsn", url, "--json")
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {}


def test_history_is_newest_first_with_full_ids_that_history_accepts(mem: MemoryStore, dsn: str):
    ids = [
        mem.commit(Fact(type="note", payload={"text": f"n{i}"}), namespace="h") for i in range(5)
    ]
    out = cli("history", "-n", "h", "--limit", "2", "--json", "--dsn", dsn)
    assert out.returncode == 0, out.stderr
    rows = json.loads(out.stdout)
    assert [r["payload"]["text"] for r in rows] == ["n4", "n3"]  # the newest two, newest first
    assert [r["fact_id"] for r in rows] == [str(ids[4]), str(ids[3])]
    table = cli("history", "-n", "h", "--limit", "2", "--dsn", dsn)
    assert table.returncode == 0 and str(ids[4]) in table.stdout  # the full id, not 8 chars
    mem.update(ids[4], {"payload": {"text": "n4 again"}})
    one = cli("history", str(ids[4]), "--json", "--dsn", dsn)
    assert [r["version"] for r in json.loads(one.stdout)] == [2, 1]
    short = cli("history", str(ids[4])[:8], "--dsn", dsn)
    assert_fails(short, 2, "is not a fact id", "full id")


def test_json_output_of_the_commands_a_script_reads(mem: MemoryStore, dsn: str, tmp_path: Path):
    out = cli("migrate", "--json", "--dsn", dsn)
    assert json.loads(out.stdout)["revision"]
    mem.commit(Fact(type="note", payload={"text": "a"}), namespace="j")
    mem.commit(Fact(type="note", payload={"text": "b"}), namespace="j")
    out = cli("rollback", "1", "-n", "j", "--json", "--dsn", dsn)
    assert out.returncode == 0, out.stderr
    rolled = json.loads(out.stdout)
    assert rolled["steps"] == 1 and rolled["namespace"] == "j" and rolled["seq"] > 0
    out = cli("commits", "-n", "j", "--json", "--dsn", dsn)
    assert [c["kind"] for c in json.loads(out.stdout)] == ["rollback", "commit", "commit"]
    path = tmp_path / "qdrant"
    out = cli("mirror", "add", "q", "--mirror", f"qdrant:path:{path}", "--json", "--dsn", dsn)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout) == {"mirror": "q", "kind": "qdrant", "pending": 1}
    out = cli("status", "--json", "--dsn", dsn)
    assert json.loads(out.stdout)["q"]["pending"] == 1
    out = cli("sync", "--drain", "--timeout", "60", "--json", "--dsn", dsn)
    assert out.returncode == 0 and json.loads(out.stdout) == {
        "drained": True,
        "pending": 0,
        "dead": 0,
    }
    out = cli("reconcile", "q", "--json", "--dsn", dsn)
    assert out.returncode == 0 and json.loads(out.stdout)["left"] == 0
    out = cli("requeue", "q", "--json", "--dsn", dsn)
    assert json.loads(out.stdout) == {"mirror": "q", "requeued": 0}
    out = cli("mirror", "remove", "q", "--json", "--dsn", dsn)
    assert json.loads(out.stdout) == {"mirror": "q", "removed": True}


def test_drain_is_quiet_unless_verbose(mem: MemoryStore, dsn: str, tmp_path: Path):
    """Before: 47 log lines of pg_ctl, alembic and httpx on stderr for one `sync --drain`."""
    mem.commit_many([Fact(type="note", payload={"text": f"n{i}"}) for i in range(5)])
    path = tmp_path / "qdrant"
    assert (
        cli("mirror", "add", "q", "--mirror", f"qdrant:path:{path}", "--dsn", dsn).returncode == 0
    )
    out = cli("sync", "--drain", "--timeout", "60", "--dsn", dsn)
    assert out.returncode == 0 and "drained: 0 row(s) pending" in out.stdout, out.stderr
    assert " INFO " not in out.stderr and "alembic" not in out.stderr, out.stderr
    assert "draining the outbox" in out.stderr  # the progress line
    mem.commit(Fact(type="note", payload={"text": "one more"}))
    out = cli("-v", "sync", "--drain", "--timeout", "60", "--dsn", dsn)
    assert out.returncode == 0 and " INFO " in out.stderr


def test_every_argument_has_help_and_every_command_a_description():
    from memstate_pg.cli import build_parser

    def walk(parser: argparse.ArgumentParser, path: str):
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    yield from walk(sub, f"{path} {name}")
            elif not isinstance(action, argparse._HelpAction):
                yield path, action

    missing = [
        (path, action.dest)
        for path, action in walk(build_parser(), "memstate-pg")
        if not action.help
    ]
    assert missing == []
    out = cli("--help")
    assert out.returncode == 0 and "exit codes:" in out.stdout and "130" in out.stdout


def test_read_only_commands_run_as_a_role_that_may_not_create(dsn: str):
    """status and history on a migrated database need no CREATE right (they do not migrate)."""
    role = f"ro_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"GRANT USAGE ON SCHEMA memstate TO {role}")
        conn.execute(f"GRANT SELECT ON ALL TABLES IN SCHEMA memstate TO {role}")
        conn.execute(f"REVOKE CREATE ON DATABASE {conn.info.dbname} FROM PUBLIC")
    try:
        from psycopg.conninfo import make_conninfo

        ro = make_conninfo(dsn, user=role, password="")
        out = cli("status", "--json", "--dsn", ro)
        assert out.returncode == 0 and json.loads(out.stdout) == {}, out.stderr
        out = cli("history", "-n", "x", "--json", "--dsn", ro)
        assert out.returncode == 0 and json.loads(out.stdout) == [], out.stderr
    finally:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")
