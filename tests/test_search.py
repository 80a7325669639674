"""Memory-bank search: the HNSW option against the exact search it approximates."""

from __future__ import annotations

import numpy as np
import pytest

from oddspot.errors import OddspotError
from oddspot.neighbors import KNNIndex


@pytest.fixture(scope="module")
def bank_and_queries():
    rng = np.random.default_rng(0)
    centers = rng.normal(size=(40, 24)).astype(np.float32) * 4
    bank = (centers[rng.integers(0, 40, 3000)] + rng.normal(size=(3000, 24))).astype(np.float32)
    queries = (centers[rng.integers(0, 40, 600)] + rng.normal(size=(600, 24))).astype(np.float32)
    return bank, queries


@pytest.mark.parametrize("search", ["hnsw", "ivf"])
def test_approximate_search_finds_almost_every_nearest_neighbour_and_never_a_nearer_one(bank_and_queries, search):
    bank, queries = bank_and_queries
    d0, i0 = KNNIndex(bank).search(queries, 3)
    d1, i1 = KNNIndex(bank, search).search(queries, 3)
    assert np.mean(i0[:, 0] == i1[:, 0]) > 0.95
    assert (d1 >= d0 - 1e-6).all()  # what it finds is re-ranked exactly: never closer than the truth
    found = i0[:, 0] == i1[:, 0]
    assert np.array_equal(d0[found, 0], d1[found, 0])  # same neighbour, same (exact) distance


@pytest.mark.parametrize("search", ["hnsw", "ivf"])
def test_approximate_search_is_deterministic_and_batch_independent(bank_and_queries, search):
    bank, queries = bank_and_queries
    a = KNNIndex(bank, search).search(queries)
    b = KNNIndex(bank, search).search(queries)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    index = KNNIndex(bank, search)
    alone = np.concatenate([index.search(queries[i:i + 1])[0] for i in range(0, 600, 37)])
    assert np.array_equal(alone, a[0][::37])


def test_unknown_search_is_a_one_line_error(bank_and_queries):
    with pytest.raises(OddspotError, match="--search 'lsh' unknown"):
        KNNIndex(bank_and_queries[0], "lsh")
