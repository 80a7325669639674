"""Decisions from scores: thresholds and [0, 1] normalization fitted on validation data and stored.

Strategies (the one used is recorded):
- `f1`: the threshold maximizing F1 on validation images that include anomalies;
- `synthetic`: the same, with anomalies made from normal validation images by the seeded
  defect generator (for users with no defective samples);
- `quantile`: a high quantile (default 99.5%) of normal validation scores: never the minimum;
- `fixed`: a value given by the user;
- `auto`: `f1` when validation has anomalies, else `synthetic`.

Image and pixel thresholds are fitted separately. Normalization is a fixed piecewise-linear map
from stored statistics (low end, threshold, high end) to [0, 1] with the threshold at 0.5, so a
sample's normalized score never depends on the other samples in its batch. A `Calibration` is
the inspect models' post-processor: it travels in `model.json["postprocess"]` (`to_dict` /
`from_dict`), so decisions always come with the model that made the scores.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from oddspot.choices import CALIBRATION_STRATEGIES
from oddspot.configs import finite_number
from oddspot.errors import OddspotError

STRATEGIES = CALIBRATION_STRATEGIES


@dataclass
class ScoreScale:
    """Piecewise-linear map: low -> 0, threshold -> 0.5, high -> 1 (clipped outside)."""

    low: float
    threshold: float
    high: float

    def __call__(self, scores: np.ndarray) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        below = 0.5 * (s - self.low) / max(self.threshold - self.low, 1e-12)
        above = 0.5 + 0.5 * (s - self.threshold) / max(self.high - self.threshold, 1e-12)
        return np.clip(np.where(s < self.threshold, below, above), 0.0, 1.0)

    @classmethod
    def from_dict(cls, d: Any, source: str) -> ScoreScale:
        """A scale from `{"low", "threshold", "high"}`: finite numbers with low <= threshold <= high."""
        if not isinstance(d, dict) or set(d) != {"low", "threshold", "high"}:
            raise OddspotError(f"{source}: expected an object with low, threshold and high, got {d!r:.80}")
        values = []
        for key in ("low", "threshold", "high"):
            v = d[key]
            if not finite_number(v):
                raise OddspotError(f"{source}.{key}: expected a finite number, got {v!r:.40}")
            values.append(float(v))
        low, threshold, high = values
        if not low <= threshold <= high:
            raise OddspotError(f"{source}: needs low <= threshold <= high, got {low!r}, {threshold!r}, {high!r}")
        return cls(low, threshold, high)


@dataclass
class Calibration:
    """Fitted thresholds and normalization of one model (image-level, and pixel-level when maps exist)."""

    strategy: str
    image: ScoreScale
    pixel: ScoreScale | None
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def image_threshold(self) -> float:
        return self.image.threshold

    @property
    def pixel_threshold(self) -> float | None:
        return self.pixel.threshold if self.pixel is not None else None

    def decide(self, scores: np.ndarray) -> np.ndarray:
        """1 where the raw image score reaches the threshold, else 0."""
        return (np.asarray(scores) >= self.image.threshold).astype(np.int64)

    def defect_mask(self, anomaly_map: np.ndarray) -> np.ndarray:
        """Predicted defect pixels of one raw anomaly map."""
        if self.pixel is None:
            raise OddspotError("this calibration has no pixel threshold (the model produced no maps)")
        return anomaly_map >= self.pixel.threshold

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored as `model.json["postprocess"]`; the thresholds repeated for readers)."""
        return {"strategy": self.strategy, "image_threshold": self.image_threshold,
                "pixel_threshold": self.pixel_threshold, "image": asdict(self.image),
                "pixel": asdict(self.pixel) if self.pixel is not None else None, "details": self.details}

    @classmethod
    def from_dict(cls, d: Any, source: str = "calibration") -> Calibration:
        """The calibration `to_dict` wrote, checked strictly; anything else is a one-line error naming `source`."""
        if not isinstance(d, dict):
            raise OddspotError(f"{source}: expected an object, got {type(d).__name__}")
        known = {"strategy", "image_threshold", "pixel_threshold", "image", "pixel", "details"}
        unknown = sorted(str(k) for k in d if k not in known)
        if unknown:
            raise OddspotError(f"{source}: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        for key in ("strategy", "image"):
            if key not in d:
                raise OddspotError(f"{source}: field {key} missing")
        strategy = d["strategy"]
        if strategy not in STRATEGIES[1:]:
            raise OddspotError(f"{source}.strategy: {strategy!r} unknown; expected one of {', '.join(STRATEGIES[1:])}")
        image = ScoreScale.from_dict(d["image"], f"{source}.image")
        pixel = ScoreScale.from_dict(d["pixel"], f"{source}.pixel") if d.get("pixel") is not None else None
        details = d.get("details", {})
        if not isinstance(details, dict):
            raise OddspotError(f"{source}.details: expected an object, got {details!r:.60}")
        for key, scale in (("image_threshold", image), ("pixel_threshold", pixel)):
            if key in d and d[key] != (scale.threshold if scale is not None else None):
                raise OddspotError(f"{source}.{key}: {d[key]!r} disagrees with the stored scale; the file was edited")
        return cls(strategy, image, pixel, dict(details))


def f1_threshold(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """(threshold, F1) maximizing F1 when predicting anomalous iff score >= threshold."""
    from oddspot.metrics import BinaryRankingMetrics  # here, not at the top: the CLI imports this module for --help

    m = BinaryRankingMetrics()
    m.update(np.asarray(scores, dtype=np.float64), np.asarray(labels).astype(bool))
    r = m.compute()
    return float(r["f1_max_threshold"]), float(r["f1_max"])


def _scale(normal: np.ndarray, anomalous: np.ndarray, threshold: float) -> ScoreScale:
    low = float(np.min(normal)) if normal.size else threshold * 0.5
    high = float(np.max(anomalous)) if anomalous.size else float(np.max(normal, initial=threshold))
    low = min(low, threshold)
    if high <= threshold:
        high = threshold + max(threshold - low, 1e-6)
    return ScoreScale(low, float(threshold), high)


def fit_threshold(scores: np.ndarray, labels: np.ndarray, strategy: str, quantile: float = 0.995,
                  fixed: float | None = None) -> tuple[ScoreScale, dict[str, Any]]:
    """One threshold (image or pixel level) by `strategy` from validation scores and 0/1 labels."""
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).astype(bool).ravel()
    normal, anomalous = scores[~labels], scores[labels]
    if normal.size == 0:
        raise OddspotError("calibration needs normal validation images; use --split validation")
    if strategy == "fixed":
        if fixed is None:
            raise OddspotError("calibration strategy 'fixed' needs a threshold value (--threshold)")
        t, info = float(fixed), {}
    elif strategy == "quantile":
        if not 0.5 < quantile < 1.0:
            raise OddspotError(f"--quantile {quantile} out of range; use a value in (0.5, 1)")
        t = float(np.quantile(normal, quantile))
        info = {"quantile": quantile}
    else:
        if anomalous.size == 0:
            raise OddspotError(f"calibration strategy {strategy!r} needs anomalous validation samples")
        t, f1 = f1_threshold(scores, labels)
        info = {"validation_f1": f1}
    info.update({"n_normal": int(normal.size), "n_anomalous": int(anomalous.size)})
    return _scale(normal, anomalous, t), info


def _pixel_scale(maps: list[np.ndarray], masks: list[np.ndarray], strategy: str, quantile: float,
                 fixed: float | None) -> tuple[ScoreScale, dict[str, Any]]:
    """Pixel threshold: F1-max over validation pixels (streamed), or a quantile of normal pixels."""
    has_defects = any(m.any() for m in masks)
    if strategy == "fixed" and fixed is not None:
        normal = np.concatenate([a[~m].ravel() for a, m in zip(maps, masks)])
        return _scale(normal, np.array([]), fixed), {"fixed": fixed}
    if strategy in ("f1", "synthetic") and has_defects:
        from oddspot.metrics import BinaryRankingMetrics

        metric = BinaryRankingMetrics()
        for a, m in zip(maps, masks):
            metric.update(a, m)
        r = metric.compute()
        t = float(r["f1_max_threshold"])
        normal_min = min(float(a.min()) for a in maps)
        high = max(float(a.max()) for a in maps)
        return ScoreScale(min(normal_min, t), t, max(high, t + 1e-6)), {"validation_pixel_f1": float(r["f1_max"])}
    normal = np.concatenate([a[~m].ravel() for a, m in zip(maps, masks)])
    t = float(np.quantile(normal, quantile))
    return _scale(normal, np.array([]), t), {"pixel_quantile": quantile}


def calibrate(scores: np.ndarray, labels: np.ndarray, maps: list[np.ndarray] | None,
              masks: list[np.ndarray] | None, strategy: str, quantile: float = 0.995,
              fixed: float | None = None, fixed_pixel: float | None = None) -> Calibration:
    """Fit image and pixel calibration from validation predictions (`labels` 0/1, masks bool)."""
    if strategy not in STRATEGIES or strategy == "auto":
        raise OddspotError(f"calibration strategy {strategy!r} unknown; use one of {', '.join(STRATEGIES[1:])}")
    image, details = fit_threshold(scores, labels, strategy, quantile, fixed)
    pixel = None
    if maps is not None and masks is not None:
        pixel, pdetails = _pixel_scale(maps, masks, strategy, quantile, fixed_pixel)
        details.update(pdetails)
    return Calibration(strategy, image, pixel, details)
