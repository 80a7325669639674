"""Seeded percentile bootstrap confidence intervals for image-level AUROC, AP and F1-max.

Images are resampled with replacement `n` times; each resample's metrics are computed for all
resamples at once (row-wise sorts, ties handled exactly as in `ranking.py`), and the interval
is the (1 - level)/2 and (1 + level)/2 percentiles. Resamples that hold a single class cannot
define the metrics; they are left out and counted (`n_degenerate`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.stats import rankdata

from oddspot.errors import OddspotError
from oddspot.metrics._inputs import binary_array, scores_array
from oddspot.metrics.undefined import warn_undefined

BOOTSTRAP_METRICS = ("auroc", "ap", "f1_max")
_BLOCK_ELEMENTS = 2**21


def rowwise_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """AUROC, AP and F1-max of every row of (R x M) scores / bool labels; NaN for single-class rows."""
    labels = labels.astype(bool)
    n_pos = labels.sum(axis=1).astype(np.float64)
    n_neg = labels.shape[1] - n_pos
    ok = (n_pos > 0) & (n_neg > 0)
    ranks = rankdata(scores, method="average", axis=1)
    rank_sum = np.where(labels, ranks, 0.0).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        auroc = (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    order = np.argsort(-scores, axis=1, kind="stable")
    s = np.take_along_axis(scores, order, axis=1)
    y = np.take_along_axis(labels, order, axis=1)
    tp = np.cumsum(y, axis=1, dtype=np.float64)
    seen = np.arange(1, s.shape[1] + 1, dtype=np.float64)
    group_end = np.ones(s.shape, bool)
    group_end[:, :-1] = s[:, 1:] != s[:, :-1]
    # index of the last element of each element's tie group
    end_index = np.where(group_end, np.arange(s.shape[1]), s.shape[1])
    end_index = np.minimum.accumulate(end_index[:, ::-1], axis=1)[:, ::-1]
    precision_at_end = np.take_along_axis(tp / seen, end_index, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        ap = np.where(y, precision_at_end, 0.0).sum(axis=1) / n_pos
        f1 = np.where(group_end, 2 * tp / (seen + n_pos[:, None]), -np.inf).max(axis=1)
    nan = np.full(len(s), np.nan)
    return {
        "auroc": np.where(ok, auroc, nan),
        "ap": np.where(ok, ap, nan),
        "f1_max": np.where(ok, f1, nan),
    }


def bootstrap_ci(
    scores: Any,
    labels: Any,
    n: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    metrics: tuple[str, ...] = BOOTSTRAP_METRICS,
) -> dict[str, Any]:
    """Percentile bootstrap intervals: {metric: [lo, hi], "level", "n", "seed", "n_degenerate", "method"}."""
    where = "bootstrap_ci"
    s = scores_array(scores, where).astype(np.float64).ravel()
    y = binary_array(labels, where, "labels").ravel()
    if s.shape != y.shape:
        raise OddspotError(f"{where}: {s.size} scores but {y.size} labels; pass one label per score")
    if int(n) != n or n < 1:
        raise OddspotError(f"{where}: n must be a positive integer, got {n!r}")
    if not 0 < level < 1:
        raise OddspotError(f"{where}: level must be in (0, 1), got {level!r}")
    unknown = [m for m in metrics if m not in BOOTSTRAP_METRICS]
    if unknown or not metrics:
        raise OddspotError(f"{where}: unknown metrics {unknown}; choose from {list(BOOTSTRAP_METRICS)}")
    if np.isnan(s).any():
        raise OddspotError(f"{where}: scores contain NaN; fix the scorer")
    out: dict[str, Any] = {}
    values: dict[str, list[np.ndarray]] = {m: [] for m in metrics}
    if s.size:
        rng = np.random.default_rng(seed)
        per_block = max(1, _BLOCK_ELEMENTS // s.size)
        for start in range(0, int(n), per_block):
            rows = min(per_block, int(n) - start)
            idx = rng.integers(0, s.size, size=(rows, s.size))
            block = rowwise_metrics(s[idx], y[idx])
            for m in metrics:
                values[m].append(block[m])
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    for m in metrics:
        v = np.concatenate(values[m]) if values[m] else np.zeros(0)
        finite = v[~np.isnan(v)]
        if finite.size:
            out[m] = [float(x) for x in np.percentile(finite, q)]
        else:
            nan = warn_undefined(where, m, "every resample holds a single class")
            out[m] = [nan, nan]
    first = np.concatenate(values[metrics[0]]) if values[metrics[0]] else np.zeros(0)
    degenerate = int(n) - int(np.count_nonzero(~np.isnan(first)))
    out.update(level=float(level), n=int(n), seed=int(seed), n_degenerate=degenerate, method="percentile")
    return out
