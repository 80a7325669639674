"""Calibration: strategies, normalization and decisions that travel with the model."""

from __future__ import annotations

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


def test_pixel_threshold_and_round_trip(tmp_path):
    rng = np.random.default_rng(1)
    maps = [rng.random((8, 8)).astype(np.float32) for _ in range(4)]
    masks = [np.zeros((8, 8), bool) for _ in range(4)]
    maps[3][2:5, 2:5] += 3.0
    masks[3][2:5, 2:5] = True
    cal = calibrate(np.array([1.0, 1.1, 0.9, 4.0]), np.array([0, 0, 0, 1]), maps, masks, "f1")
    assert max(m.max() for m in maps[:3]) < cal.pixel_threshold <= maps[3][masks[3]].min()
    assert cal.defect_mask(maps[3])[2:5, 2:5].all() and not cal.defect_mask(maps[0]).any()
    cal.save(tmp_path)
    again = Calibration.load(tmp_path)
    assert again.to_dict() == cal.to_dict()
    assert Calibration.load(tmp_path / "none") is None
