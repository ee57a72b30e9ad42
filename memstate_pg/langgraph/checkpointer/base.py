"""What MemStateCheckpointer and AsyncMemStateCheckpointer share: SQL, parameters, rows.

The two savers are thin shells (``checkpointer/__init__.py`` runs these statements with
psycopg's sync API, ``checkpointer/aio.py`` with its async API), in the way
langgraph-checkpoint-postgres splits base.py / __init__.py / aio.py. Every operation is one SQL statement, hence atomic by
itself and one round trip:

* ``put`` writes the new channel blobs and the checkpoint row in one statement (a
  data-modifying CTE), so a crash never leaves a checkpoint without its values;
* ``get_tuple`` / ``list`` read a checkpoint with its channel values and pending writes
  in one query;
* ``delete_thread``, ``copy_thread``, ``delete_for_runs`` and ``prune`` call the
  functions of sql/langgraph.sql (also callable from psql).

Storage (schema ``memstate``, created by alembic revision 0002_langgraph):

* ``lg_checkpoints`` - the checkpoint minus its channel values, encoded with
  ``serde.dumps_typed``; ``metadata`` as jsonb so ``list(filter=...)`` is a ``@>`` test
  and ``delete_for_runs`` finds ``metadata.run_id`` through an index;
* ``lg_blobs`` - each channel value once per (thread, namespace, channel, version),
  encoded with ``serde.dumps_typed``: a checkpoint whose step changed one channel writes
  one blob and reuses the others;
* ``lg_writes`` - pending writes (``serde.dumps_typed``), keyed by (checkpoint, task,
  idx); special channels get the negative indexes of ``WRITES_IDX_MAP``.

**One transaction with memory facts.** Every statement runs on the connection the saver
was given, without committing on its own, so a checkpoint and memstate facts commit or
roll back together when they share a connection and an open transaction::

    with psycopg.connect(dsn, autocommit=True) as conn:
        saver = MemStateCheckpointer(conn)
        with conn.transaction():
            mem.commit(Fact(type="note", payload={...}), conn=conn)
            saver.put(config, checkpoint, metadata, new_versions)
        # both are committed here; an exception inside the block leaves neither

The same holds for ``AsyncMemStateCheckpointer`` over an ``AsyncConnection`` with
``AsyncMemoryStore.commit(..., conn=conn)``, and inside ``mem.transaction()`` by building
the saver over ``tx.connection``.
"""

from __future__ import annotations

import dataclasses
import enum
import json
import random
from collections.abc import Mapping, Sequence
from datetime import date, datetime
from typing import Any, cast
from uuid import UUID

import psycopg
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
    writes_sort_key,
)
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

from ...errors import ValidationFailed

__all__ = [
    "PRUNE_STRATEGIES",
    "BaseMemStateCheckpointer",
    "conninfo_of",
    "resolve_target",
    "translate_delta_refusal",
]

PRUNE_STRATEGIES = ("keep_latest", "delete")

_SELECT = """
SELECT c.thread_id, c.checkpoint_ns, c.checkpoint_id, c.parent_checkpoint_id,
       c.checkpoint_type, c.checkpoint, c.metadata,
       (SELECT array_agg(ARRAY[convert_to(b.channel, 'UTF8'), convert_to(b.type, 'UTF8'), b.blob])
        FROM jsonb_each_text(c.channel_versions) v
        JOIN memstate.lg_blobs b
          ON b.thread_id = c.thread_id AND b.checkpoint_ns = c.checkpoint_ns
         AND b.channel = v.key AND b.version = v.value) AS blobs,
       (SELECT array_agg(ARRAY[convert_to(w.task_id, 'UTF8'), convert_to(w.channel, 'UTF8'),
                               convert_to(w.type, 'UTF8'), w.blob, convert_to(w.task_path, 'UTF8'),
                               convert_to(w.idx::text, 'UTF8')])
        FROM memstate.lg_writes w
        WHERE w.thread_id = c.thread_id AND w.checkpoint_ns = c.checkpoint_ns
          AND w.checkpoint_id = c.checkpoint_id) AS writes
FROM memstate.lg_checkpoints c
"""

PUT_SQL = """
WITH blobs AS (
    INSERT INTO memstate.lg_blobs (thread_id, checkpoint_ns, channel, version, type, blob)
    SELECT %(thread_id)s, %(checkpoint_ns)s, b.channel, b.version, b.type, b.blob
    FROM unnest(%(channels)s::text[], %(versions)s::text[], %(types)s::text[], %(blobs)s::bytea[])
         AS b (channel, version, type, blob)
    ON CONFLICT DO NOTHING
)
INSERT INTO memstate.lg_checkpoints AS c (thread_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id,
                                          checkpoint_type, checkpoint, channel_versions, metadata)
VALUES (%(thread_id)s, %(checkpoint_ns)s, %(checkpoint_id)s, %(parent_checkpoint_id)s,
        %(checkpoint_type)s, %(checkpoint)s, %(channel_versions)s, %(metadata)s)
ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id) DO UPDATE SET
    checkpoint_type = excluded.checkpoint_type, checkpoint = excluded.checkpoint,
    channel_versions = excluded.channel_versions, metadata = excluded.metadata
"""

_WRITES_SQL = """
INSERT INTO memstate.lg_writes (thread_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx,
                                channel, type, blob)
SELECT %(thread_id)s, %(checkpoint_ns)s, %(checkpoint_id)s, %(task_id)s, %(task_path)s, w.idx,
       w.channel, w.type, w.blob
FROM unnest(%(idx)s::int[], %(channels)s::text[], %(types)s::text[], %(blobs)s::bytea[])
     AS w (idx, channel, type, blob)
"""
# A task's special writes (errors, interrupts, ...) replace an earlier report of the same
# kind; ordinary writes are written once and a retried put_writes keeps the first.
UPSERT_WRITES_SQL = (
    _WRITES_SQL
    + """
ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO UPDATE SET
    channel = excluded.channel, type = excluded.type, blob = excluded.blob
"""
)
INSERT_WRITES_SQL = (
    _WRITES_SQL
    + """
ON CONFLICT (thread_id, checkpoint_ns, checkpoint_id, task_id, idx) DO NOTHING
"""
)

DELETE_THREAD_SQL = "SELECT memstate.lg_delete_thread(%(thread_id)s)"
COPY_THREAD_SQL = "SELECT memstate.lg_copy_thread(%(source)s, %(target)s)"
DELETE_FOR_RUNS_SQL = "SELECT memstate.lg_delete_for_runs(%(run_ids)s::text[])"
PRUNE_SQL = "SELECT memstate.lg_prune(%(thread_ids)s::text[], %(strategy)s)"

#: One SQL statement and its parameters: what the shells execute.
Statement = tuple[str, dict[str, Any]]

# SQLSTATE raised by memstate.lg_prune for threads that use a DeltaChannel.
DELTA_REFUSED = "MSL01"


def conninfo_of(conn: Any) -> str:
    """A DSN that reaches the database of a connection or pool (password included)."""
    info = getattr(conn, "info", None)
    if info is not None and hasattr(info, "dsn"):
        return make_conninfo(info.dsn, password=info.password) if info.password else info.dsn
    conninfo = getattr(conn, "conninfo", None)
    if isinstance(conninfo, str):
        return conninfo
    raise TypeError(f"cannot tell the DSN of a {type(conn).__name__}")


def translate_delta_refusal(exc: psycopg.Error) -> Exception:
    """memstate.lg_prune's refusals as the errors BaseCheckpointSaver.prune documents."""
    if exc.sqlstate == DELTA_REFUSED:
        return NotImplementedError(exc.diag.message_primary or str(exc))
    if exc.sqlstate == "MSV01":
        return ValidationFailed(exc.diag.message_primary or str(exc))
    return exc


def resolve_target(
    saver: str,
    conn: Any,
    memory: Any,
    *,
    store_type: type[Any],
    conn_types: tuple[type, ...],
) -> tuple[Any, Any]:
    """(connection or pool, memory store or None) from a saver's arguments: a psycopg
    connection or pool, or a memory store given positionally or as ``memory=`` (then
    the saver uses the store's pool, and its ``setup()`` is the store's migrations)."""
    if isinstance(conn, store_type):
        if memory is not None and memory is not conn:
            raise TypeError(f"{saver} takes one memory store, not two")
        conn, memory = None, conn
    if memory is not None:
        if not isinstance(memory, store_type):
            raise TypeError(f"{saver}(memory=...) takes a {store_type.__name__}")
        if conn is not None:
            raise TypeError(f"{saver} takes a connection, a pool or a memory store, not two")
        return memory.pool, memory
    if not isinstance(conn, conn_types):
        names = " or ".join(t.__name__ for t in conn_types)
        raise TypeError(f"{saver} takes a psycopg {names}, or a {store_type.__name__}")
    return conn, None


def _json_default(value: Any) -> Any:
    """JSON for the values LangGraph metadata and filters can hold beyond plain JSON."""
    if hasattr(value, "model_dump"):
        return value.model_dump(mode="json")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, set | frozenset):
        return sorted(value, key=repr)
    raise TypeError(f"checkpoint metadata holds a {type(value).__name__}, which is not JSON")


def _strip_nul(value: Any) -> Any:
    """PostgreSQL's jsonb cannot hold U+0000: drop it from strings and keys (as LangGraph
    does for top-level metadata strings)."""
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, Mapping):
        return {str(k).replace("\x00", ""): _strip_nul(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_strip_nul(v) for v in value]
    return value


def _dumps(value: Any) -> str:
    return json.dumps(_strip_nul(value), default=_json_default, allow_nan=False)


def jsonb(value: Any) -> Jsonb:
    """A jsonb parameter, NUL-free and strict about what is JSON."""
    return Jsonb(value, dumps=_dumps)


def _configurable(config: RunnableConfig) -> dict[str, Any]:
    return config["configurable"]


class BaseMemStateCheckpointer(BaseCheckpointSaver[str]):
    """SQL and conversions of the memstate checkpointers (see the module docstring)."""

    # -- versions ----------------------------------------------------------------------

    def get_next_version(self, current: str | int | float | None, channel: None) -> str:
        """Versions are zero-padded strings (``"00..07.0.4182..."``) that sort as they
        grow, plus a random fraction so two forks of one checkpoint do not collide."""
        if current is None:
            current_v = 0
        elif isinstance(current, int | float):
            current_v = int(current)
        else:
            current_v = int(str(current).split(".")[0])
        return f"{current_v + 1:032}.{random.random():016}"

    # -- statements --------------------------------------------------------------------

    def _put_statement(
        self,
        config: RunnableConfig,
        checkpoint: Checkpoint,
        metadata: CheckpointMetadata,
        new_versions: ChannelVersions,
    ) -> tuple[Statement, RunnableConfig]:
        """The statement that saves a checkpoint, and the config that will name it."""
        conf = _configurable(config)
        thread_id = str(conf["thread_id"])
        checkpoint_ns = conf.get("checkpoint_ns") or ""
        values = checkpoint.get("channel_values") or {}
        channels, versions, types, blobs = [], [], [], []
        for channel, version in new_versions.items():
            if channel in values:
                type_, blob = self.serde.dumps_typed(values[channel])
            else:
                type_, blob = "empty", None
            channels.append(channel)
            versions.append(str(version))
            types.append(type_)
            blobs.append(blob)
        bare = {k: v for k, v in checkpoint.items() if k != "channel_values"}
        checkpoint_type, checkpoint_blob = self.serde.dumps_typed(bare)
        params = {
            "thread_id": thread_id,
            "checkpoint_ns": checkpoint_ns,
            "checkpoint_id": checkpoint["id"],
            "parent_checkpoint_id": conf.get("checkpoint_id"),
            "checkpoint_type": checkpoint_type,
            "checkpoint": checkpoint_blob,
            "channel_versions": jsonb(
                {k: str(v) for k, v in checkpoint["channel_versions"].items()}
            ),
            "metadata": jsonb(get_serializable_checkpoint_metadata(config, metadata)),
            "channels": channels,
            "versions": versions,
            "types": types,
            "blobs": blobs,
        }
        next_config: RunnableConfig = {
            "configurable": {
                "thread_id": thread_id,
                "checkpoint_ns": checkpoint_ns,
                "checkpoint_id": checkpoint["id"],
            }
        }
        return (PUT_SQL, params), next_config

    def _writes_statement(
        self,
        config: RunnableConfig,
        writes: Sequence[tuple[str, Any]],
        task_id: str,
        task_path: str,
    ) -> tuple[str, dict[str, Any]]:
        conf = _configurable(config)
        idx, channels, types, blobs = [], [], [], []
        for i, (channel, value) in enumerate(writes):
            type_, blob = self.serde.dumps_typed(value)
            idx.append(WRITES_IDX_MAP.get(channel, i))
            channels.append(channel)
            types.append(type_)
            blobs.append(blob)
        query = (
            UPSERT_WRITES_SQL if all(w[0] in WRITES_IDX_MAP for w in writes) else INSERT_WRITES_SQL
        )
        return query, {
            "thread_id": str(conf["thread_id"]),
            "checkpoint_ns": conf.get("checkpoint_ns") or "",
            "checkpoint_id": conf["checkpoint_id"],
            "task_id": task_id,
            "task_path": task_path,
            "idx": idx,
            "channels": channels,
            "types": types,
            "blobs": blobs,
        }

    def _get_statement(self, config: RunnableConfig) -> tuple[str, dict[str, Any]]:
        conf = _configurable(config)
        params = {
            "thread_id": str(conf["thread_id"]),
            "checkpoint_ns": conf.get("checkpoint_ns") or "",
        }
        checkpoint_id = get_checkpoint_id(config)
        if checkpoint_id:
            params["checkpoint_id"] = checkpoint_id
            where = (
                "WHERE c.thread_id = %(thread_id)s AND c.checkpoint_ns = %(checkpoint_ns)s "
                "AND c.checkpoint_id = %(checkpoint_id)s"
            )
        else:
            where = (
                "WHERE c.thread_id = %(thread_id)s AND c.checkpoint_ns = %(checkpoint_ns)s "
                "ORDER BY c.checkpoint_id DESC LIMIT 1"
            )
        return _SELECT + where, params

    def _list_statement(
        self,
        config: RunnableConfig | None,
        filter: dict[str, Any] | None,
        before: RunnableConfig | None,
        limit: int | None,
    ) -> tuple[str, dict[str, Any]]:
        wheres: list[str] = []
        params: dict[str, Any] = {}
        if config:
            conf = _configurable(config)
            if conf.get("thread_id") is not None:
                wheres.append("c.thread_id = %(thread_id)s")
                params["thread_id"] = str(conf["thread_id"])
            if conf.get("checkpoint_ns") is not None:
                wheres.append("c.checkpoint_ns = %(checkpoint_ns)s")
                params["checkpoint_ns"] = conf["checkpoint_ns"]
            if checkpoint_id := get_checkpoint_id(config):
                wheres.append("c.checkpoint_id = %(checkpoint_id)s")
                params["checkpoint_id"] = checkpoint_id
        if filter:
            wheres.append("c.metadata @> %(filter)s")
            params["filter"] = jsonb(filter)
        if before is not None and (before_id := get_checkpoint_id(before)):
            wheres.append("c.checkpoint_id < %(before)s")
            params["before"] = before_id
        query = _SELECT + ("WHERE " + " AND ".join(wheres) if wheres else "")
        query += " ORDER BY c.checkpoint_id DESC"
        if limit is not None:
            query += " LIMIT %(limit)s"
            params["limit"] = int(limit)
        return query, params

    @staticmethod
    def _prune_statement(thread_ids: Sequence[str], strategy: str) -> Statement | None:
        if isinstance(thread_ids, str):
            raise TypeError("thread_ids must be a sequence of thread IDs, not a str")
        if strategy not in PRUNE_STRATEGIES:
            raise ValueError(f"Unknown prune strategy: {strategy!r}")
        ids = [str(t) for t in thread_ids]
        return (PRUNE_SQL, {"thread_ids": ids, "strategy": strategy}) if ids else None

    @staticmethod
    def _delete_for_runs_statement(run_ids: Sequence[str]) -> Statement | None:
        if isinstance(run_ids, str):
            raise TypeError("run_ids must be a sequence of run IDs, not a str")
        ids = [str(r) for r in run_ids]
        return (DELETE_FOR_RUNS_SQL, {"run_ids": ids}) if ids else None

    @staticmethod
    def _delete_thread_statement(thread_id: str) -> Statement:
        return DELETE_THREAD_SQL, {"thread_id": str(thread_id)}

    @staticmethod
    def _copy_thread_statement(source_thread_id: str, target_thread_id: str) -> Statement:
        return COPY_THREAD_SQL, {"source": str(source_thread_id), "target": str(target_thread_id)}

    # -- rows ----------------------------------------------------------------------------

    def _load_tuple(self, row: Mapping[str, Any]) -> CheckpointTuple:
        checkpoint = cast(
            Checkpoint, self.serde.loads_typed((row["checkpoint_type"], bytes(row["checkpoint"])))
        )
        values: dict[str, Any] = {}
        for channel, type_, blob in row["blobs"] or ():
            type_name = bytes(type_).decode()
            if type_name != "empty":
                values[bytes(channel).decode()] = self.serde.loads_typed((type_name, bytes(blob)))
        checkpoint["channel_values"] = values
        thread_id, checkpoint_ns = row["thread_id"], row["checkpoint_ns"]
        parent = row["parent_checkpoint_id"]
        return CheckpointTuple(
            config={
                "configurable": {
                    "thread_id": thread_id,
                    "checkpoint_ns": checkpoint_ns,
                    "checkpoint_id": row["checkpoint_id"],
                }
            },
            checkpoint=checkpoint,
            metadata=cast(CheckpointMetadata, row["metadata"]),
            parent_config=(
                {
                    "configurable": {
                        "thread_id": thread_id,
                        "checkpoint_ns": checkpoint_ns,
                        "checkpoint_id": parent,
                    }
                }
                if parent
                else None
            ),
            pending_writes=self._load_writes(row["writes"]),
        )

    def _load_writes(self, writes: Sequence[Sequence[bytes]] | None) -> list[tuple[str, str, Any]]:
        """(task_id, channel, value) in `writes_sort_key` order, as LangGraph replays them."""
        decoded = [
            (
                bytes(task_id).decode(),
                bytes(channel).decode(),
                bytes(type_).decode(),
                bytes(blob),
                bytes(task_path).decode(),
                int(bytes(idx)),
            )
            for task_id, channel, type_, blob, task_path, idx in writes or ()
        ]
        decoded.sort(key=lambda w: writes_sort_key(w[4], w[0], w[5]))
        return [
            (task_id, channel, self.serde.loads_typed((type_, blob)))
            for task_id, channel, type_, blob, _, _ in decoded
        ]
