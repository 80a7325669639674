"""Frame-score post-processing: temporal Gaussian smoothing, power transform and normalization.

Every fitted number here comes from training (held-out normal) scores and is stored with the
model, so a test frame's score never depends on the other test frames' scores. The one
exception, per-test-video min-max scaling used by some papers, exists only as the named legacy
protocol `legacy_minmax_per_video` and is never applied by default.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d
from scipy.stats import yeojohnson, yeojohnson_normmax

from oddspot.errors import OddspotError

NORMALIZATIONS = ("train_zscore", "none")
PROTOCOLS = ("trained", "legacy_minmax_per_video")


def temporal_smooth(scores: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian smoothing of one video's frame scores along time (edges: nearest); sigma 0 = none."""
    scores = np.asarray(scores, dtype=np.float64)
    if sigma < 0:
        raise OddspotError(f"smoothing sigma {sigma} is negative; use 0 for no smoothing")
    if sigma == 0 or scores.size < 2:
        return scores.copy()
    return gaussian_filter1d(scores, sigma, mode="nearest")


def legacy_minmax_per_video(scores: np.ndarray) -> np.ndarray:
    """LEGACY protocol: rescale one test video's scores to [0, 1] with that video's own min and max.

    This uses test statistics (a frame's score depends on the rest of its video); it is offered
    only to reproduce papers that report it, under this name, and is off by default.
    """
    scores = np.asarray(scores, dtype=np.float64)
    lo, hi = float(scores.min()), float(scores.max())
    return np.zeros_like(scores) if hi <= lo else (scores - lo) / (hi - lo)


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
        scale = float(np.std(values)) or 1.0
        lmbda = float(yeojohnson_normmax(values / scale))
        t = yeojohnson(values / scale, lmbda)
        return cls(lmbda, float(np.mean(t)), float(np.std(t)) or 1.0, scale)

    def __call__(self, values: np.ndarray) -> np.ndarray:
        t = yeojohnson(np.asarray(values, dtype=np.float64) / self.scale, self.lmbda)
        return (t - self.mean) / self.std

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> PowerTransform:
        return cls(float(d["lmbda"]), float(d["mean"]), float(d["std"]), float(d["scale"]))


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

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Standardizer:
        return cls(float(d["mean"]), float(d["std"]))


@dataclass
class ScorePostprocessor:
    """Temporal smoothing then normalization with statistics of held-out training videos.

    `sigma` is the Gaussian's standard deviation in frames (0 = none); `normalization` is
    'train_zscore' (default) or 'none'. Fit on training-video scores; apply to each video alone.
    """

    sigma: float = 3.0
    normalization: str = "train_zscore"
    mean: float = 0.0
    std: float = 1.0
    fitted: bool = False

    def __post_init__(self) -> None:
        if self.normalization not in NORMALIZATIONS:
            raise OddspotError(f"normalization {self.normalization!r} unknown; use one of {', '.join(NORMALIZATIONS)}")
        if self.sigma < 0:
            raise OddspotError(f"smoothing sigma {self.sigma} is negative; use 0 for no smoothing")

    def fit(self, train_scores: Sequence[np.ndarray]) -> ScorePostprocessor:
        """Fit mean and std on smoothed scores of training (normal, held-out) videos."""
        smoothed = [temporal_smooth(s, self.sigma) for s in train_scores if len(s)]
        if not smoothed:
            raise OddspotError("no training scores to fit the normalization; give more training frames")
        st = Standardizer.fit(np.concatenate(smoothed))
        self.mean, self.std, self.fitted = st.mean, st.std, True
        return self

    def __call__(self, scores: np.ndarray, protocol: str = "trained") -> np.ndarray:
        """Post-process one video's raw frame scores under `protocol` ('trained' or the legacy one)."""
        if protocol not in PROTOCOLS:
            raise OddspotError(f"protocol {protocol!r} unknown; use one of {', '.join(PROTOCOLS)}")
        s = temporal_smooth(scores, self.sigma)
        if protocol == "legacy_minmax_per_video":
            return legacy_minmax_per_video(s)
        if self.normalization == "none":
            return s
        if not self.fitted:
            raise OddspotError("score normalization is not fitted; fit the detector on training videos first")
        return (s - self.mean) / self.std

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> ScorePostprocessor:
        return cls(float(d["sigma"]), str(d["normalization"]), float(d["mean"]), float(d["std"]), bool(d["fitted"]))
