"""The coreset is exactly the textbook farthest-first traversal, only faster."""

from __future__ import annotations

import numpy as np
import pytest

from oddspot.detectors.memory_bank import KNNIndex, _greedy_k_center, greedy_coreset, random_projection
from oddspot.errors import OddspotError


def textbook(x: np.ndarray, k: int, start: int) -> np.ndarray:
    picks = [start]
    d = ((x - x[start]) ** 2).sum(1)
    for _ in range(k - 1):
        c = int(np.argmax(d))
        picks.append(c)
        d = np.minimum(d, ((x - x[c]) ** 2).sum(1))
    return np.array(picks)


@pytest.mark.parametrize("n,dim,candidates", [(600, 8, 64), (3000, 40, 256), (1500, 160, 2048)])
def test_same_picks_as_textbook_loop(n, dim, candidates):
    rng = np.random.default_rng(n)
    x = (rng.standard_normal((n, dim)) * rng.uniform(0.2, 3, dim)).astype(np.float32)
    ours = _greedy_k_center(x, n // 10, 7, candidates=candidates, chunk=512)
    assert np.array_equal(ours, textbook(x.astype(np.float64), n // 10, 7))


def test_projection_seed_and_ratio():
    x = np.random.default_rng(0).standard_normal((2000, 200)).astype(np.float32)
    a, b = greedy_coreset(x, 0.05, seed=1), greedy_coreset(x, 0.05, seed=1)
    assert np.array_equal(a, b) and len(a) == 100 and len(set(a.tolist())) == 100
    assert random_projection(x, 128, 0).shape == (2000, 128)
    with pytest.raises(OddspotError, match="ratio"):
        greedy_coreset(x, 0.0)


def test_duplicates_stop_early():
    x = np.repeat(np.eye(3, dtype=np.float32), 50, axis=0)
    assert sorted(x[greedy_coreset(x, 0.5)].argmax(1).tolist()) == [0, 1, 2]


def test_knn_is_exact():
    rng = np.random.default_rng(0)
    bank, q = rng.standard_normal((300, 16)), rng.standard_normal((50, 16))
    dist, idx = KNNIndex(bank).search(q, 3)
    ref = np.sqrt(((q[:, None] - bank[None]) ** 2).sum(-1))
    assert np.array_equal(idx, np.argsort(ref, axis=1)[:, :3])
    assert np.allclose(dist, np.sort(ref, axis=1)[:, :3], atol=1e-4)
