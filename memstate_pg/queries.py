"""Named SQL queries, loaded from sql/queries.sql (`-- name: x` starts query `x`)."""

from __future__ import annotations

import re
from functools import cache

from .sqlfiles import read_sql

_NAME = re.compile(r"^-- name: (\w+)\s*$", re.MULTILINE)


@cache
def load(filename: str = "queries.sql") -> dict[str, str]:
    text = read_sql(filename)
    parts = _NAME.split(text)
    queries: dict[str, str] = {}
    for name, body in zip(parts[1::2], parts[2::2], strict=True):
        lines = [ln for ln in body.strip().splitlines() if not ln.lstrip().startswith("--")]
        queries[name] = "\n".join(lines).strip()
    return queries


def get(name: str) -> str:
    return load()[name]
