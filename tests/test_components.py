"""SegmentMeIfYouCan component metrics (sIoU, PPV, mean F1): hand-made cases for each rule, and random scenes
against a component-by-component reference written from the benchmark's definitions."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from oddspot.errors import OddspotError
from oddspot.metrics.components import SIOU_THRESHOLDS, ComponentMetrics, image_components

EIGHT = np.ones((3, 3), bool)


def _reference(scores, target, valid, threshold, min_pred, min_gt):
    """One loop per component, straight from the definitions."""
    gt, n_gt = ndimage.label(target & valid, structure=EIGHT)
    pred, n_pred = ndimage.label((scores >= threshold) & valid, structure=EIGHT)
    for j in range(1, n_pred + 1):
        if (pred == j).sum() < min_pred:
            pred[pred == j] = 0
    roi = valid.copy()
    for k in range(1, n_gt + 1):
        if (gt == k).sum() < min_gt:
            roi[gt == k] = False
    siou, ppv = [], []
    for k in range(1, n_gt + 1):
        comp = (gt == k) & roi
        if not comp.any():
            continue
        touching = set(np.unique(pred[comp])) - {0}
        covered = np.isin(pred, list(touching)) & roi
        inter = int((comp & covered).sum())
        union = int(comp.sum()) + int((covered & (gt == 0)).sum())
        siou.append(inter / union)
    for j in range(1, n_pred + 1):
        comp = (pred == j) & roi
        if comp.any():
            ppv.append(int((comp & (gt > 0)).sum()) / int(comp.sum()))
    return np.array(siou), np.array(ppv)


def test_one_prediction_over_two_adjacent_anomalies_is_not_punished_twice():
    target = np.zeros((20, 30), bool)
    target[5:10, 2:8] = True   # anomaly A, 30 px
    target[5:10, 10:16] = True  # anomaly B, 30 px (not touching A)
    scores = np.zeros((20, 30))
    scores[4:11, 2:16] = 1.0  # one prediction over both and the 14 + 14 + 10 pixels around and between them
    siou, ppv, size = image_components(scores, target, np.ones_like(target), 0.5, 0, 0)
    background = 7 * 14 - 60
    assert siou == pytest.approx([30 / (30 + background)] * 2)  # B's pixels are not in A's union, and back
    assert ppv == pytest.approx([60 / 98]) and size.tolist() == [98]


def test_small_components_void_and_thresholds_follow_the_rules():
    target = np.zeros((30, 30), bool)
    target[2:12, 2:12] = True  # 100 px: kept with min_gt_size 100
    target[20:23, 20:23] = True  # 9 px: becomes void
    valid = np.ones_like(target)
    valid[0, :] = False
    scores = np.zeros((30, 30))
    scores[20:23, 20:23] = 5.0  # exactly the small anomaly (void now): 9 px, big enough to stay, yet not counted
    scores[0, :] = 5.0  # on void: ignored
    scores[15:17, 0:3] = 5.0  # 6 px false alarm, under min_pred_size 8: dropped
    scores[2:12, 2:7] = 5.0  # half of the big anomaly
    m = ComponentMetrics(threshold=1.0, min_pred_size=8, min_gt_size=100)
    m.update(scores, target, valid)
    r = m.compute()
    assert (r["n_gt_components"], r["n_pred_components"]) == (1, 1)
    assert r["siou_gt"] == pytest.approx(0.5) and r["ppv"] == pytest.approx(1.0)
    assert r["counts"]["0.50"] == {"tp": 1, "fn": 0, "fp": 0} and r["counts"]["0.55"] == {"tp": 0, "fn": 1, "fp": 0}
    assert r["f1"]["0.50"] == 1.0 and r["f1"]["0.75"] == 0.0
    assert r["mean_f1"] == pytest.approx(np.mean([1.0 if t <= 0.5 else 0.0 for t in SIOU_THRESHOLDS]))


@pytest.mark.parametrize("seed", range(5))
def test_random_scenes_match_the_reference_and_merge_exactly(seed):
    rng = np.random.default_rng(seed)
    whole, a, b = (ComponentMetrics(0.6, 4, 3) for _ in range(3))
    for i in range(4):
        target = ndimage.binary_dilation(rng.random((24, 32)) > 0.97, iterations=int(rng.integers(0, 3)))
        scores = ndimage.gaussian_filter(rng.random((24, 32)), 1.0) + 0.4 * target
        valid = rng.random((24, 32)) > 0.05
        siou, ppv, _ = image_components(scores, target, valid, 0.6, 4, 3)
        ref_siou, ref_ppv = _reference(scores, target, valid, 0.6, 4, 3)
        assert np.allclose(siou, ref_siou) and np.allclose(ppv, ref_ppv)
        whole.update(scores, target, valid)
        (a if i % 2 else b).update(scores, target, valid)
    merged = b.merge(a).compute()
    got = whole.compute()
    assert got["counts"] == merged["counts"] and got["n_images"] == 4
    assert got["n_gt_components"] >= 3 and got["n_pred_components"] >= 3 and 0 < got["siou_gt"] < 1  # not vacuous
    assert got["siou_gt"] == pytest.approx(merged["siou_gt"]) and got["mean_f1"] == pytest.approx(merged["mean_f1"])


def test_ties_at_the_threshold_are_predicted_and_an_siou_of_exactly_0_6_fails_the_benchmarks_0_6():
    target = np.zeros((20, 40), bool)
    target[0:10, 0:30] = True  # 300 px
    scores = np.zeros((20, 40))
    scores[0:10, 0:30] = 0.5  # exactly at the threshold: predicted, as the model flags it
    scores[10:20, 0:20] = 0.5  # 200 px of prediction on no anomaly, joined to the first: sIoU 300 / 500 = 0.6
    m = ComponentMetrics(threshold=0.5, min_pred_size=0, min_gt_size=0)
    m.update(scores, target)
    r = m.compute()
    assert r["siou_gt"] == pytest.approx(0.6) and r["ppv"] == pytest.approx(0.6)
    assert SIOU_THRESHOLDS[7] > 0.6  # np.linspace(0.25, 0.75, 11)[7], as the benchmark compares
    assert r["counts"]["0.55"] == {"tp": 1, "fn": 0, "fp": 0} and r["counts"]["0.60"] == {"tp": 0, "fn": 1, "fp": 1}


def test_bad_input_is_one_line():
    with pytest.raises(OddspotError, match="threshold must be a finite number"):
        ComponentMetrics(float("nan"))
    with pytest.raises(OddspotError, match="min_gt_size must be a whole number"):
        ComponentMetrics(0.5, 10, -1)
    m = ComponentMetrics(0.5)
    with pytest.raises(OddspotError, match="one H x W shape"):
        m.update(np.zeros((4, 4)), np.zeros((4, 5), bool))
    with pytest.raises(OddspotError, match="settings"):
        m.merge(ComponentMetrics(0.7))
    empty = m.compute()
    assert np.isnan(empty["siou_gt"]) and np.isnan(empty["mean_f1"]) and empty["n_images"] == 0
