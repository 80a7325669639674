"""Paired bootstrap of the difference between two models scored on the SAME test images.

Both models are scored on one set of `n` resamples of the test images (with replacement, one
seeded generator), so each resample gives a difference A - B of every metric; image-to-image
variation that affects both models alike cancels. For each metric:

- `difference`: A - B on the test set itself;
- `ci`: the (1 - level)/2 and (1 + level)/2 percentiles of the resample differences;
- `p_value` (two-sided): p = min(1, 2 * min(1 + #{d <= 0}, 1 + #{d >= 0}) / (1 + m)) over the m
  resamples where the metric is defined: twice the share of resample differences on the far side
  of zero, with the usual +1 correction so that p is never 0. Two identical evaluations give
  d = 0 in every resample, hence p = 1 exactly;
- `verdict`: "A is better" / "B is better" when p < 1 - level, else "no evidence of a difference".

Every metric here is larger-is-better (AUROC, AP, F1-max, AUPRO).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from oddspot.errors import OddspotError
from oddspot.metrics.bootstrap import (
    PixelStats,
    counts_of,
    percentile_interval,
    pixel_metrics_weighted,
    resample_block,
    resample_indices,
    rowwise_metrics,
)
from oddspot.progress import track

IMAGE_METRICS = ("auroc", "ap", "f1_max")
PIXEL_METRICS = ("auroc", "ap", "aupro")
LABELS = {("image", "auroc"): "image AUROC", ("image", "ap"): "image AP", ("image", "f1_max"): "image F1-max",
          ("pixel", "auroc"): "pixel AUROC", ("pixel", "ap"): "pixel AP", ("pixel", "aupro"): "AUPRO"}
_IMAGE_BLOCK_ELEMENTS = 2**21


def p_value(diffs: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "no difference" from resample differences (NaN ignored); see the module."""
    d = diffs[~np.isnan(diffs)]
    if d.size == 0:
        return float("nan")
    below, above = int(np.count_nonzero(d <= 0)), int(np.count_nonzero(d >= 0))
    return float(min(1.0, 2 * min(1 + below, 1 + above) / (1 + d.size)))


def summarize(level_name: str, metric: str, a: float, b: float, diffs: np.ndarray, level: float) -> dict[str, Any]:
    """One row of the comparison: values, difference, interval, p-value and the verdict in words."""
    label = LABELS.get((level_name, metric), f"{level_name} {metric}")
    diff = float(a - b)
    ci = percentile_interval(diffs, level, "paired bootstrap", label)
    p = p_value(diffs)
    alpha = 1 - level
    if np.isnan(p) or np.isnan(diff):
        verdict = f"{label}: undefined (every resample holds a single class)"
        winner = None
    else:
        winner = ("A" if diff > 0 else "B") if p < alpha and diff != 0 else None
        head = f"{winner} is better on {label}" if winner else f"no evidence of a difference on {label}"
        verdict = f"{head}: {diff:+.4f} [{ci[0]:+.4f}, {ci[1]:+.4f}], p = {p:.3g}"
    return {"level": level_name, "metric": metric, "a": float(a), "b": float(b), "difference": diff, "ci": ci,
            "p_value": p, "n_used": int(np.count_nonzero(~np.isnan(diffs))), "better": winner, "verdict": verdict}


def _check(n: int, level: float, where: str) -> None:
    if int(n) != n or n < 1:
        raise OddspotError(f"{where}: n must be a positive integer, got {n!r}")
    if not 0 < level < 1:
        raise OddspotError(f"{where}: level must be in (0, 1), got {level!r}")


def paired_image_bootstrap(scores_a: np.ndarray, scores_b: np.ndarray, labels: np.ndarray, n: int = 1000,
                           level: float = 0.95, seed: int = 0) -> list[dict[str, Any]]:
    """Paired differences of image AUROC, AP and F1-max (one row per metric, see `summarize`)."""
    _check(n, level, "paired_image_bootstrap")
    sa, sb = np.asarray(scores_a, np.float64), np.asarray(scores_b, np.float64)
    y = np.asarray(labels).astype(bool)
    if not (sa.shape == sb.shape == y.shape) or sa.ndim != 1 or sa.size == 0:
        raise OddspotError("paired_image_bootstrap: pass one score of each model and one label per image")
    point_a, point_b = rowwise_metrics(sa[None], y[None]), rowwise_metrics(sb[None], y[None])
    block = max(1, _IMAGE_BLOCK_ELEMENTS // sa.size)
    diffs: dict[str, list[np.ndarray]] = {m: [] for m in IMAGE_METRICS}
    for idx in track(resample_indices(sa.size, int(n), seed, block), "paired bootstrap (images)", total=-(-int(n) // block)):
        ra, rb = rowwise_metrics(sa[idx], y[idx]), rowwise_metrics(sb[idx], y[idx])
        for m in IMAGE_METRICS:
            diffs[m].append(ra[m] - rb[m])
    return [summarize("image", m, point_a[m][0], point_b[m][0], np.concatenate(diffs[m]), level) for m in IMAGE_METRICS]


def paired_pixel_bootstrap(stats_a: PixelStats, stats_b: PixelStats, n: int = 1000, level: float = 0.95,
                           seed: int = 0, fpr_limit: float = 0.3) -> tuple[list[dict[str, Any]], dict[str, float]]:
    """Paired differences of pixel AUROC, AP and AUPRO over image resamples, and the largest
    quantization bound of the difference per metric (the sum of both models' bounds; 0 = exact)."""
    _check(n, level, "paired_pixel_bootstrap")
    if len(stats_a) != len(stats_b) or not len(stats_a):
        raise OddspotError(f"paired_pixel_bootstrap: {len(stats_a)} and {len(stats_b)} images; compare one test set")
    k = len(stats_a)
    mats_a, mats_b = stats_a.matrices(), stats_b.matrices()
    ones = np.ones((1, k))
    point_a, point_b = pixel_metrics_weighted(mats_a, ones, fpr_limit), pixel_metrics_weighted(mats_b, ones, fpr_limit)
    block = resample_block(max(mats_a[0].shape[1], mats_b[0].shape[1]))
    diffs: dict[str, list[np.ndarray]] = {m: [] for m in PIXEL_METRICS}
    bounds = {m: 0.0 for m in PIXEL_METRICS}
    for idx in track(resample_indices(k, int(n), seed, block), "paired bootstrap (pixels)", total=-(-int(n) // block)):
        w = counts_of(idx, k)
        ra, rb = pixel_metrics_weighted(mats_a, w, fpr_limit), pixel_metrics_weighted(mats_b, w, fpr_limit)
        for m in PIXEL_METRICS:
            diffs[m].append(ra[m] - rb[m])
            both = ra[f"{m}_bound"] + rb[f"{m}_bound"]
            if np.isfinite(both).any():
                bounds[m] = max(bounds[m], float(np.nanmax(both)))
    rows = [summarize("pixel", m, point_a[m][0], point_b[m][0], np.concatenate(diffs[m]), level) for m in PIXEL_METRICS]
    return rows, bounds
