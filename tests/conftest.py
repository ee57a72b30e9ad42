"""Test tiers (see CONTRIBUTING.md):

- tests/unit: operations of memstate_pg._core driven with scripted rows; no database.
- tests/integration: the public API against a real PostgreSQL + pgvector.
- tests/drills: fault drills, concurrency and fuzzing (marked slow; `make test` runs them).
- tests/migration: frozen migrations against the current SQL files.

The fixtures live in tests/support/ and are loaded here as plugins.
"""

pytest_plugins = [
    "tests.support.database",
    "tests.support.loop",
    "tests.support.chroma_server",
    "tests.support.standby",
]
