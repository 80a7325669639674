"""Binary ranking metrics from a score table: AUROC, AP, AUPR, FPR@95TPR (two conventions), F1-max.

All curves run over the DISTINCT score values in descending order, with tied scores forming one
operating point, exactly as scikit-learn's `roc_curve(drop_intermediate=False)` and
`precision_recall_curve` do. "Predicted anomalous" always means score >= threshold.

Definitions (P positives, N negatives; tp/fp cumulative counts down the thresholds):
- auroc: area under ROC with ties counted half (= `roc_auc_score`).
- ap: step-wise sum of (recall_k - recall_(k-1)) * precision_k (= `average_precision_score`).
- aupr_trapezoid: trapezoid area under the PR curve starting at (recall 0, precision 1)
  (= `auc(recall, precision)` on `precision_recall_curve`); a different number from AP.
- fpr95_first: FPR at the first threshold whose TPR >= 0.95 (pytorch-ood, SegmentMeIfYouCan),
  over all distinct thresholds (no dropping of collinear ROC points).
- fpr95_nearest: FPR at the point whose recall is nearest 0.95, scanning from the first point of
  full recall upwards as the StreetHazards code does (so ties go to the higher recall, and among
  equal recalls to the larger FPR).
- f1_max: the best F1 = 2 tp / (tp + fp + P) over thresholds; f1_max_threshold is the lowest
  threshold reaching it.

Error bounds: in binned mode a bin may merge several distinct scores, whose relative order of
positives and negatives is then unknown. Every metric comes with the largest error that could
cause (`error_bound`, absolute); it is 0 for exact tables.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from oddspot.errors import OddspotError
from oddspot.metrics import _kernels
from oddspot.metrics._inputs import flat_inputs
from oddspot.metrics.curves import downsample_curve, thin_indices
from oddspot.metrics.score_table import Bins, ScoreTable
from oddspot.metrics.undefined import warn_undefined

RANKING_METRICS = ("auroc", "ap", "aupr_trapezoid", "fpr95_first", "fpr95_nearest", "f1_max")
_NAN = float("nan")


def _safe_div(a: np.ndarray, b: np.ndarray, empty: float) -> np.ndarray:
    out = np.full(np.broadcast(a, b).shape, empty, dtype=np.float64)
    np.divide(a, b, out=out, where=b != 0)
    return out


def ranking_metrics(b: Bins, where: str = "ranking metrics") -> dict[str, Any]:
    """All ranking metrics (plus `error_bound` per metric) from a table's bins."""
    n_pos, n_neg = float(np.sum(b.pos)), float(np.sum(b.neg))
    out: dict[str, Any] = {name: _NAN for name in RANKING_METRICS}
    out.update(f1_max_threshold=_NAN, n_pos=int(round(n_pos)), n_neg=int(round(n_neg)), exact=b.all_exact)
    bound = {name: _NAN for name in RANKING_METRICS}
    out["error_bound"] = bound
    if n_pos == 0:
        warn_undefined(where, ", ".join(RANKING_METRICS), "no positive targets")
        return out
    (auc, auc_bound, ap, ap_bound, aupr, aupr_bound, f1, f1_index, f1_upper, first95, near95, low_fp, high_fp) = (
        _kernels.ranking_pass(b.pos, b.neg, b.exact, n_pos)
    )
    # AP, trapezoid AUPR and F1 are defined without negatives too (precision is then 1 throughout)
    out.update(ap=ap, aupr_trapezoid=aupr, f1_max=f1, f1_max_threshold=float(b.values[f1_index]))
    bound.update(ap=ap_bound, aupr_trapezoid=aupr_bound, f1_max=max(0.0, f1_upper - f1))
    if n_neg == 0:
        warn_undefined(where, "auroc, fpr95_first, fpr95_nearest", "no negative targets")
        return out
    out["auroc"] = auc / (n_pos * n_neg)
    bound["auroc"] = auc_bound / (2 * n_pos * n_neg)
    fps = np.cumsum(b.neg[: max(first95, near95) + 1])
    out["fpr95_first"] = float(fps[first95] / n_neg)
    bound["fpr95_first"] = 0.0 if b.exact[first95] else float(b.neg[first95] / n_neg)
    out["fpr95_nearest"] = float(fps[near95] / n_neg)
    if low_fp < 0:
        bound["fpr95_nearest"] = 0.0
    else:
        bound["fpr95_nearest"] = max(out["fpr95_nearest"] - low_fp / n_neg, high_fp / n_neg - out["fpr95_nearest"])
    return out


def threshold_metrics(b: Bins, threshold: float, where: str = "at_threshold") -> dict[str, Any]:
    """Confusion counts and precision/recall/F1/accuracy for "anomalous iff score >= threshold"."""
    threshold = float(threshold)
    if np.isnan(threshold):
        raise OddspotError(f"{where}: threshold is NaN; pass a number")
    k = int(np.searchsorted(-b.values, -threshold, side="right"))
    n_pos, n_neg = float(b.pos.sum()), float(b.neg.sum())
    tp, fp = float(b.pos[:k].sum()), float(b.neg[:k].sum())
    ambiguous = k < b.values.size and not b.exact[k] and b.values[k] < threshold

    def scores(tp: float, fp: float) -> dict[str, float]:
        fn, tn = n_pos - tp, n_neg - fp
        return {
            "precision": tp / (tp + fp) if tp + fp else _NAN,
            "recall": tp / n_pos if n_pos else _NAN,
            "f1": 2 * tp / (2 * tp + fp + fn) if 2 * tp + fp + fn else _NAN,
            "accuracy": (tp + tn) / (n_pos + n_neg) if n_pos + n_neg else _NAN,
        }

    main = scores(tp, fp)
    undefined = [name for name, value in main.items() if np.isnan(value)]
    if undefined:
        warn_undefined(where, ", ".join(undefined), "zero denominator at this threshold")
    bound = {name: 0.0 for name in main}
    if ambiguous:
        extra_p, extra_n = float(b.pos[k]), float(b.neg[k])
        for corner in (scores(tp + extra_p, fp), scores(tp, fp + extra_n), scores(tp + extra_p, fp + extra_n)):
            for name, value in corner.items():
                if not np.isnan(value) and not np.isnan(main[name]):
                    bound[name] = max(bound[name], abs(value - main[name]))
    return {
        "threshold": threshold,
        "tp": int(round(tp)),
        "fp": int(round(fp)),
        "tn": int(round(n_neg - fp)),
        "fn": int(round(n_pos - tp)),
        **main,
        "exact": not ambiguous,
        "error_bound": bound,
    }


def ranking_curves(b: Bins, max_points: int = 1000) -> dict[str, dict[str, np.ndarray]]:
    """ROC (fpr, tpr, thresholds) and PR (recall, precision, thresholds) curves, downsampled."""
    tps, fps = np.cumsum(b.pos), np.cumsum(b.neg)
    n_pos = tps[-1] if tps.size else 0.0
    n_neg = fps[-1] if fps.size else 0.0
    idx = thin_indices(tps.size, max_points)
    tps, fps = np.concatenate(([0.0], tps[idx])), np.concatenate(([0.0], fps[idx]))
    thresholds = np.concatenate(([np.inf], b.values[idx]))
    fpr = fps / n_neg if n_neg else np.full(tps.size, np.nan)
    tpr = tps / n_pos if n_pos else np.full(tps.size, np.nan)
    precision = _safe_div(tps, tps + fps, 1.0)
    roc = downsample_curve(np.nan_to_num(fpr), np.nan_to_num(tpr), max_points)
    pr = downsample_curve(np.nan_to_num(tpr), precision, max_points)
    return {
        "roc": {"fpr": fpr[roc], "tpr": tpr[roc], "thresholds": thresholds[roc]},
        "pr": {"recall": tpr[pr], "precision": precision[pr], "thresholds": thresholds[pr]},
    }


class BinaryRankingMetrics:
    """Streaming exact binary ranking metrics (image- or pixel-level).

    `update(scores, targets, valid=None)` takes numpy arrays or torch tensors of any shape and
    float dtype (scores are never transformed: raw logits, distances and probabilities all
    work); `targets` are bool or 0/1; pixels where `valid` is False (void, ignore index) are
    left out. Memory stays bounded whatever the number of scores: see `score_table` for the
    design and for `max_exact_values`, `max_bins`, `block_size` and `threads`.

    Example:
        >>> m = BinaryRankingMetrics()
        >>> m.update(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1]))
        >>> m.compute()["auroc"]
        0.75
    """

    def __init__(
        self, max_exact_values: int = 2**22, max_bins: int = 2**23, block_size: int = 2**20, threads: int = 1
    ) -> None:
        self._table = ScoreTable(max_exact_values, max_bins, block_size, threads)

    def update(self, scores: Any, targets: Any, valid: Any | None = None) -> None:
        """Add scores with their 0/1 targets; `valid` (bool, same shape) excludes pixels."""
        s, t, v = flat_inputs(scores, targets, valid, "BinaryRankingMetrics.update")
        self._table.add(s, t, v)

    def reset(self) -> None:
        """Forget all scores."""
        self._table.reset()

    def merge(self, other: BinaryRankingMetrics) -> BinaryRankingMetrics:
        """Add the scores `other` saw (another process's state); returns self.

        Exact states merge exactly in any order (see `ScoreTable.merge`): the results equal those
        of one process that saw every score.
        """
        if not isinstance(other, BinaryRankingMetrics):
            raise OddspotError(f"BinaryRankingMetrics.merge: expected BinaryRankingMetrics, got {type(other).__name__}")
        self._table.merge(other._table)
        return self

    @property
    def exact(self) -> bool:
        """False once the table switched to binned mode (results then carry error bounds)."""
        return not self._table.binned

    @property
    def nbytes(self) -> int:
        """Bytes of state held."""
        return self._table.nbytes

    def _bins(self, where: str) -> Bins:
        b = self._table.bins()
        if b.values.size == 0:
            raise OddspotError(f"BinaryRankingMetrics.{where}: no valid scores were added; call update() first")
        return b

    def compute(self) -> dict[str, Any]:
        """auroc, ap, aupr_trapezoid, fpr95_first, fpr95_nearest, f1_max, f1_max_threshold,
        n_pos, n_neg, exact and error_bound (per metric). Undefined metrics are NaN (warned)."""
        return ranking_metrics(self._bins("compute"), "BinaryRankingMetrics")

    def at_threshold(self, threshold: float) -> dict[str, Any]:
        """tp/fp/tn/fn, precision, recall, f1 and accuracy for "anomalous iff score >= threshold"."""
        return threshold_metrics(self._bins("at_threshold"), threshold, "BinaryRankingMetrics.at_threshold")

    def curves(self, max_points: int = 1000) -> dict[str, dict[str, np.ndarray]]:
        """ROC and PR curves with at most `max_points` points each, for plotting."""
        return ranking_curves(self._bins("curves"), max_points)
