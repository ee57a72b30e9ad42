"""LangGraph integration: a checkpointer and a long-term memory store on memstate-pg.

- :class:`MemStateCheckpointer` / :class:`AsyncMemStateCheckpointer` - complete
  ``BaseCheckpointSaver`` implementations for langgraph-checkpoint 4.x, stored in schema
  ``memstate`` (all 8 capabilities of langgraph-checkpoint-conformance). A checkpoint can
  commit in the same transaction as memory facts: see ``checkpoint_base``.
- :class:`MemStateStore` / :class:`AsyncMemStateStore` - ``BaseStore`` implementations
  whose items are memstate facts: versioned, undoable, mirrored, searched with pgvector.

Everything they need in the database comes from the alembic migrations
(``memstate-pg migrate``, ``MemoryStore.migrate()`` or the classes' ``setup()``).
"""

from .aio import AsyncMemStateCheckpointer
from .checkpointer import MemStateCheckpointer
from .store import AsyncMemStateStore, MemStateStore
from .store_core import LG_TYPE

__all__ = [
    "LG_TYPE",
    "AsyncMemStateCheckpointer",
    "AsyncMemStateStore",
    "MemStateCheckpointer",
    "MemStateStore",
]
