"""Every calibration strategy against plain references: thresholds (image and pixel), the [0, 1]
normalization and the decisions. Each comparison has a control: a perturbed implementation must fail it."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

import oddspot.calibration as calibration
import oddspot.metrics
from oddspot.calibration import Calibration, calibrate
from oddspot.data.sample import Sample
from oddspot.data.synthetic import synthesize_anomaly
from oddspot.inspect.fitting import calibrate_model
from oddspot.runs.prediction import Prediction

import references as ref

EXACT = {"rtol": 1e-12, "atol": 1e-15}  # float64 in both; thresholds taken from the data are compared with ==
SIDE = 6


def _data(seed: int = 0):
    rng = np.random.default_rng(seed)
    labels = np.array([0] * 30 + [1] * 12)
    scores = np.where(labels == 1, rng.normal(1.5, 1.0, labels.size), rng.normal(0.0, 1.0, labels.size))
    scores[-1] = scores[labels == 0].min() - 1.0  # an anomaly scored below every normal image
    maps, masks = [], []
    for y in labels[::4]:  # 11 small maps, a defect square on the anomalous ones
        m = rng.normal(0.0, 1.0, (SIDE, SIDE))
        mask = np.zeros((SIDE, SIDE), bool)
        if y:
            r, c = rng.integers(0, SIDE - 2, 2)
            mask[r:r + 3, c:c + 2] = True
            m[mask] += rng.normal(1.5, 1.0, mask.sum())
        maps.append(m)
        masks.append(mask)
    return scores, labels, maps, masks


SCORES, LABELS, MAPS, MASKS = _data()
CASES = {  # strategy -> calibrate() keyword arguments
    "f1": {},
    "synthetic": {},  # the labels of normal images + seeded synthetic defects reach calibrate like real ones
    "quantile": {"quantile": 0.9},
    "fixed": {"fixed": 0.7, "fixed_pixel": 1.1},
    "fixed-image-only": {"fixed": 0.7, "quantile": 0.95},  # no pixel threshold given: a quantile of normal pixels
}


def run(case: str) -> Calibration:
    return calibrate(SCORES, LABELS, MAPS, MASKS, case.split("-")[0], **CASES[case])


def check_calibration(cal: Calibration, case: str) -> None:
    """Thresholds, normalization, decisions and masks of `cal` equal the references for `case`."""
    options = CASES[case]
    strategy = case.split("-")[0]
    normal, anomalous = SCORES[LABELS == 0], SCORES[LABELS == 1]
    if strategy in ("f1", "synthetic"):
        t, f1 = ref.f1_max_threshold(SCORES, LABELS == 1)
        assert cal.image_threshold == t and cal.details["validation_f1"] == pytest.approx(f1, rel=1e-12)
    elif strategy == "quantile":
        t = ref.quantile(normal, options["quantile"])
        np.testing.assert_allclose(cal.image_threshold, t, **EXACT)
    else:
        t = options["fixed"]
        assert cal.image_threshold == t
    ends = ref.scale_ends(normal, anomalous, t)
    np.testing.assert_allclose([cal.image.low, cal.image.threshold, cal.image.high], ends, **EXACT)
    np.testing.assert_allclose(cal.image(SCORES), [ref.normalize(s, *ends) for s in SCORES], **EXACT)
    np.testing.assert_array_equal(cal.decide(SCORES), [int(s >= cal.image_threshold) for s in SCORES])

    pixels = np.concatenate([m.ravel() for m in MAPS])
    defects = np.concatenate([k.ravel() for k in MASKS])
    normal_pixels = pixels[~defects]
    if strategy in ("f1", "synthetic"):
        # F1-max over every validation pixel; only the threshold of the pixel scale is ever used
        t_px, f1_px = ref.f1_max_threshold(pixels, defects)
        assert cal.pixel_threshold == t_px and cal.details["validation_pixel_f1"] == pytest.approx(f1_px, rel=1e-12)
        assert cal.pixel.low <= t_px < cal.pixel.high
    else:
        t_px = options.get("fixed_pixel")
        if t_px is None:
            t_px = ref.quantile(normal_pixels, options["quantile"])
        np.testing.assert_allclose(cal.pixel_threshold, t_px, **EXACT)
        np.testing.assert_allclose([cal.pixel.low, cal.pixel.threshold, cal.pixel.high],
                                   ref.scale_ends(normal_pixels, [], t_px), **EXACT)
    for m in MAPS:
        np.testing.assert_array_equal(cal.defect_mask(m), m >= cal.pixel_threshold)


@pytest.mark.parametrize("case", list(CASES))
def test_calibration_matches_reference(case):
    check_calibration(run(case), case)


def test_the_data_exercises_the_references():
    """The anomaly below every normal score moves `low` if the wrong scores are used; F1 is not trivially 1."""
    _, f1 = ref.f1_max_threshold(SCORES, LABELS == 1)
    assert 0.5 < f1 < 1.0 and SCORES[LABELS == 1].min() < SCORES[LABELS == 0].min()


def test_control_f1_threshold_between_scores_fails(monkeypatch):
    real = calibration.f1_threshold

    def midpoint(scores, labels):  # a common convention, not oddspot's: halfway to the next lower score
        t, f1 = real(scores, labels)
        return (t + np.max(scores[scores < t])) / 2, f1

    monkeypatch.setattr(calibration, "f1_threshold", midpoint)
    with pytest.raises(AssertionError):
        check_calibration(run("f1"), "f1")


def test_control_wrong_quantile_method_fails(monkeypatch):
    higher = SimpleNamespace(**{name: getattr(np, name) for name in dir(np) if not name.startswith("__")})
    higher.quantile = lambda a, q: np.quantile(a, q, method="higher")
    monkeypatch.setattr(calibration, "np", higher)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        check_calibration(run("quantile"), "quantile")


def test_control_normalization_low_end_from_all_scores_fails(monkeypatch):
    real = calibration._scale

    def low_from_everything(normal, anomalous, threshold):
        return real(np.concatenate([normal, anomalous]), anomalous, threshold)

    monkeypatch.setattr(calibration, "_scale", low_from_everything)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        check_calibration(run("fixed"), "fixed")


def test_control_strict_decisions_fail(monkeypatch):
    monkeypatch.setattr(Calibration, "decide", lambda self, s: (np.asarray(s) > self.image.threshold).astype(np.int64))
    with pytest.raises(AssertionError, match="Arrays are not equal"):
        check_calibration(run("f1"), "f1")


def test_control_misaligned_pixel_masks_fail(monkeypatch):
    real = oddspot.metrics.BinaryRankingMetrics

    class Transposed(real):
        def update(self, scores, targets, valid=None):
            super().update(scores, np.asarray(targets).T, valid)

    monkeypatch.setattr(oddspot.metrics, "BinaryRankingMetrics", Transposed)
    with pytest.raises(AssertionError):
        check_calibration(run("synthetic"), "synthetic")


class IntensityDetector:
    """A stand-in detector: a pixel's score is its grey level's distance from mid-grey, an image's the mean."""

    task, kind = "inspect", "intensity"

    def __init__(self) -> None:
        self.state: dict = {}
        self.postprocess = None

    @staticmethod
    def anomaly_map(image: np.ndarray) -> np.ndarray:
        return np.abs(image.astype(np.float64).mean(axis=2) - 128.0)

    def predict(self, images, maps=True):
        amaps = [self.anomaly_map(img) for img in images]
        return Prediction(np.array([m.mean() for m in amaps]), amaps if maps else None)


def synthetic_validation():
    rng = np.random.default_rng(5)
    normal = [Sample(np.clip(rng.normal(128, 12, (24, 24, 3)), 0, 255).astype(np.uint8), None, 0) for _ in range(8)]
    real = Sample(np.zeros((24, 24, 3), np.uint8), np.ones((24, 24), bool), 1)  # must not be used by 'synthetic'
    return normal + [real]


def check_synthetic(cal: Calibration, validation, seed: int) -> None:
    """F1-max thresholds on the normal validation images plus defects made from them by the seeded generator."""
    rng = np.random.default_rng(seed)
    normal = [s for s in validation if s.label == 0]
    made = [synthesize_anomaly(s.image, rng) for s in normal]  # the generator itself is not under test here
    images = [s.image for s in normal] + [img for img, _, _ in made]
    masks = [np.zeros(s.image.shape[:2], bool) for s in normal] + [mask for _, mask, _ in made]
    maps = [IntensityDetector.anomaly_map(img) for img in images]
    scores = [m.mean() for m in maps]
    labels = [False] * len(normal) + [True] * len(made)
    assert cal.strategy == "synthetic"
    assert cal.image_threshold == ref.f1_max_threshold(scores, labels)[0]
    assert cal.pixel_threshold == ref.f1_max_threshold(np.concatenate([m.ravel() for m in maps]),
                                                       np.concatenate([k.ravel() for k in masks]))[0]
    ends = ref.scale_ends(scores[:len(normal)], scores[len(normal):], cal.image_threshold)
    np.testing.assert_allclose([cal.image.low, cal.image.threshold, cal.image.high], ends, **EXACT)


def test_synthetic_strategy_uses_seeded_defects_of_normal_validation_images():
    validation = synthetic_validation()
    check_synthetic(calibrate_model(IntensityDetector(), validation, "synthetic", seed=3), validation, seed=3)


def test_control_synthetic_defects_of_another_seed_fail():
    validation = synthetic_validation()
    with pytest.raises(AssertionError):
        check_synthetic(calibrate_model(IntensityDetector(), validation, "synthetic", seed=4), validation, seed=3)
