"""Semantic segmentation quality: a confusion matrix streamed over a split, per-class IoU, mIoU.

Two mIoU conventions exist and both are named wherever they are reported:
  miou_present_classes  mean IoU over the classes present (in the targets or the predictions);
                        a class absent from both has no IoU (NaN) and is left out
  miou_all_classes      mean over every class, an absent class counting IoU 0: the StreetHazards
                        benchmark code (`intersection / (union + 1e-10)` averaged over all classes)
"""

from __future__ import annotations

from typing import Any

import numpy as np

from oddspot.errors import OddspotError
from oddspot.metrics._inputs import to_numpy
from oddspot.metrics.undefined import warn_undefined


def _labels(x: Any, where: str, what: str) -> np.ndarray:
    a = to_numpy(x, where)
    if a.dtype.kind == "f" and a.size and not np.all(np.mod(a, 1) == 0):
        raise OddspotError(f"{where}: {what} must hold integer class indices, found fractional values")
    if a.dtype.kind not in "iuf" and a.dtype != np.bool_:
        raise OddspotError(f"{where}: {what} must hold integer class indices, got dtype {a.dtype}")
    return a.astype(np.int64, copy=False).ravel()


class ConfusionMatrix:
    """Streamed `num_classes` x `num_classes` confusion matrix (rows = target, columns = prediction).

    Pixels whose target equals `ignore_index` are left out. `compute()` gives per-class IoU
    (NaN for a class absent from both targets and predictions), mIoU (mean over classes
    present), pixel accuracy and the matrix itself.
    """

    def __init__(self, num_classes: int, ignore_index: int | None = None) -> None:
        if int(num_classes) != num_classes or num_classes < 1:
            raise OddspotError(f"ConfusionMatrix: num_classes must be a positive integer, got {num_classes!r}")
        self.num_classes = int(num_classes)
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        """Zero the matrix."""
        self.matrix = np.zeros((self.num_classes, self.num_classes), np.int64)

    def update(self, pred: Any, target: Any) -> None:
        """Add predicted and target class maps of one shape (any shape; numpy or torch)."""
        where = "ConfusionMatrix.update"
        p, t = _labels(pred, where, "pred"), _labels(target, where, "target")
        if p.shape != t.shape:
            raise OddspotError(f"{where}: pred has {p.size} pixels but target has {t.size}; pass maps of one shape")
        if self.ignore_index is not None:
            keep = t != self.ignore_index
            p, t = p[keep], t[keep]
        c = self.num_classes
        for name, a in (("target", t), ("pred", p)):
            if a.size and (a.min() < 0 or a.max() >= c):
                bad = a[(a < 0) | (a >= c)][0]
                raise OddspotError(
                    f"{where}: {name} holds class {bad} outside 0..{c - 1}; fix num_classes or set ignore_index"
                )
        self.matrix += np.bincount(t * c + p, minlength=c * c).reshape(c, c)

    def merge(self, other: ConfusionMatrix) -> ConfusionMatrix:
        """Add the pixels `other` counted (another process's state); returns self. Integer counts: exact."""
        if not isinstance(other, ConfusionMatrix):
            raise OddspotError(f"ConfusionMatrix.merge: expected ConfusionMatrix, got {type(other).__name__}")
        if (other.num_classes, other.ignore_index) != (self.num_classes, self.ignore_index):
            raise OddspotError(f"ConfusionMatrix.merge: {other.num_classes} classes (ignore {other.ignore_index}) != "
                               f"{self.num_classes} (ignore {self.ignore_index}); merge states of one setting")
        self.matrix += other.matrix
        return self

    def compute(self) -> dict[str, Any]:
        """miou (= miou_present_classes), iou (list per class, NaN if absent), pixel_accuracy, n_pixels,
        matrix (lists), and both named mIoU conventions (see the module docstring)."""
        m = self.matrix.astype(np.float64)
        tp = np.diag(m)
        union = m.sum(0) + m.sum(1) - tp
        iou = np.full(self.num_classes, np.nan)
        np.divide(tp, union, out=iou, where=union > 0)
        total = m.sum()
        if np.any(union > 0):
            miou = float(np.nanmean(iou))
        else:
            miou = warn_undefined("ConfusionMatrix", "miou", "no pixels were added")
        if total:
            accuracy = float(tp.sum() / total)
        else:
            accuracy = warn_undefined("ConfusionMatrix", "pixel_accuracy", "no pixels were added")
        return {
            "miou": miou,
            "miou_present_classes": miou,
            "miou_all_classes": float(np.nan_to_num(iou, nan=0.0).mean()) if np.any(union > 0) else miou,
            "iou": [float(v) for v in iou],
            "pixel_accuracy": accuracy,
            "n_pixels": int(total),
            "matrix": self.matrix.tolist(),
        }


def iou_conventions(matrix: Any, num_classes: int | None = None) -> dict[str, Any]:
    """Per-class IoU, both mIoU conventions and pixel accuracy of the first `num_classes` classes of a
    confusion matrix (rows = target, columns = prediction; default: every class).

    Target rows beyond `num_classes` (StreetHazards' anomaly class on the test split) are no class
    of the mean, but the predictions on their pixels still count as false positives of the predicted
    class, as the benchmark's `intersectionAndUnion` counts them. Pixel accuracy is over the pixels
    of the first `num_classes` classes.
    """
    m = np.asarray(matrix, np.float64)
    if m.ndim != 2 or m.shape[0] != m.shape[1]:
        raise OddspotError(f"iou_conventions: expected a square confusion matrix, got shape {m.shape}")
    k = m.shape[0] if num_classes is None else int(num_classes)
    if not 1 <= k <= m.shape[0]:
        raise OddspotError(f"iou_conventions: num_classes {num_classes} outside 1..{m.shape[0]}")
    tp = np.diag(m)[:k]
    union = m[:k].sum(1) + m[:, :k].sum(0) - tp
    iou = np.full(k, np.nan)
    np.divide(tp, union, out=iou, where=union > 0)
    known = m[:k].sum()
    if not np.any(union > 0):
        present = warn_undefined("iou_conventions", "miou", "no pixels were added")
        every = present
    else:
        present, every = float(np.nanmean(iou)), float(np.nan_to_num(iou, nan=0.0).mean())
    return {"miou_present_classes": present, "miou_all_classes": every, "iou": [float(v) for v in iou],
            "pixel_accuracy": float(tp.sum() / known) if known else float("nan"),
            "n_pixels": int(known), "n_other_pixels": int(m[k:].sum())}
