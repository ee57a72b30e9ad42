"""Sending vectors to pgvector fast.

Formatting 384 floats as text costs about half a millisecond in Python (float repr),
as much as the rest of a commit's client work. So a vector travels as `Vec`, which
psycopg dumps in pgvector's binary format (`struct.pack`, microseconds) on connections
that know the `vector` type's oid, and as text everywhere else (a caller's own pool,
connections opened before the extension existed). The SQL is the same either way
(`%s::vector`).
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.types import TypeInfo


class Vec:
    """A vector on its way to a `vector` parameter."""

    __slots__ = ("values",)

    def __init__(self, values: Sequence[float]) -> None:
        self.values = values


def vector_text(vec: Sequence[float]) -> str:
    """pgvector's text form; floats are written shortest-exact, parsed as float4."""
    return "[" + ",".join(map(repr, map(float, vec))) + "]"


class VecTextDumper(Dumper):
    oid = 0  # unknown: the `::vector` cast in the SQL types it

    def dump(self, obj: Vec) -> bytes:
        return vector_text(obj.values).encode()


class _VecBinaryDumper(Dumper):
    format = Format.BINARY

    def dump(self, obj: Vec) -> bytes:
        values = obj.values
        return struct.pack(f">HH{len(values)}f", len(values), 0, *values)


class VecList:
    """Vectors on their way to a `vector[]` parameter (memstate.write_facts)."""

    __slots__ = ("items",)

    def __init__(self, items: Sequence[Sequence[float]]) -> None:
        self.items = items


class VecListTextDumper(Dumper):
    oid = 0  # unknown: the `::vector[]` cast in the SQL types it

    def dump(self, obj: VecList) -> bytes:
        return ("{" + ",".join('"' + vector_text(v) + '"' for v in obj.items) + "}").encode()


class _VecListBinaryDumper(Dumper):
    """PostgreSQL's binary array format: one dimension, no NULL, pgvector's binary
    elements (the connection's vector oid, set by configure_connection)."""

    format = Format.BINARY
    element_oid = 0

    def dump(self, obj: VecList) -> bytes:
        items = obj.items
        parts = [struct.pack(">iiIii", 1, 0, self.element_oid, len(items), 1)]
        for values in items:
            n = len(values)
            parts.append(struct.pack(f">iHH{n}f", 4 + 4 * n, n, 0, *values))
        return b"".join(parts)


psycopg.adapters.register_dumper(Vec, VecTextDumper)  # the default, for any connection
psycopg.adapters.register_dumper(VecList, VecListTextDumper)


def _register_binary(conn: psycopg.Connection | psycopg.AsyncConnection, info: TypeInfo) -> None:
    conn.adapters.register_dumper(
        Vec, type("VecBinaryDumper", (_VecBinaryDumper,), {"oid": info.oid})
    )
    conn.adapters.register_dumper(
        VecList,
        type(
            "VecListBinaryDumper",
            (_VecListBinaryDumper,),
            {"oid": info.array_oid, "element_oid": info.oid},
        ),
    )


def configure_connection(conn: psycopg.Connection) -> None:
    """Pool `configure` hook: dump Vec in binary when the vector type exists here."""
    info = TypeInfo.fetch(conn, "vector")
    if info is not None:
        _register_binary(conn, info)


async def aconfigure_connection(conn: psycopg.AsyncConnection) -> None:
    info = await TypeInfo.fetch(conn, "vector")
    if info is not None:
        _register_binary(conn, info)
