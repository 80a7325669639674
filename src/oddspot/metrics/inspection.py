"""One-call evaluation of an inspection run (MVTec-style): image-level, pixel-level, breakdowns.

Feed images one at a time with `add`; `compute()` returns a JSON-ready dict and `curves()` the
downsampled ROC / PR / PRO curves. Pixel state is bounded (streaming score tables); only one
score, label, defect type and defect area per image are kept.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from oddspot.errors import OddspotError
from oddspot.metrics._inputs import binary_array, scores_array
from oddspot.metrics._order import canonical_order, check_disjoint, item_key
from oddspot.metrics.aupro import AUPRO
from oddspot.metrics.bootstrap import bootstrap_ci
from oddspot.metrics.breakdowns import defect_type_breakdown, size_breakdown
from oddspot.metrics.per_image import PerImageMetrics
from oddspot.metrics.ranking import BinaryRankingMetrics, ranking_curves, ranking_metrics, threshold_metrics
from oddspot.metrics.score_table import ScoreTable
from oddspot.metrics.spro import SPRO, checked_regions


def _plain(obj: Any) -> Any:
    """Numpy scalars/arrays inside dicts and lists turned into plain Python values."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, np.ndarray)):
        return [_plain(v) for v in obj]
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    return obj


class InspectionEvaluator:
    """Everything `oddspot evaluate` reports for an inspection task, from images added one by one.

    Args:
        fpr_limit: FPR integration limit of AUPRO.
        bootstrap: bootstrap resamples for the image-level confidence intervals (0 = none).
        seed: seed of the bootstrap (recorded in the output).
        size_edges: two area fractions splitting defects into small / medium / large; None =
            terciles of the defective images' mask areas.
        max_exact_values, max_bins, threads: pixel score-table settings (see `ScoreTable`).
        spro_groups: when given (MVTec LOCO AD: its two defect families), sPRO (`metrics.spro`) is
            computed over all defective images and per group (each against all good images), and
            every defective image with a map must come with its `regions`.

    Each image may carry a `key` (its index in the dataset, or its path); per-image results are
    computed in key order (insertion order by default), so `merge` of evaluators that saw disjoint
    keyed images gives the same numbers as one evaluator that saw them all (exact pixel tables).
    """

    def __init__(
        self,
        fpr_limit: float = 0.3,
        bootstrap: int = 1000,
        seed: int = 0,
        size_edges: Sequence[float] | None = None,
        max_exact_values: int = 2**22,
        max_bins: int = 2**23,
        threads: int = 1,
        spro_groups: Sequence[str] | None = None,
    ) -> None:
        if int(bootstrap) != bootstrap or bootstrap < 0:
            raise OddspotError(f"InspectionEvaluator: bootstrap must be an integer >= 0, got {bootstrap!r}")
        self.fpr_limit = fpr_limit
        self.bootstrap = int(bootstrap)
        self.seed = int(seed)
        self.size_edges = None if size_edges is None else [float(e) for e in size_edges]
        edges = self.size_edges
        if edges is not None and not (len(edges) == 2 and 0 <= edges[0] <= edges[1] <= 1):
            raise OddspotError(
                f"InspectionEvaluator: size_edges must be two increasing area fractions in [0, 1], got {size_edges}"
            )
        self._pixel = BinaryRankingMetrics(max_exact_values, max_bins, threads=threads)
        self._per_image = PerImageMetrics()
        self._aupro = AUPRO(fpr_limit, max_exact_values, max_bins, threads=threads)
        self.spro_groups = None if spro_groups is None else tuple(str(g) for g in spro_groups)
        if self.spro_groups is not None and ("all" in self.spro_groups or len(set(self.spro_groups)) < len(self.spro_groups)):
            raise OddspotError(f"InspectionEvaluator: spro_groups {self.spro_groups} must be distinct names other than 'all'")
        self._spro = None if self.spro_groups is None else {
            g: SPRO(max_exact_values=max_exact_values, max_bins=max_bins, threads=threads)
            for g in ("all", *self.spro_groups)}
        self._scores: list[float] = []
        self._labels: list[int] = []
        self._types: list[str] = []
        self._areas: list[float] = []
        self._keys: list[int | str] = []
        self._n_maps = 0
        self._no_mask = 0

    def add(
        self,
        image_score: float,
        label: int,
        anomaly_map: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        defect_type: str = "good",
        key: int | str | None = None,
        regions: Sequence[tuple[np.ndarray, float]] | None = None,
    ) -> None:
        """Add one image: its score, label (0 good / 1 defective), optional H x W map and mask.

        A good image's mask may be None (all False). A defective image without a mask counts
        for image-level metrics only. Bad input raises OddspotError and changes nothing.
        `key` orders the image among merged states (see the class docstring). `regions`: the
        sPRO regions of a defective image, each (bool H x W mask, saturation in pixels); only
        with `spro_groups`.
        """
        where = f"InspectionEvaluator.add ({defect_type})"
        k = item_key(key, len(self._scores), where)
        score = float(image_score)
        if math.isnan(score):
            raise OddspotError(f"{where}: image_score is NaN; fix the scorer")
        if label not in (0, 1):
            raise OddspotError(f"{where}: label must be 0 (good) or 1 (defective), got {label!r}")
        gt = None if mask is None else binary_array(mask, where, "mask")
        if gt is not None and gt.ndim != 2:
            raise OddspotError(f"{where}: mask must be H x W, got shape {gt.shape}")
        if gt is not None and label == 0 and gt.any():
            raise OddspotError(
                f"{where}: a good image (label 0) has {int(gt.sum())} defective mask pixels; fix the label"
            )
        amap = None
        if anomaly_map is not None:
            amap = scores_array(anomaly_map, where)
            if amap.ndim != 2:
                raise OddspotError(f"{where}: anomaly_map must be H x W, got shape {amap.shape}")
            if gt is not None and gt.shape != amap.shape:
                raise OddspotError(
                    f"{where}: anomaly_map {amap.shape} != mask {gt.shape}; resize the map to the mask size"
                )
            if amap.size and np.isnan(amap.min()):
                raise OddspotError(f"{where}: anomaly_map has {int(np.isnan(amap).sum())} NaN values; fix the scorer")
            if gt is None and label == 0:
                gt = np.zeros(amap.shape, bool)
        spro, checked = self._spro_targets(amap, gt, label, defect_type, regions, where)
        if amap is not None and gt is not None:
            self._pixel.update(amap, gt)
            self._per_image.update(amap, gt, key=k)
            self._aupro.update(amap, gt)
            for state in spro:
                if checked is None:
                    state.update_good(amap)
                else:
                    state.add_checked(amap, *checked)
            self._n_maps += 1
        elif amap is not None:
            self._no_mask += 1
        self._scores.append(score)
        self._labels.append(int(label))
        self._types.append(str(defect_type))
        self._areas.append(float(gt.mean()) if gt is not None and label == 1 and gt.size else float("nan"))
        self._keys.append(k)

    def _spro_targets(self, amap: np.ndarray | None, gt: np.ndarray | None, label: int, defect_type: str,
                      regions: Sequence[tuple[np.ndarray, float]] | None,
                      where: str) -> tuple[list[SPRO], tuple[list[np.ndarray], np.ndarray] | None]:
        """The sPRO states this image goes to and its checked regions (None for a good image), checked
        before any state changes."""
        if self._spro is None:
            if regions is not None:
                raise OddspotError(f"{where}: regions were given but this evaluator computes no sPRO; pass spro_groups")
            return [], None
        if amap is None or gt is None:
            return [], None
        if label == 0:
            return list(self._spro.values()), None
        if defect_type not in self._spro:
            raise OddspotError(f"{where}: defect type {defect_type!r} is not an sPRO group "
                               f"({', '.join(self.spro_groups or ())})")
        masks, saturation = checked_regions(regions or (), gt.shape, where)
        for k, region in enumerate(masks):
            if (region & ~gt).any():
                raise OddspotError(f"{where}: sPRO region {k} must be a non-empty part of the image's mask {gt.shape}")
        return [self._spro["all"], self._spro[defect_type]], (masks, saturation)

    def merge(self, other: InspectionEvaluator) -> InspectionEvaluator:
        """Add the images `other` saw (another process's evaluator, same settings, disjoint keys); returns self."""
        where = "InspectionEvaluator.merge"
        if not isinstance(other, InspectionEvaluator):
            raise OddspotError(f"{where}: expected InspectionEvaluator, got {type(other).__name__}")
        mine = (self.fpr_limit, self.bootstrap, self.seed, self.size_edges, self.spro_groups)
        theirs = (other.fpr_limit, other.bootstrap, other.seed, other.size_edges, other.spro_groups)
        if mine != theirs:
            raise OddspotError(f"{where}: settings (fpr_limit, bootstrap, seed, size_edges, spro_groups) {theirs} != {mine}; "
                               "merge evaluators made with one setting")
        check_disjoint(self._keys, other._keys, where)
        self._pixel.merge(other._pixel)
        self._per_image.merge(other._per_image)
        self._aupro.merge(other._aupro)
        for group, state in (self._spro or {}).items():
            state.merge(other._spro[group])  # type: ignore[index]
        self._scores += other._scores
        self._labels += other._labels
        self._types += other._types
        self._areas += other._areas
        self._keys += other._keys
        self._n_maps += other._n_maps
        self._no_mask += other._no_mask
        return self

    def _image_arrays(self) -> tuple[np.ndarray, np.ndarray]:
        if not self._scores:
            raise OddspotError("InspectionEvaluator: no images were added; call add() first")
        order = canonical_order(self._keys)
        return np.asarray(self._scores, np.float64)[order], np.asarray(self._labels, np.int8)[order]

    def _types_areas(self) -> tuple[list[str], np.ndarray]:
        """Defect types and areas per image, in the order of `_image_arrays`."""
        order = canonical_order(self._keys)
        return [self._types[i] for i in order], np.asarray(self._areas)[order]

    def _image_bins(self, scores: np.ndarray, labels: np.ndarray):
        table = ScoreTable(max_exact_values=2**62, block_size=2**62)
        table.add(scores, labels.astype(bool))
        return table.bins()

    def compute(self, image_threshold: float | None = None, pixel_threshold: float | None = None) -> dict[str, Any]:
        """{"image": {...}, "pixel": {...} or None, "breakdowns": {...}}, JSON-serialisable.

        Thresholds, when given, add precision / recall / F1 / accuracy / counts at that
        threshold ("anomalous iff score >= threshold") under "at_threshold".
        """
        scores, labels = self._image_arrays()
        bins = self._image_bins(scores, labels)
        image = ranking_metrics(bins, "InspectionEvaluator image-level")
        image["n_images"] = int(scores.size)
        if self.bootstrap:
            image["ci"] = bootstrap_ci(scores, labels, n=self.bootstrap, seed=self.seed)
        if image_threshold is not None:
            image["at_threshold"] = threshold_metrics(bins, image_threshold, "InspectionEvaluator image threshold")
        pixel = None
        if self._n_maps:
            pixel = self._pixel.compute()
            aupro = self._aupro.compute()
            pixel["aupro"] = aupro["aupro"]
            pixel["aupro_fpr_limit"] = aupro["fpr_limit"]
            pixel["n_regions"] = aupro["n_regions"]
            pixel["error_bound"]["aupro"] = aupro["error_bound"]
            pixel["exact"] = bool(pixel["exact"] and aupro["exact"])
            pixel["per_image"] = self._per_image.compute()
            pixel["n_images"] = self._n_maps
            pixel["n_defective_without_mask"] = self._no_mask
            if self._spro is not None:
                pixel["spro"] = {group: state.compute() for group, state in self._spro.items()}
            if pixel_threshold is not None:
                pixel["at_threshold"] = self._pixel.at_threshold(pixel_threshold)
        types, areas = self._types_areas()
        breakdowns = {
            "defect_type": defect_type_breakdown(scores, labels, types),
            "size": size_breakdown(scores, labels, areas, self.size_edges),
        }
        return _plain({"image": image, "pixel": pixel, "breakdowns": breakdowns})

    def curves(self, max_points: int = 1000) -> dict[str, Any]:
        """Downsampled curves as lists: image ROC/PR; pixel ROC/PR/PRO (None without maps)."""
        scores, labels = self._image_arrays()
        out: dict[str, Any] = {"image": ranking_curves(self._image_bins(scores, labels), max_points), "pixel": None}
        if self._n_maps:
            out["pixel"] = {**self._pixel.curves(max_points), "pro": self._aupro.curve(max_points)}
        return _plain(out)
