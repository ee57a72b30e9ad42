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


psycopg.adapters.register_dumper(Vec, VecTextDumper)  # the default, for any connection


def configure_connection(conn: psycopg.Connection) -> None:
    """Pool `configure` hook: dump Vec in binary when the vector type exists here."""
    info = TypeInfo.fetch(conn, "vector")
    if info is not None:
        conn.adapters.register_dumper(
            Vec, type("VecBinaryDumper", (_VecBinaryDumper,), {"oid": info.oid})
        )


async def aconfigure_connection(conn: psycopg.AsyncConnection) -> None:
    info = await TypeInfo.fetch(conn, "vector")
    if info is not None:
        conn.adapters.register_dumper(
            Vec, type("VecBinaryDumper", (_VecBinaryDumper,), {"oid": info.oid})
        )
