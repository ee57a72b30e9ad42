"""Input checks shared by the operations: ints, limits, commit metadata, fact ids, vectors.

Each raises ValidationFailed with a message a caller can act on; the database checks again
for SQL callers.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Sequence
from operator import countOf
from typing import Any
from uuid import UUID

from ..errors import ValidationFailed
from ..types import check_name

INT4_MAX = 2**31 - 1
INT8_MIN, INT8_MAX = -(2**63), 2**63 - 1


def check_int(label: str, value: Any, low: int = INT8_MIN, high: int = INT8_MAX) -> int:
    """An int (not a bool) within [low, high], else ValidationFailed."""
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise ValidationFailed(f"{label} must be an int between {low} and {high}")
    return value


_F32_ZERO = 7.006492321624085e-46  # below half the smallest float4 subnormal: stored as 0
MAX_NORM = 1e19  # pgvector sums squares in float4: a longer vector overflows and scores are NaN


def check_directed(vectors: Sequence[Sequence[float]]) -> None:
    """Cosine similarity needs a direction and a length float4 can square: refuse zero
    vectors and vectors whose norm would overflow (NaN scores, or never found)."""
    for i, vec in enumerate(vectors):
        # C loops (max, sum of map): a few microseconds for 384 floats
        if not vec or max(map(abs, vec)) <= _F32_ZERO:
            raise ValidationFailed(
                f"vector {i} is all zeros: it has no direction to compare by cosine"
            )
        if sum(map(operator.mul, vec, vec)) > MAX_NORM**2:
            raise ValidationFailed(f"vector {i} is too long (norm over {MAX_NORM:g}): normalise it")


# The fast path of plain_vectors stays this far inside check_directed's bounds, so a norm
# that rounds differently in math.hypot than in math.fsum is left to the exact checks.
_FAST_NORM_MAX = MAX_NORM * (1 - 1e-9)


def plain_vectors(vectors: Any, dim: int) -> bool:
    """True when `vectors` is a list of lists of exactly `dim` Python floats, each with a
    norm well inside (0, MAX_NORM] and a component float4 keeps: everything check_vectors
    and check_directed ask, in C loops (a type count and one math.hypot per vector: about
    a tenth of their cost). A finite norm within MAX_NORM also bounds every component far
    inside float4's range; a norm over sqrt(dim) times _F32_ZERO means some component is
    over _F32_ZERO. False: run check_vectors and check_directed, which find what is wrong
    and say so (or accept what this fast path leaves to them, e.g. ints, numpy arrays)."""
    if type(vectors) is not list:
        return False
    low = 2 * _F32_ZERO * math.sqrt(dim)
    for vec in vectors:
        if type(vec) is not list or len(vec) != dim or countOf(map(type, vec), float) != dim:
            return False
        if not low < math.hypot(*vec) < _FAST_NORM_MAX:  # False for NaN too
            return False
    return True


def check_limit(limit: Any) -> int | None:
    return None if limit is None else check_int("limit", limit, 0)


def check_meta(*, session_id: Any = None, actor: Any = None, reason: Any = None) -> None:
    """Checks the commit metadata every write carries (text, no NUL, valid Unicode, bounded)."""
    check_name("session_id", session_id, optional=True)
    check_name("actor", actor, optional=True)
    if reason is not None:
        check_name("reason", reason, limit=2000)


def to_uuid(value: Any) -> UUID:
    if isinstance(value, UUID):
        return value
    try:
        return UUID(str(value))
    except ValueError:
        raise ValidationFailed(f"{value!r} is not a fact id (UUID)") from None


_MIRROR_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,63}$")


def check_mirror_name(name: Any) -> str:
    """A registered mirror's name: 1 to 63 of A-Z a-z 0-9 _ . - (the registry's CHECK)."""
    if not isinstance(name, str) or not _MIRROR_NAME.fullmatch(name):
        raise ValidationFailed(f"mirror name {name!r} must be 1 to 63 of A-Z a-z 0-9 _ . -")
    return name
