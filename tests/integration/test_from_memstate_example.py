"""examples/from_memstate.py: MemState's README quick start, imports changed, on memstate-pg."""

from __future__ import annotations

import importlib.util
import sys
import uuid
from pathlib import Path
from types import ModuleType

import chromadb
from chromadb.config import Settings

from memstate_pg import MemoryStore

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "from_memstate.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("from_memstate_example", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _chroma():
    """Chroma in process, as the README's `chromadb.Client()` (without telemetry)."""
    return chromadb.EphemeralClient(settings=Settings(anonymized_telemetry=False))


def test_quick_start_commits_and_rollback_removes_the_vector(dsn: str) -> None:
    example = _load()
    with example.open_store(dsn) as mem:
        result = example.quick_start(mem, _chroma())
    assert result["in_chroma_after_commit"] is True
    assert result["hits"][0][0] == "User prefers vegetarian"
    assert result["live_after_rollback"] is False
    assert result["in_chroma_after_rollback"] is False  # the delete went through the outbox
    assert result["history"] == [("put", "commit"), ("delete", "rollback")]


def test_unregistered_type_is_stored_as_given(dsn: str) -> None:
    example = _load()
    with MemoryStore(dsn) as mem:
        fid = example.unregistered_type(mem)
        fact = mem.get(fid)
    assert isinstance(fid, uuid.UUID)
    assert fact.payload == {"content": "User moved to Paris", "role": "city"}
    assert fact.content == "User moved to Paris"


def test_langgraph_checkpointer_from_the_store(dsn: str) -> None:
    example = _load()
    with MemoryStore(dsn) as mem:
        assert example.langgraph_integration(mem) == {"turns": 2}
