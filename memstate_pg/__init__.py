"""memstate-pg: transactional memory for AI agents on PostgreSQL + pgvector.

Facts and their embeddings commit in one Postgres transaction; external vector stores are
mirrors fed from a transactional outbox. See README.md and DESIGN.md for the contract.
"""

from ._core.judged import JudgedHits
from .aio import AsyncMemoryStore, AsyncTransaction
from .embedders import HashingEmbedder
from .errors import (
    ConflictError,
    HistoryCompacted,
    MemStateError,
    MigrationError,
    MirrorError,
    NotFound,
    NotMigrated,
    PermissionDenied,
    Unavailable,
    ValidationFailed,
)
from .mirrors import ChromaMirror, Mirror, QdrantMirror
from .models import (
    Constraint,
    Fact,
    FactVersion,
    Hit,
    MirrorStatus,
    ReconcileReport,
    ReembedReport,
)
from .store import MemoryStore, Transaction
from .sync import SyncWorker

__all__ = [
    "AsyncMemoryStore",
    "AsyncTransaction",
    "ChromaMirror",
    "ConflictError",
    "Constraint",
    "Fact",
    "FactVersion",
    "HashingEmbedder",
    "HistoryCompacted",
    "Hit",
    "JudgedHits",
    "MemStateError",
    "MemoryStore",
    "MigrationError",
    "Mirror",
    "MirrorError",
    "MirrorStatus",
    "NotFound",
    "NotMigrated",
    "PermissionDenied",
    "QdrantMirror",
    "ReconcileReport",
    "ReembedReport",
    "SyncWorker",
    "Transaction",
    "Unavailable",
    "ValidationFailed",
]
__version__ = "0.1.0"
