"""Semantic segmentation quality: a confusion matrix streamed over a split, per-class IoU, mIoU."""

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
        """miou, iou (list per class, NaN if absent), pixel_accuracy, n_pixels, matrix (lists)."""
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
            "iou": [float(v) for v in iou],
            "pixel_accuracy": accuracy,
            "n_pixels": int(total),
            "matrix": self.matrix.tolist(),
        }
