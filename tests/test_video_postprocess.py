"""Smoothing and normalization use training statistics only; the legacy per-video protocol is opt-in."""

from __future__ import annotations

import numpy as np
import pytest

from oddspot.errors import OddspotError
from oddspot.video.postprocess import PowerTransform, ScorePostprocessor, legacy_minmax_per_video, temporal_smooth


def test_temporal_smooth():
    impulse = np.zeros(21)
    impulse[10] = 1.0
    out = temporal_smooth(impulse, 2.0)
    assert out.argmax() == 10 and 0 < out[10] < 1 and out[12] > 0 and abs(out.sum() - 1) < 1e-6
    np.testing.assert_array_equal(temporal_smooth(impulse, 0), impulse)
    np.testing.assert_allclose(temporal_smooth(np.full(7, 3.0), 5.0), 3.0)
    with pytest.raises(OddspotError):
        temporal_smooth(impulse, -1)


def test_normalization_uses_training_statistics_only():
    rng = np.random.default_rng(0)
    train = [rng.normal(10, 2, 200), rng.normal(10, 2, 150)]
    post = ScorePostprocessor(sigma=0.0).fit(train)
    assert post.mean == pytest.approx(np.concatenate(train).mean())
    assert post.std == pytest.approx(np.concatenate(train).std())
    test = rng.normal(20, 5, 100)  # a test video with other statistics is NOT re-centred on itself
    out = post(test)
    np.testing.assert_allclose(out, (test - post.mean) / post.std)
    assert out.mean() > 3


def test_score_of_a_video_does_not_depend_on_other_videos():
    rng = np.random.default_rng(1)
    post = ScorePostprocessor(sigma=2.0).fit([rng.normal(0, 1, 100)])
    a, b = rng.normal(0, 1, 50), rng.normal(5, 3, 80)
    alone = post(a)
    post(b)
    np.testing.assert_array_equal(post(a), alone)


def test_default_is_not_the_legacy_protocol():
    post = ScorePostprocessor(sigma=0.0).fit([np.array([0.0, 1.0, 2.0, 3.0])])
    scores = np.array([10.0, 11.0, 12.0])
    trained = post(scores)
    assert trained.max() > 1  # not rescaled to [0, 1] with the test video's own min and max
    legacy = post(scores, protocol="legacy_minmax_per_video")
    np.testing.assert_allclose(legacy, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(legacy_minmax_per_video(scores), legacy)
    with pytest.raises(OddspotError, match="protocol"):
        post(scores, protocol="minmax")


def test_unfitted_normalization_refuses():
    with pytest.raises(OddspotError, match="not fitted"):
        ScorePostprocessor()(np.ones(3))
    assert ScorePostprocessor(normalization="none")(np.ones(3)).tolist() == [1.0, 1.0, 1.0]


def test_power_transform_fitted_on_training_and_monotone():
    rng = np.random.default_rng(2)
    train = rng.lognormal(0, 1, 500)  # skewed, like reconstruction errors
    pt = PowerTransform.fit(train)
    t = pt(train)
    assert abs(t.mean()) < 1e-6 and abs(t.std() - 1) < 1e-6
    skew = lambda v: float(((v - v.mean()) ** 3).mean() / v.std() ** 3)  # noqa: E731
    assert abs(skew(t)) < abs(skew(train)) / 3
    grid = np.linspace(0.01, 20, 50)
    assert np.all(np.diff(pt(grid)) > 0)
    again = PowerTransform.from_dict(pt.to_dict())
    np.testing.assert_allclose(again(grid), pt(grid))
