"""Frame-score post-processing: temporal Gaussian smoothing, power transform, normalization, decisions.

Every fitted number here (normalization statistics, the decision threshold) comes from training
(held-out normal) scores and is stored with the model, so a test frame's score never depends on the other test frames' scores. The one
exception, per-test-video min-max scaling used by some papers, exists only as the named legacy
protocol `legacy_minmax_per_video` and is never applied by default.

Applying a fitted post-processor is numpy only (the torch-free runtime runs it); fitting a power
transform's lambda uses scipy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields
from typing import TypeVar

import numpy as np

from oddspot.configs import check_range, from_mapping
from oddspot.errors import OddspotError

NORMALIZATIONS = ("train_zscore", "none")
MAX_POWER = 10.0
PROTOCOLS = ("trained", "legacy_minmax_per_video")
MAX_SIGMA = 1000.0
TRUNCATE = 4.0
# Edge modes of `gaussian_filter1d`, named as scipy.ndimage names them -> numpy's padding mode.
EDGE_MODES = {"nearest": "edge", "reflect": "symmetric", "mirror": "reflect"}
T = TypeVar("T")


def gaussian_weights(sigma: float, truncate: float = TRUNCATE) -> np.ndarray:
    """The normalized Gaussian of `scipy.ndimage.gaussian_filter1d`: radius int(truncate sigma + 0.5), float64."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1)
    phi = np.exp(-0.5 / (float(sigma) * float(sigma)) * x**2)
    return phi / phi.sum()


def gaussian_filter1d(values: np.ndarray, sigma: float, mode: str = "nearest", truncate: float = TRUNCATE) -> np.ndarray:
    """1-D Gaussian filter of float64 `values`, as `scipy.ndimage.gaussian_filter1d` (sigma > 0; modes of EDGE_MODES)."""
    weights = gaussian_weights(sigma, truncate)
    padded = np.pad(np.asarray(values, dtype=np.float64), weights.size // 2, mode=EDGE_MODES[mode])
    return np.correlate(padded, weights, mode="valid")


def yeojohnson(values: np.ndarray, lmbda: float) -> np.ndarray:
    """The Yeo-Johnson transform with a given lambda, computed as `scipy.stats.yeojohnson` does (float64)."""
    x = np.asarray(values, dtype=np.float64)
    eps = np.finfo(np.float64).eps
    out = np.zeros_like(x)
    pos = x >= 0
    if abs(lmbda) < eps:
        out[pos] = np.log1p(x[pos])
    else:
        out[pos] = np.expm1(lmbda * np.log1p(x[pos])) / lmbda
    if abs(lmbda - 2) > eps:
        out[~pos] = -np.expm1((2 - lmbda) * np.log1p(-x[~pos])) / (2 - lmbda)
    else:
        out[~pos] = -np.log1p(-x[~pos])
    return out


def temporal_smooth(scores: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of one video's frame scores along time (edges: nearest); sigma 0 = none."""
    scores = np.asarray(scores, dtype=np.float64)
    if sigma < 0:
        raise OddspotError(f"smoothing sigma {sigma} is negative; use 0 for no smoothing")
    if sigma == 0 or scores.size < 2:
        return scores.copy()
    return gaussian_filter1d(scores, sigma, mode="nearest")


def check_power(gamma: float, option: str = "--power") -> float:
    """A frame-score exponent: finite, in (0, MAX_POWER]; one-line error naming `option` otherwise."""
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)):
        raise OddspotError(f"{option} {gamma!r} must be a number in (0, {MAX_POWER:g}]")
    check_range(option, float(gamma), 0.0, MAX_POWER, low_open=True)
    return float(gamma)


def frame_power(scores: np.ndarray, gamma: float) -> np.ndarray:
    """`score ** gamma` per frame, sign kept for negative scores (sign(s) |s|^gamma; standardized scores
    can be negative); gamma 1 returns the scores unchanged."""
    if gamma == 1.0:
        return scores
    scores = np.asarray(scores, dtype=np.float64)
    return np.sign(scores) * np.abs(scores) ** check_power(gamma)


def legacy_minmax_per_video(scores: np.ndarray) -> np.ndarray:
    """LEGACY protocol: rescale one test video's scores to [0, 1] with that video's own min and max.

    This uses test statistics (a frame's score depends on the rest of its video); it is offered
    only to reproduce papers that report it, under this name, and is off by default.
    """
    scores = np.asarray(scores, dtype=np.float64)
    lo, hi = float(scores.min()), float(scores.max())
    return np.zeros_like(scores) if hi <= lo else (scores - lo) / (hi - lo)


def read_fields(cls: type[T], d: object, source: str) -> T:
    """The dataclass `cls` from a saved mapping that must hold every field (strict types and ranges)."""
    if not isinstance(d, dict):
        raise OddspotError(f"{source}: expected an object, got {d!r:.60}; refit the model")
    missing = [f.name for f in fields(cls) if f.name not in d]  # type: ignore[arg-type]
    if missing:
        raise OddspotError(f"{source}: field {missing[0]} missing; refit the model")
    return from_mapping(cls, d, source)


@dataclass
class PowerTransform:
    """Yeo-Johnson transform then standardization, fitted on training values (as sklearn's PowerTransformer).

    Values are divided by `scale` (their training std) first so that the fitted lambda does not
    depend on the units of the score.
    """

    lmbda: float = 1.0
    mean: float = 0.0
    std: float = 1.0
    scale: float = 1.0

    @classmethod
    def fit(cls, values: np.ndarray) -> PowerTransform:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.size < 2:
            raise OddspotError("power transform needs at least 2 training scores; give more training frames")
        from scipy.stats import yeojohnson_normmax

        scale = float(np.std(values)) or 1.0
        lmbda = float(yeojohnson_normmax(values / scale))
        t = yeojohnson(values / scale, lmbda)
        return cls(lmbda, float(np.mean(t)), float(np.std(t)) or 1.0, scale)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        t = yeojohnson(np.asarray(values, dtype=np.float64) / self.scale, self.lmbda)
        return (t - self.mean) / self.std

    def __post_init__(self) -> None:
        for name in ("lmbda", "mean"):
            check_range(name, getattr(self, name))
        for name in ("std", "scale"):
            check_range(name, getattr(self, name), 0.0, None, low_open=True)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: object, source: str = "power transform") -> PowerTransform:
        return read_fields(cls, d, source)


@dataclass
class Standardizer:
    """(x - mean) / std with mean and std of training values."""

    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def fit(cls, values: np.ndarray) -> Standardizer:
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if values.size == 0:
            raise OddspotError("normalization needs training scores; give more training frames")
        return cls(float(values.mean()), float(values.std()) or 1.0)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return (np.asarray(values, dtype=np.float64) - self.mean) / self.std

    def __post_init__(self) -> None:
        check_range("mean", self.mean)
        check_range("std", self.std, 0.0, None, low_open=True)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: object, source: str = "standardizer") -> Standardizer:
        return read_fields(cls, d, source)


@dataclass
class ScorePostprocessor:
    """Temporal smoothing, normalization and a decision threshold, all fitted on held-out training frames.

    `sigma` is the Gaussian's standard deviation in frames (0 = none); `normalization` is
    'train_zscore' (default) or 'none'. `threshold_quantile` (default 0.995) picks the decision
    threshold: that quantile of the normalized held-out training scores, so about 0.5% of normal
    frames are flagged; None fits no threshold. Fit on training-video scores; apply to each video alone.
    `threshold` is None for a model upgraded from oddspot 0.1 (it had none): refit it for decisions.
    """

    sigma: float = 3.0
    normalization: str = "train_zscore"
    threshold_quantile: float | None = 0.995
    mean: float = 0.0
    std: float = 1.0
    threshold: float | None = None
    fitted: bool = False

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise OddspotError(f"normalization {self.normalization!r} unknown; use one of {', '.join(NORMALIZATIONS)}")
        check_range("sigma", self.sigma, 0.0, MAX_SIGMA)
        if self.threshold_quantile is not None:
            check_range("threshold_quantile", self.threshold_quantile, 0.0, 1.0, low_open=True, high_open=True)
        check_range("std", self.std, 0.0, None, low_open=True)
        check_range("mean", self.mean)
        if self.threshold is not None:
            check_range("threshold", self.threshold)

    def fit(self, train_scores: Sequence[np.ndarray]) -> ScorePostprocessor:
        """Fit mean and std on smoothed scores of training (normal, held-out) videos, then the threshold."""
        smoothed = [temporal_smooth(s, self.sigma) for s in train_scores if len(s)]
        if not smoothed:
            raise OddspotError("no training scores to fit the normalization; give more training frames")
        st = Standardizer.fit(np.concatenate(smoothed))
        self.mean, self.std, self.fitted = st.mean, st.std, True
        self.threshold = None
        if self.threshold_quantile is not None:
            normalized = np.concatenate([self._normalize(s) for s in smoothed])
            self.threshold = float(np.quantile(normalized, self.threshold_quantile))
        return self

    def _normalize(self, smoothed: np.ndarray) -> np.ndarray:
        return smoothed if self.normalization == "none" else (smoothed - self.mean) / self.std

    def __call__(self, scores: np.ndarray, protocol: str = "trained") -> np.ndarray:
        """Post-process one video's raw frame scores under `protocol` ('trained' or the legacy one)."""
        if protocol not in PROTOCOLS:
            raise OddspotError(f"protocol {protocol!r} unknown; use one of {', '.join(PROTOCOLS)}")
        s = temporal_smooth(scores, self.sigma)
        if protocol == "legacy_minmax_per_video":
            return legacy_minmax_per_video(s)
        if self.normalization != "none" and not self.fitted:
            raise OddspotError("score normalization is not fitted; fit the detector on training videos first")
        return self._normalize(s)

    def decide(self, normalized: np.ndarray, protocol: str = "trained") -> np.ndarray | None:
        """Per-frame decisions (True = anomalous: normalized >= threshold), or None without a threshold.

        The threshold lives on the scale of the 'trained' protocol; under the legacy protocol
        (scores rescaled per test video) there are no decisions.
        """
        if self.threshold is None or protocol != "trained":
            return None
        return np.asarray(normalized) >= self.threshold

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: object, source: str = "postprocess") -> ScorePostprocessor:
        """Strict reading of `to_dict`'s output: every field present, right types and ranges."""
        post = read_fields(cls, d, source)
        if post.normalization != "none" and not post.fitted:
            raise OddspotError(f"{source}: the normalization is not fitted; refit the model")
        return post
