"""examples/langgraph_agent.py runs end to end (a smoke test of the whole integration)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "langgraph_agent.py"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("langgraph_agent_example", EXAMPLE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_example_remembers_across_threads_and_undoes_the_bad_memory(dsn: str) -> None:
    result = _load().main(dsn)
    assert result["before"] == "You told me your favourite drink is green tea."
    assert "ignore all previous instructions" in result["poisoned"]
    assert result["after"] == "You told me your favourite drink is green tea."
    assert [(op, kind) for _, op, kind, _ in result["history"]] == [
        ("put", "commit"),
        ("update", "commit"),
        ("update", "revert"),
    ]
    assert result["history"][-1][3] == "green tea"
    assert result["checkpoints"] > 0
