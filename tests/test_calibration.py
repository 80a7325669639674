"""Calibration: strategies, normalization and decisions that travel with the model."""

from __future__ import annotations

import json

import numpy as np
import pytest

from oddspot.calibration import Calibration, ScoreScale, calibrate, fit_threshold
from oddspot.errors import OddspotError


def test_threshold_without_anomalies_is_not_the_minimum_score():
    normal = np.random.default_rng(0).normal(10, 1, 400)
    scale, info = fit_threshold(normal, np.zeros(400), "quantile", quantile=0.995)
    assert scale.threshold > np.quantile(normal, 0.99) and scale.threshold > normal.min()
    assert info["quantile"] == 0.995


def test_f1_strategy_separates_validation():
    scores = np.array([1.0, 2.0, 3.0, 7.0, 8.0, 9.0])
    scale, info = fit_threshold(scores, np.array([0, 0, 0, 1, 1, 1]), "f1")
    assert 3.0 < scale.threshold <= 7.0 and info["validation_f1"] == 1.0


def test_normalization_is_monotone_fixed_and_maps_threshold_to_half():
    s = ScoreScale(low=2.0, threshold=5.0, high=11.0)
    x = np.array([0.0, 2.0, 3.5, 5.0, 8.0, 11.0, 20.0])
    y = s(x)
    assert np.all(np.diff(y) >= 0) and y[3] == 0.5 and y[0] == 0.0 and y[-1] == 1.0
    assert np.array_equal(s(x[::-1])[::-1], y)  # no dependence on what else is in the batch


def test_fixed_strategy_needs_a_value_and_unknown_strategy_fails():
    with pytest.raises(OddspotError, match="threshold"):
        fit_threshold(np.ones(5), np.zeros(5), "fixed")
    with pytest.raises(OddspotError, match="unknown"):
        calibrate(np.ones(5), np.zeros(5), None, None, "median")


def test_f1_strategy_without_anomalies_is_an_error():
    with pytest.raises(OddspotError, match="anomalous"):
        fit_threshold(np.ones(5), np.zeros(5), "f1")


def test_pixel_threshold_and_round_trip():
    rng = np.random.default_rng(1)
    maps = [rng.random((8, 8)).astype(np.float32) for _ in range(4)]
    masks = [np.zeros((8, 8), bool) for _ in range(4)]
    maps[3][2:5, 2:5] += 3.0
    masks[3][2:5, 2:5] = True
    cal = calibrate(np.array([1.0, 1.1, 0.9, 4.0]), np.array([0, 0, 0, 1]), maps, masks, "f1")
    assert max(m.max() for m in maps[:3]) < cal.pixel_threshold <= maps[3][masks[3]].min()
    assert cal.defect_mask(maps[3])[2:5, 2:5].all() and not cal.defect_mask(maps[0]).any()
    stored = json.loads(json.dumps(cal.to_dict()))
    assert Calibration.from_dict(stored).to_dict() == cal.to_dict()


def _valid() -> dict:
    return Calibration("f1", ScoreScale(1.0, 2.0, 3.0), ScoreScale(0.5, 1.5, 2.5), {"validation_f1": 1.0}).to_dict()


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d.pop("image"), "image missing"),
    (lambda d: d.update(strategy="median"), "strategy"),
    (lambda d: d.update(extra=1), "unknown field"),
    (lambda d: d["image"].update(threshold=float("nan")), "image.threshold"),
    (lambda d: d["image"].update(threshold="2"), "image.threshold"),
    (lambda d: d["image"].update(low=2.5), "low <= threshold <= high"),
    (lambda d: d["pixel"].update(high=1.0), "pixel"),
    (lambda d: d["image"].pop("high"), "image"),
    (lambda d: d.update(image_threshold=9.0), "image_threshold"),
    (lambda d: d.update(details=[1]), "details"),
])
def test_stored_calibration_is_checked_strictly(edit, needle):
    d = _valid()
    edit(d)
    with pytest.raises(OddspotError, match=needle) as info:
        Calibration.from_dict(d, "run/model.json: postprocess")
    assert str(info.value).startswith("run/model.json: postprocess") and "\n" not in str(info.value)


def test_calibration_without_pixel_level_round_trips():
    cal = Calibration("quantile", ScoreScale(1.0, 2.0, 3.0), None)
    again = Calibration.from_dict(cal.to_dict())
    assert again.pixel is None and again.pixel_threshold is None and again.image == cal.image
    with pytest.raises(OddspotError, match="pixel threshold"):
        again.defect_mask(np.zeros((2, 2)))
