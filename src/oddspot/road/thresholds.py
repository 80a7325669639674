"""Operating thresholds chosen on validation pixels, and how results move around them.

With anomalous validation pixels the threshold maximises F1 on them (`oddspot.calibration.f1_threshold`); without (StreetHazards'
validation split has none) it is the score that flags `target_fpr` of the normal validation pixels.
The record says which rule was used. `threshold_sensitivity` tabulates precision / recall / F1 at
offsets around the chosen threshold, in units of the normal validation scores' standard deviation.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

import numpy as np

from oddspot.calibration import f1_threshold
from oddspot.errors import OddspotError

DEFAULT_OFFSETS: tuple[float, ...] = (-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0)


def choose_threshold(scores: np.ndarray, anomalous: np.ndarray | None = None, target_fpr: float = 0.05) -> dict[str, Any]:
    """Pick a threshold from validation pixel scores (flags: True = anomalous pixel).

    A pixel is flagged when its score is >= the threshold. Returns {threshold, rule, spread,
    n_pixels, n_anomalous}; `spread` is the std of the normal pixels' scores.
    """
    if not 0 < target_fpr < 1:
        raise OddspotError(f"target_fpr={target_fpr} must lie strictly between 0 and 1")
    s = np.asarray(scores, np.float64).ravel()
    pos = np.zeros(len(s), bool) if anomalous is None else np.asarray(anomalous, bool).ravel()
    if len(s) == 0 or (~pos).sum() == 0:
        raise OddspotError("no normal validation pixels to choose a threshold from")
    neg = s[~pos]
    spread = float(neg.std())
    if pos.any():
        th, f1 = f1_threshold(s, pos)
        return {"threshold": th, "rule": "f1_max on validation", "spread": spread,
                "n_pixels": int(len(s)), "n_anomalous": int(pos.sum()), "validation_f1": f1}
    th = float(np.quantile(neg, 1.0 - target_fpr, method="higher"))
    return {"threshold": th, "rule": f"fpr {target_fpr:g} on normal validation pixels", "spread": spread,
            "n_pixels": int(len(s)), "n_anomalous": 0, "target_fpr": float(target_fpr)}


class _AtThreshold(Protocol):
    def at_threshold(self, threshold: float) -> dict[str, Any]: ...


def threshold_sensitivity(metric: _AtThreshold, threshold: float, spread: float,
                          offsets: Sequence[float] = DEFAULT_OFFSETS) -> list[dict[str, float]]:
    """Precision / recall / F1 at `threshold + k * spread` for each offset k, from a fitted ranking metric."""
    rows = []
    step = spread if spread > 0 else max(abs(threshold), 1.0) * 0.1
    for k in offsets:
        t = float(threshold + k * step)
        r = metric.at_threshold(t)
        rows.append({"offset": float(k), "threshold": t, "precision": float(r["precision"]),
                     "recall": float(r["recall"]), "f1": float(r["f1"])})
    return rows
