"""The asyncio classes of the LangGraph integration, by the path langgraph uses for its own
(``langgraph.checkpoint.postgres.aio``): nothing here imports the sync modules."""

from .checkpointer.aio import AsyncMemStateCheckpointer
from .store.aio import AsyncMemStateStore

__all__ = ["AsyncMemStateCheckpointer", "AsyncMemStateStore"]
