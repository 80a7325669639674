"""Pixel- and region-level bootstrap intervals that resample IMAGES, checked against a slow hand loop."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from oddspot.errors import OddspotError
from oddspot.metrics import AUPRO
from oddspot.metrics.bootstrap import (
    PixelStats,
    counts_of,
    pixel_bootstrap_ci,
    pixel_metrics_weighted,
    resample_indices,
)


def make_images(n: int, seed: int, levels: int | None = 32, size: int = 12):
    """Maps with few distinct values (levels) or continuous ones; a blob mask on some images."""
    rng = np.random.default_rng(seed)
    maps, masks = [], []
    for i in range(n):
        m = np.zeros((size, size), bool)
        if i % 3:
            r, c = rng.integers(0, size - 4, 2)
            m[r:r + rng.integers(1, 4), c:c + rng.integers(1, 4)] = True
            if i % 4 == 0:
                m[-1, -1] = True  # a second region
        a = rng.random((size, size)) + 0.6 * m
        if levels:
            a = np.round(a * levels) / levels
        maps.append(a.astype(np.float32))
        masks.append(m)
    return maps, masks


def stats_of(maps, masks) -> PixelStats:
    stats = PixelStats()
    for a, m in zip(maps, masks):
        stats.add(a, m)
    return stats


def reference(maps, masks, index, limit=0.3):
    """Metrics of one resample from the pixels themselves: sklearn and the AUPRO class."""
    s = np.concatenate([maps[i].ravel() for i in index])
    y = np.concatenate([masks[i].ravel() for i in index])
    if y.all() or not y.any():
        return {"auroc": np.nan, "ap": np.nan, "aupro": np.nan}
    pro = AUPRO(limit)
    pro.update(np.stack([maps[i] for i in index]), np.stack([masks[i] for i in index]))
    return {"auroc": roc_auc_score(y, s), "ap": average_precision_score(y, s), "aupro": pro.compute()["aupro"]}


def test_weighted_metrics_equal_a_hand_loop_over_resamples():
    maps, masks = make_images(30, seed=3)
    stats = stats_of(maps, masks)
    mats = stats.matrices()
    assert mats[3].all()  # 32 levels: every grid bin holds one distinct score, so the metrics are exact
    idx = next(resample_indices(30, 12, seed=5, block=12))
    got = pixel_metrics_weighted(mats, counts_of(idx, 30))
    for r in range(idx.shape[0]):
        ref = reference(maps, masks, idx[r])
        for name in ("auroc", "ap", "aupro"):
            np.testing.assert_allclose(got[name][r], ref[name], rtol=1e-9, atol=1e-12, err_msg=name)
            assert got[f"{name}_bound"][r] == 0.0


def test_all_ones_weights_give_the_full_data_metrics():
    maps, masks = make_images(10, seed=1)
    got = pixel_metrics_weighted(stats_of(maps, masks).matrices(), np.ones((1, 10)))
    ref = reference(maps, masks, np.arange(10))
    for name in ("auroc", "ap", "aupro"):
        assert got[name][0] == pytest.approx(ref[name], rel=1e-12)


def test_continuous_maps_stay_within_the_reported_bound():
    maps, masks = make_images(15, seed=2, levels=None, size=16)
    mats = stats_of(maps, masks).matrices()
    assert not mats[3].all()
    idx = next(resample_indices(15, 6, seed=0, block=6))
    got = pixel_metrics_weighted(mats, counts_of(idx, 15))
    for r in range(6):
        ref = reference(maps, masks, idx[r])
        for name in ("auroc", "ap", "aupro"):
            assert abs(got[name][r] - ref[name]) <= got[f"{name}_bound"][r] + 1e-12, name


def test_interval_is_seeded_recorded_and_brackets_the_estimate():
    maps, masks = make_images(20, seed=4)
    stats = stats_of(maps, masks)
    a = pixel_bootstrap_ci(stats, n=200, seed=7)
    assert a == pixel_bootstrap_ci(stats, n=200, seed=7)
    assert a != pixel_bootstrap_ci(stats, n=200, seed=8)
    assert (a["n"], a["seed"], a["level"]) == (200, 7, 0.95)
    assert a["error_bound"] == {"auroc": 0.0, "ap": 0.0, "aupro": 0.0}
    full = reference(maps, masks, np.arange(20))
    for name in ("auroc", "ap", "aupro"):
        lo, hi = a[name]
        assert lo <= full[name] <= hi


def test_statistics_round_trip_and_bad_input():
    maps, masks = make_images(5, seed=0)
    stats = stats_of(maps, masks)
    arrays = stats.arrays()
    back = PixelStats.from_arrays(arrays)
    np.testing.assert_array_equal(pixel_metrics_weighted(back.matrices(), np.ones((1, 5)))["auroc"],
                                  pixel_metrics_weighted(stats.matrices(), np.ones((1, 5)))["auroc"])
    broken = dict(arrays, offsets=arrays["offsets"][:-1])
    with pytest.raises(OddspotError, match="inconsistent"):
        PixelStats.from_arrays(broken, "x.npz")
    with pytest.raises(OddspotError, match="missing"):
        PixelStats.from_arrays({}, "x.npz")
    with pytest.raises(OddspotError, match="NaN"):
        PixelStats().add(np.full((2, 2), np.nan), np.zeros((2, 2), bool))
    with pytest.raises(OddspotError, match="no images"):
        pixel_bootstrap_ci(PixelStats(), n=10)


def test_reliability_bins_and_ece_equal_a_hand_loop():
    from oddspot.metrics.reliability import reliability

    rng = np.random.default_rng(0)
    s = np.r_[rng.random(50), 0.0, 1.0, 0.5]
    y = (rng.random(s.size) < s).astype(int)
    got = reliability(s, y, n_bins=5)
    ece = 0.0
    for b in range(5):
        lo, hi = b / 5, (b + 1) / 5
        inside = [(si, yi) for si, yi in zip(s, y) if lo <= si < hi or (b == 4 and si == 1.0)]
        row = got["bins"][b]
        assert row["n"] == len(inside)
        if inside:
            mean, freq = np.mean([v[0] for v in inside]), np.mean([v[1] for v in inside])
            assert row["mean_score"] == pytest.approx(mean) and row["frequency"] == pytest.approx(freq)
            ece += len(inside) / s.size * abs(freq - mean)
    assert got["ece"] == pytest.approx(ece)
    with pytest.raises(OddspotError, match="in \\[0, 1\\]"):
        reliability([1.5], [1])


def test_reliability_diagram_is_drawn_for_the_report():
    from oddspot.metrics.reliability import reliability
    from oddspot.report.plots import reliability_plot

    rel = reliability([0.1, 0.2, 0.7, 0.9], [0, 1, 1, 1], n_bins=4, kind="normalized score (not a probability)")
    assert reliability_plot(rel)[:4] == b"\x89PNG"
    assert reliability_plot({"bins": [{"n": 0}]}) is None
    assert reliability_plot({"bins": [{"n": 2, "mean_score": "x", "frequency": 1}]}) is None  # an edited file
