"""AUPRO (MVTec AD, Bergmann et al.), streaming over images.

Each ground-truth mask is split into 8-connected regions per image. Every anomaly-free pixel
adds 1 to the false-positive count, every pixel of region k adds 1/|region k| to PRO. Over the
distinct scores in descending order (tied scores give one point, the last), FPR = cumulative
FP / anomaly-free pixels and PRO = cumulative PRO / number of regions; the curve starts at
(0, 0) and is integrated by trapezoids up to `fpr_limit`, linearly interpolated there, and
divided by `fpr_limit`.

The per-score state is the same `ScoreTable` as the ranking metrics (negatives = anomaly-free
pixels, positive weight = PRO mass), so memory is bounded and the result is exact, or carries an
error bound once the table is binned.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import ndimage

from oddspot.errors import OddspotError
from oddspot.metrics import _kernels
from oddspot.metrics._inputs import binary_array, scores_array
from oddspot.metrics.curves import downsample_curve, thin_indices
from oddspot.metrics.score_table import Bins, ScoreTable
from oddspot.metrics.undefined import warn_undefined

_PER_IMAGE_8_CONNECTED = np.zeros((3, 3, 3), bool)
_PER_IMAGE_8_CONNECTED[1] = True


class AUPRO:
    """Streaming area under the per-region-overlap curve up to `fpr_limit` (default 0.3), normalized."""

    def __init__(
        self,
        fpr_limit: float = 0.3,
        max_exact_values: int = 2**22,
        max_bins: int = 2**23,
        block_size: int = 2**20,
        threads: int = 1,
    ) -> None:
        if not 0 < fpr_limit <= 1:
            raise OddspotError(f"AUPRO: fpr_limit must be in (0, 1], got {fpr_limit!r}")
        self.fpr_limit = float(fpr_limit)
        self._table = ScoreTable(max_exact_values, max_bins, block_size, threads, weighted=True)
        self.reset()

    def reset(self) -> None:
        """Forget all images."""
        self._table.reset()
        self._n_regions = 0
        self._n_images = 0

    @property
    def exact(self) -> bool:
        """False once the table switched to binned mode (results then carry an error bound)."""
        return not self._table.binned

    def merge(self, other: AUPRO) -> AUPRO:
        """Add the images `other` saw (another process's state); returns self. Exact states merge
        exactly in any order: the result equals that of one process that saw every image."""
        if not isinstance(other, AUPRO):
            raise OddspotError(f"AUPRO.merge: expected AUPRO, got {type(other).__name__}")
        if other.fpr_limit != self.fpr_limit:
            raise OddspotError(f"AUPRO.merge: fpr_limit {other.fpr_limit} != {self.fpr_limit}; merge states of one setting")
        self._table.merge(other._table)
        self._n_regions += other._n_regions
        self._n_images += other._n_images
        return self

    def update(self, anomaly_maps: Any, masks: Any) -> None:
        """Add one image (H x W) or a batch (N x H x W) of anomaly maps with their bool masks."""
        where = "AUPRO.update"
        maps = scores_array(anomaly_maps, where)
        gt = binary_array(masks, where, "masks")
        if maps.shape != gt.shape or maps.ndim not in (2, 3):
            raise OddspotError(
                f"{where}: anomaly maps {maps.shape} and masks {gt.shape} must have one shape, H x W or N x H x W"
            )
        if maps.ndim == 2:
            maps, gt = maps[None], gt[None]
        if maps.size and np.isnan(maps.min()):
            raise OddspotError(f"{where}: {int(np.isnan(maps).sum())} anomaly-map values are NaN; fix the scorer")
        labels, n_regions = ndimage.label(gt, structure=_PER_IMAGE_8_CONNECTED)
        sizes = np.bincount(labels.ravel()).astype(np.float64)
        sizes[0] = 1.0
        weights = (1.0 / sizes)[labels.ravel()]
        self._table.add(maps.ravel(), gt.ravel(), None, weights)
        self._n_regions += int(n_regions)
        self._n_images += maps.shape[0]

    def _bins(self) -> Bins | None:
        b = self._table.bins()
        if self._n_regions == 0 or b.neg.sum() == 0:
            reason = "no anomalous regions" if self._n_regions == 0 else "no anomaly-free pixels"
            warn_undefined("AUPRO", "aupro", reason)
            return None
        return b

    def compute(self) -> dict[str, Any]:
        """aupro (normalized to [0, 1]), fpr_limit, n_regions, n_images, exact, error_bound."""
        out: dict[str, Any] = {
            "aupro": float("nan"),
            "fpr_limit": self.fpr_limit,
            "n_regions": self._n_regions,
            "n_images": self._n_images,
            "exact": not self._table.binned,
            "error_bound": float("nan"),
        }
        b = self._bins()
        if b is None:
            return out
        n_ok, n_regions = float(b.neg.sum()), float(self._n_regions)
        area, bound = _kernels.pro_pass(b.pos, b.neg, b.exact, n_ok, n_regions, self.fpr_limit)
        out.update(aupro=area / self.fpr_limit, error_bound=bound / self.fpr_limit, exact=b.all_exact)
        return out

    def curve(self, max_points: int = 1000) -> dict[str, np.ndarray]:
        """The whole (FPR, PRO) curve with thresholds, downsampled to at most `max_points`."""
        b = self._bins()
        if b is None:
            return {"fpr": np.zeros(0), "pro": np.zeros(0), "thresholds": np.zeros(0)}
        fp, pro = np.cumsum(b.neg), np.cumsum(b.pos)
        idx = thin_indices(fp.size, max_points)
        fpr = np.concatenate(([0.0], fp[idx] / fp[-1]))
        pro = np.concatenate(([0.0], pro[idx] / self._n_regions))
        thresholds = np.concatenate(([np.inf], b.values[idx]))
        keep = downsample_curve(fpr, pro, max_points)
        return {"fpr": fpr[keep], "pro": pro[keep], "thresholds": thresholds[keep]}
