"""sPRO, the saturated per-region overlap of MVTec LOCO AD (Bergmann et al., 2022), streaming and exact.

A region is one ground-truth mask file (a logical anomaly such as a missing part may have several
connected components, so regions are not split into components). Region k has a saturation
threshold s_k, in pixels (from the dataset's `defects_config.json`: a fraction of the region's
area when `relative_saturation`, else an absolute pixel count capped at the area). At a threshold
t its saturated overlap is min(TP_k(t) / s_k, 1): a detector gets full credit once it marks s_k
pixels of the region, wherever they are inside it. sPRO(t) is the mean over all regions. The
false-positive rate is computed on the pixels of the anomaly-free images only, so pixels of a
defective image outside its masks count for nothing (a logical anomaly's annotation does not say
which of them are normal).

Why it streams: sorted by score within its region, the pixel of rank r (0 = highest) raises
min(TP_k / s_k, 1) by (min(r + 1, s_k) - min(r, s_k)) / s_k, whatever the threshold. With those
per-pixel weights the whole curve is the same weighted `ScoreTable` as AUPRO's (negatives = pixels
of good images), so memory is bounded and ties are exact. The area is integrated by trapezoids up
to each FPR limit, interpolated there, and divided by the limit (0.05 is the limit the MVTec LOCO
AD paper reports).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from oddspot.errors import OddspotError
from oddspot.metrics import _kernels
from oddspot.metrics._inputs import binary_array, scores_array
from oddspot.metrics.score_table import ScoreTable
from oddspot.metrics.undefined import warn_undefined

FPR_LIMITS = (0.01, 0.05, 0.1, 0.3, 1.0)


def saturated_weights(scores: np.ndarray, region: np.ndarray, saturation: np.ndarray) -> np.ndarray:
    """Each pixel's share of its region's saturated overlap, given the flat `scores` of the region
    pixels, their region index `region` and the regions' `saturation` (pixels): by descending score
    within a region, rank r adds (min(r + 1, s) - min(r, s)) / s. Ties may take any order: a
    threshold keeps all of a tie or none, and the sum over any top-j is min(j, s) / s."""
    order = np.lexsort((-scores.astype(np.float64), region))
    sorted_region = region[order]
    starts = np.searchsorted(sorted_region, np.arange(saturation.size))
    rank = np.arange(order.size) - starts[sorted_region]
    s = saturation[sorted_region]
    weights = np.empty(order.size, np.float64)
    weights[order] = (np.minimum(rank + 1, s) - np.minimum(rank, s)) / s
    return weights


def checked_regions(regions: Sequence[tuple[Any, float]], shape: tuple[int, ...],
                    where: str) -> tuple[list[np.ndarray], np.ndarray]:
    """(bool masks, saturations in pixels capped at each region's area) of a defective image's sPRO
    regions, each (H x W mask of `shape`, saturation > 0); a one-line error names the bad region."""
    if not regions:
        raise OddspotError(f"{where}: a defective image needs its sPRO regions (one mask per defect)")
    masks, saturation = [], []
    for k, (mask, sat) in enumerate(regions):
        gt = binary_array(mask, where, "region mask")
        if gt.shape != tuple(shape) or not gt.any():
            raise OddspotError(f"{where}: sPRO region {k} must be a non-empty {tuple(shape)} mask, got {gt.shape}")
        if isinstance(sat, bool) or not (isinstance(sat, (int, float)) and math.isfinite(sat) and sat > 0):
            raise OddspotError(f"{where}: sPRO region {k} saturation {sat!r:.40} must be a finite number > 0 (pixels)")
        masks.append(gt)
        saturation.append(min(float(sat), float(gt.sum())))  # past its area a region could never saturate
    return masks, np.asarray(saturation)


class SPRO:
    """Streaming area under the (FPR, sPRO) curve at each limit of `fpr_limits`, normalized to [0, 1]."""

    def __init__(self, fpr_limits: Sequence[float] = FPR_LIMITS, max_exact_values: int = 2**22,
                 max_bins: int = 2**23, block_size: int = 2**20, threads: int = 1) -> None:
        limits = tuple(float(v) for v in fpr_limits)
        if not limits or any(not 0 < v <= 1 for v in limits):
            raise OddspotError(f"SPRO: fpr_limits must be values in (0, 1], got {fpr_limits!r}")
        self.fpr_limits = limits
        self._table = ScoreTable(max_exact_values, max_bins, block_size, threads, weighted=True)
        self.reset()

    def reset(self) -> None:
        """Forget all images."""
        self._table.reset()
        self._n_regions = 0
        self._n_good = 0
        self._n_defective = 0

    def update_good(self, anomaly_map: Any) -> None:
        """Add an anomaly-free image: every pixel of its H x W map is a negative."""
        amap = self._map(anomaly_map, "SPRO.update_good")
        self._table.add(amap.ravel(), np.zeros(amap.size, bool))
        self._n_good += 1

    def update_defective(self, anomaly_map: Any, regions: Sequence[tuple[Any, float]]) -> None:
        """Add a defective image: its H x W map and its regions, each (bool H x W mask, saturation in pixels,
        capped at the region's area)."""
        where = "SPRO.update_defective"
        amap = self._map(anomaly_map, where)
        self.add_checked(amap, *checked_regions(regions, amap.shape, where))

    def add_checked(self, amap: np.ndarray, masks: Sequence[np.ndarray], saturation: np.ndarray) -> None:
        """`update_defective` on a map and regions already checked (`checked_regions`)."""
        picked = [amap[m] for m in masks]
        index = np.concatenate([np.full(v.size, k, np.int64) for k, v in enumerate(picked)])
        scores = np.concatenate(picked)
        self._table.add(scores, np.ones(scores.size, bool), None, saturated_weights(scores, index, saturation))
        self._n_regions += len(masks)
        self._n_defective += 1

    @staticmethod
    def _map(anomaly_map: Any, where: str) -> np.ndarray:
        amap = scores_array(anomaly_map, where)
        if amap.ndim != 2:
            raise OddspotError(f"{where}: anomaly map must be H x W, got shape {amap.shape}")
        if amap.size and np.isnan(amap.min()):
            raise OddspotError(f"{where}: {int(np.isnan(amap).sum())} anomaly-map values are NaN; fix the scorer")
        return amap

    def merge(self, other: SPRO) -> SPRO:
        """Add the images `other` saw (another process's state, same limits); returns self. Exact."""
        if not isinstance(other, SPRO):
            raise OddspotError(f"SPRO.merge: expected SPRO, got {type(other).__name__}")
        if other.fpr_limits != self.fpr_limits:
            raise OddspotError(f"SPRO.merge: fpr_limits {other.fpr_limits} != {self.fpr_limits}; merge states of one setting")
        self._table.merge(other._table)
        self._n_regions += other._n_regions
        self._n_good += other._n_good
        self._n_defective += other._n_defective
        return self

    def compute(self) -> dict[str, Any]:
        """{"auc": {limit: area / limit}, "error_bound": {limit: ...}, n_regions, n_good_images,
        n_defective_images, exact}; NaN areas (with a warning) without regions or good images."""
        nan = {f"{v:g}": float("nan") for v in self.fpr_limits}
        out: dict[str, Any] = {"auc": dict(nan), "error_bound": dict(nan), "n_regions": self._n_regions,
                               "n_good_images": self._n_good, "n_defective_images": self._n_defective,
                               "exact": not self._table.binned}
        b = self._table.bins()
        if self._n_regions == 0 or b.neg.sum() == 0:
            warn_undefined("sPRO", "spro", "no regions" if self._n_regions == 0 else "no anomaly-free images")
            return out
        for limit in self.fpr_limits:
            area, bound = _kernels.pro_pass(b.pos, b.neg, b.exact, float(b.neg.sum()), float(self._n_regions), limit)
            out["auc"][f"{limit:g}"] = min(area / limit, 1.0)  # sums of 1/s weights may round past 1
            out["error_bound"][f"{limit:g}"] = bound / limit
        out["exact"] = bool(b.all_exact)
        return out
