"""The fast path of the vector checks (checks.plain_vectors) accepts only what the full
checks (check_vectors, check_directed) accept, and leaves everything else to them, so a
search or write refuses the same vectors with the same messages."""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytest

from memstate_pg import ValidationFailed
from memstate_pg._core.checks import MAX_NORM, check_directed, plain_vectors
from memstate_pg._core.ops import StoreCore
from memstate_pg.embedders import HashingEmbedder, check_vectors

from .test_ops import Database, drive

DIM = 8


def _full_checks_pass(vectors: Any, dim: int) -> bool:
    try:
        check_vectors(vectors, dim)
        check_directed([list(map(float, v)) for v in vectors])
    except ValidationFailed:
        return False
    return True


EDGES: list[Any] = [
    [0.0] * DIM,  # no direction
    [1e-46] * DIM,  # rounds to zero in float4
    [7e-46] + [0.0] * (DIM - 1),
    [1.5e-45] + [0.0] * (DIM - 1),  # the smallest float4 subnormal: kept
    [float("nan")] + [1.0] * (DIM - 1),
    [float("inf")] + [1.0] * (DIM - 1),
    [-float("inf")] + [1.0] * (DIM - 1),
    [1e30] + [1.0] * (DIM - 1),  # over MAX_NORM
    [MAX_NORM] + [0.0] * (DIM - 1),  # at MAX_NORM: the full checks decide
    [MAX_NORM / 2] * 2 + [0.0] * (DIM - 2),
    [4e38] + [1.0] * (DIM - 1),  # beyond float4
    [True] + [1.0] * (DIM - 1),  # a bool is not a number here
    ["1.0"] + [1.0] * (DIM - 1),
    [None] + [1.0] * (DIM - 1),
    [1] + [1.0] * (DIM - 1),  # an int: fine, but the full checks say so
    [1.0] * (DIM - 1),  # short
    [1.0] * (DIM + 1),  # long
    tuple([1.0] * DIM),
    np.ones(DIM, dtype=np.float32),
    [np.float64(1.0)] * DIM,
    [0.5, -0.25, 1e-3, 3.0, -7.5, 0.0, 1e10, -1e-10],
]


@pytest.mark.parametrize("vec", EDGES, ids=range(len(EDGES)))
def test_the_fast_path_accepts_only_what_the_full_checks_accept(vec: Any) -> None:
    if plain_vectors([vec], DIM):
        assert _full_checks_pass([vec], DIM)
        assert type(vec) is list and all(type(x) is float for x in vec)


def test_the_fast_path_takes_ordinary_vectors_and_refuses_odd_ones() -> None:
    rng = random.Random(3)
    for _ in range(200):
        dim = rng.choice((1, 3, 8, 384, 1536))
        vecs = [[rng.gauss(0, 10 ** rng.randint(-30, 15)) for _ in range(dim)] for _ in range(2)]
        if plain_vectors(vecs, dim):
            assert _full_checks_pass(vecs, dim)
        else:  # only a vector the full checks refuse, or a norm near a bound
            norms = [math.hypot(*v) for v in vecs]
            assert not _full_checks_pass(vecs, dim) or any(n > MAX_NORM / 2 for n in norms)
    assert plain_vectors([[0.6, 0.8]], 2)
    assert not plain_vectors(([0.6, 0.8],), 2)  # not a list: the full checks look at it
    for bad in ([0.0, 0.0], [True, 1.0], [float("nan"), 1.0], [1e20, 0.0], [1, 1.0]):
        assert not plain_vectors([[0.6, 0.8], bad], 2)


@pytest.mark.parametrize(
    ("vec", "message"),
    [
        ([0.0] * DIM, "all zeros"),
        ([1e-46] * DIM, "all zeros"),
        ([1e30] + [1.0] * (DIM - 1), "too long"),
        ([float("nan")] + [1.0] * (DIM - 1), "NaN"),
        ([True] + [1.0] * (DIM - 1), "bool"),
        ([1.0] * (DIM + 1), "dimensions"),
    ],
)
def test_search_refuses_bad_query_vectors_with_the_full_checks_message(
    vec: list[Any], message: str
) -> None:
    core = StoreCore(embedder=HashingEmbedder(dim=DIM))
    with pytest.raises(ValidationFailed, match=message):
        drive(core._op_search(vec, k=3), Database())
