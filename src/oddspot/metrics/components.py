"""SegmentMeIfYouCan's component-level metrics (Chan et al., 2021): sIoU, PPV and mean F1 over anomaly instances.

Per image, at one pixel threshold t (a pixel is predicted anomalous when its score >= t, the rule
of oddspot's stored thresholds; the benchmark's code uses > at its own threshold, which differs
only for scores exactly at t):
- ground-truth components are the 8-connected pieces of the anomaly label, predicted components
  those of the prediction with void pixels removed; predicted components under `min_pred_size`
  pixels are dropped, and ground-truth components under `min_gt_size` pixels become void;
- everything below is counted on the non-void pixels only;
- sIoU of a ground-truth component k: |k covered by any prediction| / (|k| + the pixels of the
  predicted components touching k that lie on no anomaly). The benchmark's "adjusted union"
  leaves out the parts of those predictions that cover *other* anomalies, so one prediction
  spanning two adjacent objects is not punished twice;
- PPV of a predicted component: the share of its pixels on an anomaly;
- at each sIoU threshold tau in 0.25, 0.30, ..., 0.75: TP = ground-truth components with sIoU >=
  tau, FN = the others, FP = predicted components with PPV < tau; F1(tau) = 2 TP / (2 TP + FN + FP)
  with counts summed over images, and mean F1 is its mean over the eleven thresholds.
sIoU and PPV are reported as means over all components of the set. The sizes the benchmark uses
are 500 / 100 pixels (predicted / ground truth; its anomaly track) and 50 / 10 (obstacle track).
The sIoU thresholds are compared as the benchmark's `np.linspace(0.25, 0.75, 11)` values (its
eighth is 0.6000000000000001, so an sIoU of exactly 0.6 fails it). One quirk is not copied: the
benchmark's void loop also visits the background label, so an image with fewer non-anomaly
pixels than the ground-truth size limit loses all of them; here the background is never void.

Per image the work is one contingency table of component labels (`np.bincount`), so there is no
loop over components; the state is a few numbers per component, and states merge exactly.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from scipy import ndimage

from oddspot.errors import OddspotError
from oddspot.metrics._inputs import binary_array, scores_array

SIOU_THRESHOLDS = tuple(float(t) for t in np.linspace(0.25, 0.75, 11))  # compared as the benchmark compares
SIZES = {"anomaly_track": (500, 100), "obstacle_track": (50, 10)}
_EIGHT = np.ones((3, 3), bool)


def _components(mask: np.ndarray, min_size: int) -> tuple[np.ndarray, np.ndarray]:
    """8-connected labels of `mask` and a bool per label (index 0 = background) saying whether it is under `min_size`."""
    labels, n = ndimage.label(mask, structure=_EIGHT)
    small = np.bincount(labels.ravel(), minlength=n + 1) < min_size
    small[0] = False
    return labels, small


def image_components(scores: np.ndarray, target: np.ndarray, valid: np.ndarray, threshold: float,
                     min_pred_size: int, min_gt_size: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sIoU per ground-truth component, PPV and size per predicted component) of one image."""
    gt, gt_small = _components(target & valid, min_gt_size)
    pred, pred_small = _components((scores >= threshold) & valid, min_pred_size)
    pred[pred_small[pred]] = 0
    roi = valid & ~gt_small[gt]
    g, p = gt[roi], pred[roi]
    g_ids, p_ids = np.unique(g[g > 0]), np.unique(p[p > 0])
    gi = np.searchsorted(np.concatenate(([0], g_ids)), g)
    pi = np.searchsorted(np.concatenate(([0], p_ids)), p)
    n, m = g_ids.size, p_ids.size
    table = np.bincount(gi * (m + 1) + pi, minlength=(n + 1) * (m + 1)).reshape(n + 1, m + 1).astype(np.float64)
    both = table[1:, 1:]
    touch = both > 0
    gt_size, pred_size = table[1:].sum(axis=1), table[:, 1:].sum(axis=0)
    siou = both.sum(axis=1) / (gt_size + touch.astype(np.float64) @ table[0, 1:])
    ppv = both.sum(axis=0) / pred_size
    return siou, ppv, pred_size


class ComponentMetrics:
    """Streaming sIoU / PPV / mean F1 of anomaly components at one pixel `threshold` (score >= threshold;
    see the module docstring)."""

    def __init__(self, threshold: float, min_pred_size: int = 500, min_gt_size: int = 100) -> None:
        if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not math.isfinite(threshold):
            raise OddspotError(f"ComponentMetrics: threshold must be a finite number, got {threshold!r:.40}")
        for name, v in (("min_pred_size", min_pred_size), ("min_gt_size", min_gt_size)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise OddspotError(f"ComponentMetrics: {name} must be a whole number >= 0, got {v!r:.40}")
        self.threshold, self.min_pred_size, self.min_gt_size = float(threshold), min_pred_size, min_gt_size
        self._siou: list[np.ndarray] = []
        self._ppv: list[np.ndarray] = []
        self._n_images = 0

    def update(self, scores: Any, target: Any, valid: Any | None = None) -> None:
        """Add one image: its H x W score map, bool anomaly `target` and bool `valid` (not void) pixels."""
        where = "ComponentMetrics.update"
        s = scores_array(scores, where)
        t = binary_array(target, where, "target")
        v = np.ones(t.shape, bool) if valid is None else binary_array(valid, where, "valid")
        if s.ndim != 2 or s.shape != t.shape or v.shape != t.shape:
            raise OddspotError(f"{where}: scores {s.shape}, target {t.shape} and valid {v.shape} must be one H x W shape")
        if np.isnan(s[v]).any():
            raise OddspotError(f"{where}: NaN scores on valid pixels; fix the scorer")
        siou, ppv, _ = image_components(s, t, v, self.threshold, self.min_pred_size, self.min_gt_size)
        self._siou.append(siou)
        self._ppv.append(ppv)
        self._n_images += 1

    def merge(self, other: ComponentMetrics) -> ComponentMetrics:
        """Add the images `other` saw (same settings); returns self."""
        if not isinstance(other, ComponentMetrics):
            raise OddspotError(f"ComponentMetrics.merge: expected ComponentMetrics, got {type(other).__name__}")
        mine = (self.threshold, self.min_pred_size, self.min_gt_size)
        theirs = (other.threshold, other.min_pred_size, other.min_gt_size)
        if mine != theirs:
            raise OddspotError(f"ComponentMetrics.merge: settings {theirs} != {mine}; merge states of one setting")
        self._siou += other._siou
        self._ppv += other._ppv
        self._n_images += other._n_images
        return self

    def compute(self) -> dict[str, Any]:
        """siou_gt and ppv (means over components), f1 per sIoU threshold, mean_f1, counts and the settings."""
        siou = np.concatenate(self._siou) if self._siou else np.zeros(0)
        ppv = np.concatenate(self._ppv) if self._ppv else np.zeros(0)
        f1: dict[str, float] = {}
        counts: dict[str, dict[str, int]] = {}
        for tau in SIOU_THRESHOLDS:
            tp, fn, fp = int((siou >= tau).sum()), int((siou < tau).sum()), int((ppv < tau).sum())
            f1[f"{tau:.2f}"] = 2 * tp / (2 * tp + fn + fp) if tp + fn + fp else float("nan")
            counts[f"{tau:.2f}"] = {"tp": tp, "fn": fn, "fp": fp}
        return {"siou_gt": float(siou.mean()) if siou.size else float("nan"),
                "ppv": float(ppv.mean()) if ppv.size else float("nan"),
                "mean_f1": float(np.mean(list(f1.values()))) if siou.size or ppv.size else float("nan"),
                "f1": f1, "counts": counts, "n_gt_components": int(siou.size), "n_pred_components": int(ppv.size),
                "n_images": self._n_images, "threshold": self.threshold, "min_pred_size": self.min_pred_size,
                "min_gt_size": self.min_gt_size}
