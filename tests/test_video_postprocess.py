"""Smoothing, normalization and the decision threshold use training statistics only; the legacy
per-video protocol is opt-in; saved post-processors are read strictly."""

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
    with pytest.raises(OddspotError, match="scale"):
        PowerTransform.from_dict({**pt.to_dict(), "scale": 0.0})


def test_threshold_is_a_quantile_of_normalized_training_scores():
    rng = np.random.default_rng(3)
    train = [rng.normal(10, 2, 400), rng.normal(10, 2, 300)]
    post = ScorePostprocessor(sigma=0.0, threshold_quantile=0.9).fit(train)
    pooled = (np.concatenate(train) - post.mean) / post.std
    assert post.threshold == pytest.approx(np.quantile(pooled, 0.9))
    assert np.mean(pooled >= post.threshold) == pytest.approx(0.1, abs=0.01)
    test = np.array([10.0, 30.0])
    np.testing.assert_array_equal(post.decide(post(test)), [False, True])
    assert post.decide(post(test, "legacy_minmax_per_video"), "legacy_minmax_per_video") is None
    assert ScorePostprocessor(sigma=0.0, threshold_quantile=None).fit(train).threshold is None
    raw = ScorePostprocessor(sigma=0.0, normalization="none", threshold_quantile=0.5).fit(train)
    assert raw.threshold == pytest.approx(np.median(np.concatenate(train)))


def test_saved_postprocessor_is_read_strictly():
    post = ScorePostprocessor(sigma=1.0).fit([np.arange(20.0)])
    again = ScorePostprocessor.from_dict(post.to_dict(), "model.json: postprocess")
    assert again == post
    bad = [({"threshold": "high"}, "threshold"), ({"std": 0.0}, "std"), ({"sigma": -1.0}, "sigma"),
           ({"threshold_quantile": 1.5}, "threshold_quantile"), ({"fitted": 1}, "fitted"), ({"extra": 1}, "extra")]
    for change, name in bad:
        with pytest.raises(OddspotError, match=f"model.json: postprocess.*{name}"):
            ScorePostprocessor.from_dict({**post.to_dict(), **change}, "model.json: postprocess")
    partial = post.to_dict()
    del partial["mean"]
    with pytest.raises(OddspotError, match="field mean missing"):
        ScorePostprocessor.from_dict(partial, "model.json: postprocess")
    with pytest.raises(OddspotError, match="not fitted"):
        ScorePostprocessor.from_dict({**post.to_dict(), "fitted": False}, "model.json: postprocess")
