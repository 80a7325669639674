"""InspectionEvaluator: one call gives image, pixel and breakdown metrics, JSON-ready."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from oddspot.errors import OddspotError
from oddspot.metrics import AUPRO, InspectionEvaluator, UndefinedMetricWarning


def synthetic_run(n_good: int = 12, n_bad: int = 12, size: int = 24, seed: int = 0):
    rng = np.random.default_rng(seed)
    items = []
    for i in range(n_good + n_bad):
        label = int(i >= n_good)
        mask = np.zeros((size, size), bool)
        defect = "good"
        if label:
            defect = ("crack", "hole")[i % 2]
            r, c, e = rng.integers(0, size - 8), rng.integers(0, size - 8), rng.integers(1, 8)
            mask[r : r + e, c : c + e] = True
        amap = (rng.normal(size=(size, size)) + 2.0 * mask).astype(np.float32)
        items.append((float(amap.max()), label, amap, mask if label else None, defect))
    return items


def test_evaluator_matches_the_individual_metrics_and_is_json_ready():
    items = synthetic_run()
    ev = InspectionEvaluator(bootstrap=200, seed=3)
    for item in items:
        ev.add(*item)
    r = ev.compute(image_threshold=2.5, pixel_threshold=1.0)
    json.dumps(r, allow_nan=True)
    scores = np.array([it[0] for it in items])
    labels = np.array([it[1] for it in items])
    maps = np.stack([it[2] for it in items])
    masks = np.stack([it[3] if it[3] is not None else np.zeros_like(it[2], bool) for it in items])

    image = r["image"]
    assert image["auroc"] == pytest.approx(roc_auc_score(labels, scores), abs=1e-12)
    assert image["ap"] == pytest.approx(average_precision_score(labels, scores), abs=1e-12)
    assert image["ci"]["n"] == 200 and image["ci"]["seed"] == 3 and image["ci"]["level"] == 0.95
    assert image["ci"]["auroc"][0] <= image["ci"]["auroc"][1]
    assert image["at_threshold"]["tp"] == int(((scores >= 2.5) & (labels == 1)).sum())

    pixel = r["pixel"]
    assert pixel["auroc"] == pytest.approx(roc_auc_score(masks.ravel(), maps.ravel()), abs=1e-12)
    assert pixel["ap"] == pytest.approx(average_precision_score(masks.ravel(), maps.ravel()), abs=1e-12)
    ref = AUPRO()
    ref.update(maps, masks)
    assert pixel["aupro"] == ref.compute()["aupro"]
    assert pixel["exact"] and pixel["error_bound"]["aupro"] == 0.0
    assert pixel["per_image"]["skipped"] == 12 and pixel["per_image"]["n_used"] == 12
    assert pixel["at_threshold"]["tp"] == int(((maps >= 1.0) & masks).sum())
    for key in ("fpr95_first", "fpr95_nearest", "f1_max", "f1_max_threshold"):
        assert isinstance(pixel[key], float)

    assert set(r["breakdowns"]["defect_type"]) == {"crack", "hole"}
    size = r["breakdowns"]["size"]
    assert {"small", "medium", "large", "edges"} <= set(size)
    assert sum(size[b]["n"] for b in ("small", "medium", "large")) == 12

    curves = ev.curves(max_points=50)
    json.dumps(curves)
    assert len(curves["pixel"]["roc"]["fpr"]) <= 50
    assert curves["pixel"]["pro"]["fpr"][0] == 0.0
    assert curves["image"]["roc"]["tpr"][-1] == 1.0


def test_image_only_evaluation_and_defects_without_masks():
    ev = InspectionEvaluator(bootstrap=0)
    ev.add(0.1, 0)
    ev.add(0.9, 1, defect_type="crack")
    ev.add(0.8, 1, anomaly_map=np.ones((4, 4)), defect_type="crack")
    with pytest.warns(UndefinedMetricWarning, match="size_breakdown"):  # no defect has a mask
        r = ev.compute()
    assert r["pixel"] is None and r["image"]["auroc"] == 1.0 and "ci" not in r["image"]
    assert r["breakdowns"]["size"]["n_unsized"] == 2


def test_bad_images_raise_and_leave_the_state_unchanged():
    ev = InspectionEvaluator(bootstrap=0)
    amap = np.zeros((8, 8))
    mask = np.zeros((8, 8), bool)
    mask[2, 2] = True
    with pytest.raises(OddspotError, match="good image"):
        ev.add(0.5, 0, amap, mask)
    with pytest.raises(OddspotError, match="resize the map"):
        ev.add(0.5, 1, np.zeros((4, 4)), mask, "crack")
    with pytest.raises(OddspotError, match="label"):
        ev.add(0.5, 2, amap, mask)
    with pytest.raises(OddspotError, match="NaN"):
        ev.add(float("nan"), 1, amap, mask)
    with pytest.raises(OddspotError, match="no images"):
        ev.compute()
    with pytest.raises(OddspotError, match="size_edges"):
        InspectionEvaluator(size_edges=[0.5])
