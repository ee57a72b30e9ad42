"""LangGraph integration: a checkpointer and a long-term memory store on memstate-pg.

- :class:`MemStateCheckpointer` / :class:`AsyncMemStateCheckpointer` - complete
  ``BaseCheckpointSaver`` implementations for langgraph-checkpoint 4.x, stored in schema
  ``memstate`` (all 8 capabilities of langgraph-checkpoint-conformance), over a psycopg
  connection or pool, or a (Async)MemoryStore: ``MemStateCheckpointer(mem)``. A checkpoint
  can commit in the same transaction as memory facts: see ``checkpointer.base``.
- :class:`MemStateStore` / :class:`AsyncMemStateStore` - ``BaseStore`` implementations
  whose items are memstate facts: versioned, undoable, mirrored, searched with pgvector.

Layout, as langgraph-checkpoint-postgres: ``checkpointer/`` and ``store/`` each hold
``base.py`` (SQL, rows, the operations), ``__init__.py`` (the sync class) and ``aio.py``
(the async class); ``memstate_pg.langgraph.aio`` gathers the async classes.

Everything they need in the database comes from the alembic migrations
(``memstate-pg migrate``, ``MemoryStore.migrate()`` or the classes' ``setup()``).
"""

from .checkpointer import MemStateCheckpointer
from .checkpointer.aio import AsyncMemStateCheckpointer
from .store import MemStateStore
from .store.aio import AsyncMemStateStore
from .store.base import LG_TYPE

__all__ = [
    "LG_TYPE",
    "AsyncMemStateCheckpointer",
    "AsyncMemStateStore",
    "MemStateCheckpointer",
    "MemStateStore",
]
