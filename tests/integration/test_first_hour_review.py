"""Found by a newcomer following the README (each failed before its fix)."""

from __future__ import annotations

import pytest

from memstate_pg import Fact, MemoryStore, NotMigrated, ValidationFailed
from memstate_pg.mirrors import ChromaMirror
from memstate_pg.mirrors.memory import InMemoryMirror
from tests.integration.test_cli import assert_fails, cli


def test_an_unmigrated_database_says_run_migrate(empty_dsn: str) -> None:
    """Was a raw psycopg UndefinedTable (relation "memstate.types" does not exist)."""
    with MemoryStore(empty_dsn, max_size=1) as mem:
        for call in (
            lambda: mem.commit(Fact(type="note", payload={"text": "x"})),
            lambda: mem.query("note"),
            lambda: mem.status(),
        ):
            with pytest.raises(NotMigrated, match="memstate-pg migrate"):
                call()


def test_a_chroma_collection_name_chroma_refuses_is_refused_when_the_mirror_is_made(
    dsn: str, tmp_path
) -> None:
    """Was accepted; every write then failed and the rows died one by one."""
    with pytest.raises(ValidationFailed, match="collection"):
        ChromaMirror.__new__(ChromaMirror).__init__(None, collection="c2")  # type: ignore[misc]
    out = cli("mirror", "add", "c2", "--dsn", dsn, "--mirror", f"chroma:path:{tmp_path}")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "collection" in out.stderr


def test_sync_without_any_mirror_is_a_usage_error(dsn: str) -> None:
    """Was `internal error: ValueError` with exit 70."""
    out = cli("sync", "--once", "--dsn", dsn)
    assert_fails(out, 2, "no mirrors to sync", "")


def test_drain_with_dead_rows_is_not_success(dsn: str) -> None:
    """`sync --drain` exited 0 with "0 row(s) pending" while every row had died."""
    with MemoryStore(dsn, max_size=2) as mem:
        mem.add_mirror(InMemoryMirror(), "mem")
        mem.commit(Fact(type="note", payload={"text": "x"}))
        with mem.pool.connection() as conn:
            conn.execute("UPDATE memstate.outbox SET dead_at = now(), last_error = 'refused'")
    out = cli(
        "sync",
        "--drain",
        "--timeout",
        "5",
        "--dsn",
        dsn,
        "--mirror",
        "mem=chroma:path:/tmp/memstate-unused?collection=memory",
    )
    assert out.returncode == 1, (out.returncode, out.stdout, out.stderr)
    assert "dead" in out.stderr and "Traceback" not in out.stderr
