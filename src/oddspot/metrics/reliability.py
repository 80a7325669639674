"""Reliability diagram and expected calibration error (ECE) of image decisions.

The test images are binned by their predicted score in [0, 1] (`n_bins` equal-width bins, the
last one closed); per bin: the number of images, their mean predicted score and the observed
share of anomalous images. ECE = sum over bins of (images in bin / all images) * |observed
share - mean score|. oddspot's calibration maps raw scores piecewise-linearly onto [0, 1] with
the threshold at 0.5 (`calibration.ScoreScale`): a normalized score, not a fitted probability,
so the diagram shows how far that normalized score is from a frequency (`kind` says which).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from oddspot.errors import OddspotError
from oddspot.metrics._inputs import binary_array, scores_array


def reliability(scores: Any, labels: Any, n_bins: int = 10, kind: str = "normalized score") -> dict[str, Any]:
    """{"bins": [{lo, hi, n, mean_score, frequency}], "ece", "n_bins", "n_images", "kind"}, JSON-ready.

    `scores` must lie in [0, 1]; empty bins are listed with n = 0 and null mean and frequency.
    """
    where = "reliability"
    s = scores_array(scores, where).astype(np.float64).ravel()
    y = binary_array(labels, where, "labels").ravel()
    if s.shape != y.shape:
        raise OddspotError(f"{where}: {s.size} scores but {y.size} labels; pass one label per score")
    if int(n_bins) != n_bins or not 1 <= n_bins <= 1000:
        raise OddspotError(f"{where}: n_bins must be an integer in [1, 1000], got {n_bins!r}")
    if s.size == 0:
        raise OddspotError(f"{where}: no scores; evaluate at least one image")
    if not (np.isfinite(s).all() and s.min() >= 0 and s.max() <= 1):
        raise OddspotError(f"{where}: scores must be finite and in [0, 1]; pass normalized scores")
    edges = np.linspace(0.0, 1.0, int(n_bins) + 1)
    which = np.clip(np.searchsorted(edges, s, side="right") - 1, 0, int(n_bins) - 1)
    n = np.bincount(which, minlength=n_bins)
    total = np.bincount(which, weights=s, minlength=n_bins)
    hits = np.bincount(which, weights=y.astype(np.float64), minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean, freq = total / n, hits / n
    used = n > 0
    ece = float(np.sum(n[used] / s.size * np.abs(freq[used] - mean[used])))
    bins = [{"lo": float(edges[i]), "hi": float(edges[i + 1]), "n": int(n[i]),
             "mean_score": float(mean[i]) if used[i] else None, "frequency": float(freq[i]) if used[i] else None}
            for i in range(int(n_bins))]
    return {"bins": bins, "ece": ece, "n_bins": int(n_bins), "n_images": int(s.size), "kind": kind}
