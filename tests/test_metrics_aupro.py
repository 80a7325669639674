"""AUPRO against an in-memory reference written from its definition (MVTec AD, as in `oddspot.metrics.aupro`)."""

from __future__ import annotations

from bisect import bisect

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import ndimage

from oddspot.errors import OddspotError
from oddspot.metrics import AUPRO, UndefinedMetricWarning

TOL = 1e-9


def aupro_reference(maps: np.ndarray, masks: np.ndarray, limit: float) -> float:
    """Sort every pixel, walk the thresholds, keep the last point of each tie, integrate to `limit`."""
    scores, fp, pro = [], [], []
    n_regions = 0
    for amap, mask in zip(maps, masks):
        labels, n = ndimage.label(mask, structure=np.ones((3, 3)))
        n_regions += n
        sizes = np.bincount(labels.ravel())
        scores.append(amap.ravel().astype(np.float64))
        fp.append((~mask).ravel().astype(np.float64))
        pro.append(np.where(mask, 1.0 / sizes[labels], 0.0).ravel())
    scores, fp, pro = (np.concatenate(a) for a in (scores, fp, pro))
    order = np.argsort(-scores, kind="stable")
    scores, fp, pro = scores[order], fp[order], pro[order]
    fpr = np.cumsum(fp) / fp.sum()
    pros = np.cumsum(pro) / n_regions
    keep = np.append(np.diff(scores) != 0, True)
    x = np.concatenate(([0.0], fpr[keep]))
    y = np.concatenate(([0.0], pros[keep]))
    area = 0.0
    for i in range(1, len(x)):
        if x[i] > limit:
            break
        area += (x[i] - x[i - 1]) * (y[i] + y[i - 1]) / 2
    if limit not in x:
        ins = bisect(list(x), limit)
        y_limit = y[ins - 1] + (y[ins] - y[ins - 1]) * (limit - x[ins - 1]) / (x[ins] - x[ins - 1])
        area += (limit - x[ins - 1]) * (y[ins - 1] + y_limit) / 2
    return area / limit


@st.composite
def images(draw):
    n, h, w = draw(st.integers(1, 5)), draw(st.integers(1, 12)), draw(st.integers(1, 12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    masks = rng.random((n, h, w)) < draw(st.sampled_from([0.05, 0.2, 0.5]))
    masks[0].flat[0] = True
    masks[-1].flat[-1] = False
    if draw(st.booleans()):
        maps = rng.integers(0, 5, (n, h, w)).astype(np.float32) + masks * draw(st.sampled_from([0, 1, 2]))
    else:
        maps = rng.normal(size=(n, h, w)) + masks * 1.5
    cuts = draw(st.lists(st.integers(0, n), max_size=3))
    return maps, masks, cuts


def feed(metric: AUPRO, maps, masks, cuts) -> None:
    bounds = [0, *sorted(cuts), len(maps)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        if b - a == 1 and a % 2:
            metric.update(maps[a], masks[a])
        elif b > a:
            metric.update(maps[a:b], masks[a:b])


@settings(max_examples=120, deadline=None)
@given(images(), st.sampled_from([0.3, 0.05, 1.0, 0.5]), st.integers(1, 50))
def test_aupro_equals_reference_in_any_batching(data, limit, block_size):
    maps, masks, cuts = data
    assume(masks.any() and not masks.all())
    m = AUPRO(fpr_limit=limit, block_size=block_size)
    feed(m, maps, masks, cuts)
    got = m.compute()
    assert got["aupro"] == pytest.approx(aupro_reference(maps, masks, limit), abs=TOL)
    assert got["exact"] and got["error_bound"] == 0.0
    one_shot = AUPRO(fpr_limit=limit)
    one_shot.update(maps, masks)
    assert one_shot.compute() == got


@settings(max_examples=60, deadline=None)
@given(images(), st.integers(1, 30), st.integers(1, 20))
def test_binned_aupro_stays_within_its_bound(data, cap, block_size):
    maps, masks, cuts = data
    assume(masks.any() and not masks.all())
    m = AUPRO(max_exact_values=cap, max_bins=1024, block_size=block_size)
    feed(m, maps, masks, cuts)
    got = m.compute()
    assert abs(got["aupro"] - aupro_reference(maps, masks, 0.3)) <= got["error_bound"] + TOL


def test_larger_images_with_many_distinct_scores():
    rng = np.random.default_rng(4)
    masks = np.zeros((4, 96, 96), bool)
    masks[0, 10:30, 10:40] = True
    masks[1, 50:52, 5:90] = True
    masks[3, 60:, 60:] = True
    masks[3, 5:8, 5:8] = True
    maps = rng.normal(size=masks.shape) + 2.0 * masks  # float64, all distinct: sorted, not hashed
    one_by_one = AUPRO(block_size=5000)
    for amap, mask in zip(maps, masks):
        one_by_one.update(amap, mask)
    got = one_by_one.compute()
    assert got["n_regions"] == 4
    assert got["aupro"] == pytest.approx(aupro_reference(maps, masks, 0.3), abs=TOL)
    batched = AUPRO(block_size=5000)
    batched.update(maps, masks)
    assert batched.compute() == got


def test_regions_are_8_connected_and_never_span_images():
    masks = np.zeros((2, 4, 4), bool)
    masks[0, 0, 0] = masks[0, 1, 1] = True  # diagonal neighbours: one region
    masks[1, 0, 0] = True  # same position in the next image: its own region
    maps = np.zeros((2, 4, 4))
    m = AUPRO()
    m.update(maps, masks)
    assert m.compute()["n_regions"] == 2


def test_perfect_and_useless_maps():
    masks = np.zeros((3, 8, 8), bool)
    masks[0, 2:4, 2:5] = True
    masks[1, 6:, :2] = True
    perfect = AUPRO()
    perfect.update(masks.astype(np.float32), masks)
    assert perfect.compute()["aupro"] == 1.0
    constant = AUPRO(fpr_limit=0.3)
    constant.update(np.zeros(masks.shape), masks)
    # one tied point (1, 1): the chord from (0, 0) gives PRO 0.3 at FPR 0.3, area 0.045 / 0.3
    assert constant.compute()["aupro"] == pytest.approx(0.15)
    curve = perfect.curve()
    assert curve["fpr"][0] == 0.0 and curve["pro"][-1] == pytest.approx(1.0)


def test_degenerate_inputs_warn_and_bad_inputs_raise():
    m = AUPRO()
    m.update(np.zeros((4, 4)), np.zeros((4, 4), bool))
    with pytest.warns(UndefinedMetricWarning, match="no anomalous regions"):
        assert np.isnan(m.compute()["aupro"])
    m = AUPRO()
    m.update(np.zeros((4, 4)), np.ones((4, 4), bool))
    with pytest.warns(UndefinedMetricWarning, match="no anomaly-free pixels"):
        assert np.isnan(m.compute()["aupro"])
    with pytest.raises(OddspotError, match="one shape"):
        m.update(np.zeros((4, 4)), np.zeros((4, 5), bool))
    with pytest.raises(OddspotError, match="NaN"):
        m.update(np.full((2, 2), np.nan), np.zeros((2, 2), bool))
    with pytest.raises(OddspotError, match="fpr_limit"):
        AUPRO(fpr_limit=0.0)
