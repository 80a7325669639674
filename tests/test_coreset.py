"""The coreset is the textbook farthest-first traversal (up to the order of ties and float32 near-ties), only faster."""

from __future__ import annotations

import numpy as np
import pytest

from oddspot.detectors.memory_bank import _greedy_k_center, greedy_coreset, random_projection
from oddspot.neighbors import KNNIndex
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


def assert_farthest_first(x: np.ndarray, picks: np.ndarray, rtol: float = 1e-5) -> None:
    """Each pick is the farthest point from the earlier ones, up to float32 rounding of near-ties."""
    x = x.astype(np.float64)
    d = ((x - x[picks[0]]) ** 2).sum(1)
    for t, p in enumerate(picks[1:], 1):
        assert d[p] >= d.max() * (1 - rtol), f"pick {t} is {d[p]}, the farthest point is {d.max()}"
        d = np.minimum(d, ((x - x[p]) ** 2).sum(1))


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """Blobs of very different spreads: bounds freeze and thaw many times during the traversal."""
    rng = np.random.default_rng(seed)
    means = rng.standard_normal((20, dim)) * 5
    spread = rng.uniform(0.05, 2.0, (n, 1))
    return (means[rng.integers(0, 20, n)] + rng.standard_normal((n, dim)) * spread).astype(np.float32)


@pytest.mark.parametrize("n,dim,k,candidates,min_centers", [(3000, 16, 1500, 16, 8), (2000, 40, 400, 64, 256)])
def test_lazy_bounds_keep_textbook_order(n, dim, k, candidates, min_centers):
    x = clustered(n, dim, n)
    stats: dict = {}
    ours = _greedy_k_center(x, k, 3, candidates=candidates, chunk=256, min_centers=min_centers, stats=stats)
    assert ours[0] == 3 and len(set(ours.tolist())) == k
    assert_farthest_first(x, ours)
    assert stats["distance_evaluations"] < n * k  # the lazy bounds skipped work


def test_many_rounds_grow_the_seen_bitset():
    x = clustered(3000, 16, 1)
    stats: dict = {}
    ours = _greedy_k_center(x, 1500, 0, candidates=16, min_centers=8, stats=stats)
    assert stats["rounds"] > 64
    assert_farthest_first(x, ours)


def test_farthest_first_check_can_fail():
    x = clustered(500, 8, 2)
    picks = textbook(x.astype(np.float64), 50, 0)
    picks[20], picks[30] = picks[30], picks[20]
    with pytest.raises(AssertionError, match="pick 20"):
        assert_farthest_first(x, picks)


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


def test_tight_clusters_far_from_the_mean_keep_their_order():
    # Distances a million times smaller than the norms: |x|^2 + |c|^2 - 2 x.c alone rounds them away.
    rng = np.random.default_rng(0)
    means = rng.standard_normal((5, 64)).astype(np.float32) * 10
    x = means[rng.integers(0, 5, 5000)] + rng.standard_normal((5000, 64)).astype(np.float32) * 1e-2
    assert len(greedy_coreset(x, 0.1, projection_dim=64)) == 500
    assert_farthest_first(x, _greedy_k_center(x, 500, 0), rtol=1e-4)


@pytest.mark.parametrize("x", [
    np.random.default_rng(0).integers(0, 3, (500, 4)).astype(np.float32),
    np.repeat(np.random.default_rng(0).standard_normal((10, 4)).astype(np.float32), 20, axis=0),
])
def test_no_duplicate_rows_in_the_coreset(x):
    picks = greedy_coreset(x, 0.5)
    distinct = {tuple(row) for row in x}
    assert len({tuple(row) for row in x[picks]}) == len(picks) == min(len(distinct), 250)


def test_bad_features_and_settings_are_refused():
    x = np.ones((100, 4), np.float32)
    x[3, 1] = np.nan
    with pytest.raises(OddspotError, match="NaN"):
        greedy_coreset(x, 0.1)
    with pytest.raises(ValueError, match="freeze"):
        _greedy_k_center(np.eye(8, dtype=np.float32), 4, 0, freeze=1.5)


def test_knn_is_exact():
    rng = np.random.default_rng(0)
    bank, q = rng.standard_normal((300, 16)), rng.standard_normal((50, 16))
    dist, idx = KNNIndex(bank).search(q, 3)
    ref = np.sqrt(((q[:, None] - bank[None]) ** 2).sum(-1))
    assert np.array_equal(idx, np.argsort(ref, axis=1)[:, :3])
    assert np.allclose(dist, np.sort(ref, axis=1)[:, :3], atol=1e-4)
