"""Seeded percentile bootstrap confidence intervals that resample IMAGES.

Image level (`bootstrap_ci`): image AUROC, AP and F1-max. Images are resampled with replacement
`n` times; each resample's metrics are computed for all resamples at once (row-wise sorts, ties
handled exactly as in `ranking.py`), and the interval is the (1 - level)/2 and (1 + level)/2
percentiles. Resamples that hold a single class cannot define the metrics; they are left out and
counted (`n_degenerate`).

Pixel and region level (`pixel_bootstrap_ci`): pixel AUROC, AP and AUPRO over the same kind of
image resamples, from per-image sufficient statistics (`PixelStats`: a sparse histogram per image
on one fixed score grid), so no map is kept and a resample's metrics are cumulative sums over
the grid; exact when every grid bin holds one distinct score, else with a reported bound.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy import ndimage
from scipy.stats import rankdata

from oddspot.errors import OddspotError
from oddspot.metrics._inputs import binary_array, scores_array
from oddspot.metrics._keys import keys32
from oddspot.metrics.undefined import warn_undefined
from oddspot.progress import track

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


# ---------------------------------------------------------------------------------------------
# Pixel- and region-level intervals over IMAGE resamples
# ---------------------------------------------------------------------------------------------

PIXEL_BOOTSTRAP_METRICS = ("auroc", "ap", "aupro")
GRID_BITS = 20
"""Pixel scores are counted per image on a FIXED grid: the top 20 bits of the float32 order key
(sign, exponent, 11 mantissa bits), so each bin spans a relative score width of at most 2**-11.
A bin holding one distinct score over all images is an exact tie group; a bin holding several
is treated as one tied group and contributes to the reported `error_bound`."""
_GRID_SHIFT = np.uint32(32 - GRID_BITS)
_RESAMPLE_ELEMENTS = 2**20
_REGIONS_8 = np.ones((3, 3), bool)
PIXEL_STATS_FIELDS = ("offsets", "bins", "neg", "pos", "pro", "lo", "hi", "n_regions")


class PixelStats:
    """Per-image sufficient statistics of pixel scores for image-resampling bootstraps.

    Each image becomes a sparse histogram on the global grid (`GRID_BITS`): per non-empty bin,
    its anomaly-free pixel count (`neg`), defective pixel count (`pos`), PRO mass (`pro`: each
    pixel of an 8-connected defect region adds 1/|region|) and the lowest and highest score in
    it (`lo`, `hi`); plus the image's number of regions. A resample's pooled histogram is then the
    multiplicity-weighted sum of its images' histograms, so pixel AUROC / AP and AUPRO of every
    resample follow from bounded state (about 28 bytes per non-empty bin of each image, far below
    the pixel count for smooth maps) without keeping a single map.
    """

    def __init__(self) -> None:
        self._parts: list[tuple[np.ndarray, ...]] = []
        self._regions: list[int] = []

    def __len__(self) -> int:
        return len(self._parts)

    def add(self, anomaly_map: Any, mask: Any) -> None:
        """Add one image's H x W anomaly map and bool mask (all False for a good image)."""
        where = "PixelStats.add"
        s = scores_array(anomaly_map, where).astype(np.float32).ravel()
        gt2d = binary_array(mask, where, "mask")
        if gt2d.ndim != 2 or gt2d.size != s.size:
            raise OddspotError(f"{where}: mask {gt2d.shape} does not match the map; pass H x W arrays of one shape")
        if s.size and np.isnan(s).any():
            raise OddspotError(f"{where}: the anomaly map has NaN values; fix the scorer")
        gt = gt2d.ravel()
        if gt.any():
            labels, n_regions = ndimage.label(gt2d, structure=_REGIONS_8)
            sizes = np.bincount(labels.ravel()).astype(np.float64)
            sizes[0] = np.inf
            pro_weight = 1.0 / sizes[labels.ravel()]
        else:
            n_regions, pro_weight = 0, None
        if s.size:  # counted on the grid by bincount: one pass, no sort
            cell = (keys32(s) >> _GRID_SHIFT).astype(np.intp)
            first = int(cell.min())
            cell -= first
            span = int(cell.max()) + 1
            count = np.bincount(cell, minlength=span)
            used = np.flatnonzero(count)
            pos = np.bincount(cell, weights=gt, minlength=span)[used]
            pro = np.bincount(cell, weights=pro_weight, minlength=span)[used] if pro_weight is not None else np.zeros(used.size)
            lo = np.full(span, np.inf, np.float32)
            hi = np.full(span, -np.inf, np.float32)
            np.minimum.at(lo, cell, s)
            np.maximum.at(hi, cell, s)
            part = ((used + first).astype(np.uint32), (count[used] - pos).astype(np.uint32), pos.astype(np.uint32),
                    pro.astype(np.float64), lo[used], hi[used])
        else:
            part = (np.zeros(0, np.uint32), np.zeros(0, np.uint32), np.zeros(0, np.uint32), np.zeros(0),
                    np.zeros(0, np.float32), np.zeros(0, np.float32))
        self._parts.append(part)
        self._regions.append(int(n_regions))

    @classmethod
    def concatenate(cls, parts: Sequence[PixelStats]) -> PixelStats:
        """One object holding the images of `parts`, in that order (e.g. blocks scored apart)."""
        out = cls()
        for part in parts:
            out._parts += part._parts
            out._regions += part._regions
        return out

    def reordered(self, order: Any) -> PixelStats:
        """The same statistics with the images in `order` (indices into this object's images)."""
        out = PixelStats()
        out._parts = [self._parts[int(i)] for i in order]
        out._regions = [self._regions[int(i)] for i in order]
        return out

    def arrays(self) -> dict[str, np.ndarray]:
        """The statistics as flat arrays (`offsets` delimits each image's bins), e.g. for an .npz file."""
        count = np.array([p[0].size for p in self._parts], np.int64)
        out = {"offsets": np.concatenate(([0], np.cumsum(count))).astype(np.int64)}
        for i, name in enumerate(("bins", "neg", "pos", "pro", "lo", "hi")):
            dtype = (np.uint32, np.uint32, np.uint32, np.float64, np.float32, np.float32)[i]
            out[name] = np.concatenate([p[i] for p in self._parts]).astype(dtype) if self._parts else np.zeros(0, dtype)
        out["n_regions"] = np.asarray(self._regions, np.int64)
        return out

    @classmethod
    def from_arrays(cls, arrays: Any, source: str = "pixel statistics") -> PixelStats:
        """Statistics from `arrays()` output (e.g. a loaded .npz), checked; errors name `source`."""
        missing = [k for k in PIXEL_STATS_FIELDS if k not in arrays]
        if missing:
            raise OddspotError(f"{source}: missing array(s) {', '.join(missing)}; re-run `oddspot evaluate`")
        a = {k: np.asarray(arrays[k]) for k in PIXEL_STATS_FIELDS}
        off, n = a["offsets"], a["bins"].size
        ok = (off.ndim == 1 and off.size == a["n_regions"].size + 1 and off.size and off[0] == 0 and off[-1] == n
              and bool(np.all(np.diff(off) >= 0)) and all(a[k].shape == (n,) for k in ("neg", "pos", "pro", "lo", "hi"))
              and np.issubdtype(off.dtype, np.integer) and np.issubdtype(a["n_regions"].dtype, np.integer))
        if ok:
            floats = np.concatenate([a[k].astype(np.float64) for k in ("neg", "pos", "pro", "lo", "hi")])
            ok = bool(np.isfinite(floats).all()) and bool((a["n_regions"] >= 0).all())
        if not ok:
            raise OddspotError(f"{source}: inconsistent pixel statistics (offsets, shapes or values); re-run `oddspot evaluate`")
        stats = cls()
        for i in range(off.size - 1):
            sl = slice(int(off[i]), int(off[i + 1]))
            stats._parts.append(tuple(a[k][sl] for k in ("bins", "neg", "pos", "pro", "lo", "hi")))
        stats._regions = [int(r) for r in a["n_regions"]]
        return stats

    def matrices(self) -> tuple[Any, Any, Any, np.ndarray, np.ndarray]:
        """(neg, pos, pro) as sparse images x global-bins matrices (bins in DESCENDING score order),
        each bin's exactness, and the regions per image."""
        from scipy import sparse

        a = self.arrays()
        grid, col = np.unique(a["bins"], return_inverse=True)
        col = grid.size - 1 - col.ravel()  # descending scores
        row = np.repeat(np.arange(len(self._parts)), np.diff(a["offsets"]))
        shape = (len(self._parts), grid.size)
        mats = [sparse.csr_matrix((a[k].astype(np.float64), (row, col)), shape=shape) for k in ("neg", "pos", "pro")]
        lo = np.full(grid.size, np.inf)
        hi = np.full(grid.size, -np.inf)
        np.minimum.at(lo, col, a["lo"].astype(np.float64))
        np.maximum.at(hi, col, a["hi"].astype(np.float64))
        return mats[0], mats[1], mats[2], lo == hi, a["n_regions"].astype(np.float64)


def resample_indices(n_items: int, n: int, seed: int, block: int) -> Any:
    """Yield (rows x n_items) blocks of bootstrap indices, `n` rows in all, from one seeded generator."""
    rng = np.random.default_rng(seed)
    for start in range(0, n, block):
        yield rng.integers(0, n_items, size=(min(block, n - start), n_items))


def counts_of(idx: np.ndarray, n_items: int) -> np.ndarray:
    """Multiplicity of each item in each row of a block of resample indices (rows x n_items, float)."""
    rows = idx.shape[0]
    flat = (idx + n_items * np.arange(rows)[:, None]).ravel()
    return np.bincount(flat, minlength=rows * n_items).reshape(rows, n_items).astype(np.float64)


def pixel_metrics_weighted(stats_mats: tuple[Any, Any, Any, np.ndarray, np.ndarray], weights: np.ndarray,
                           fpr_limit: float = 0.3) -> dict[str, np.ndarray]:
    """Pixel AUROC, AP and AUPRO (each with `<name>_bound`) of R weighted image sets at once.

    `weights` (R x images) are image multiplicities (a bootstrap resample; all ones = the data).
    Definitions as `ranking.py` / `aupro.py` with each grid bin one tied group; NaN where a
    metric is undefined (no defective or no anomaly-free pixel, no region).
    """
    neg_m, pos_m, pro_m, exact, regions = stats_mats
    inexact = ~exact
    neg = np.asarray((neg_m.T @ weights.T).T)
    pos = np.asarray((pos_m.T @ weights.T).T)
    tp, fp = np.cumsum(pos, axis=1), np.cumsum(neg, axis=1)
    n_pos, n_neg = tp[:, -1], fp[:, -1]
    ok = (n_pos > 0) & (n_neg > 0)
    with np.errstate(invalid="ignore", divide="ignore"):
        pn = n_pos * n_neg
        auroc = (neg * (tp - 0.5 * pos)).sum(axis=1) / pn
        auroc_bound = (pos * neg * inexact).sum(axis=1) / (2 * pn)
        prec = np.where(pos > 0, tp / np.maximum(tp + fp, 1e-300), 0.0)
        share = pos / n_pos[:, None]
        ap = (share * prec).sum(axis=1)
        tpa, fpa = tp - pos, fp - neg
        hi = np.where(tp + fpa > 0, tp / np.maximum(tp + fpa, 1e-300), 1.0)
        lo = (tpa + 1) / (tpa + 1 + fp)
        ap_bound = (share * np.maximum(hi - prec, prec - lo) * inexact * (pos > 0)).sum(axis=1)
    del neg, pos, tpa, fpa, hi, lo, prec, share
    pro = np.cumsum(np.asarray((pro_m.T @ weights.T).T), axis=1)
    n_regions = weights @ regions
    with np.errstate(invalid="ignore", divide="ignore"):
        x1 = fp / n_neg[:, None]
        y1 = pro / n_regions[:, None]
    x0 = np.concatenate((np.zeros((x1.shape[0], 1)), x1[:, :-1]), axis=1)
    y0 = np.concatenate((np.zeros((y1.shape[0], 1)), y1[:, :-1]), axis=1)
    inside = x1 <= fpr_limit
    area = np.where(inside, (x1 - x0) * (y1 + y0) / 2, 0.0).sum(axis=1)
    bound = np.where(inside & inexact, (x1 - x0) * (y1 - y0) / 2, 0.0).sum(axis=1)
    k = inside.sum(axis=1)  # x is non-decreasing: the first bin beyond the limit
    rows = np.flatnonzero(k < x1.shape[1])
    if rows.size:
        kk = k[rows]
        a0, b0, a1, b1 = x0[rows, kk], y0[rows, kk], x1[rows, kk], y1[rows, kk]
        part = a0 < fpr_limit
        with np.errstate(invalid="ignore", divide="ignore"):
            y_lim = b0 + (b1 - b0) * (fpr_limit - a0) / (a1 - a0)
        area[rows] += np.where(part, (fpr_limit - a0) * (b0 + y_lim) / 2, 0.0)
        bound[rows] += np.where(part & inexact[kk], (fpr_limit - a0) * (b1 - b0), 0.0)
    pro_ok = ok & (n_regions > 0)
    nan = np.nan
    return {
        "auroc": np.where(ok, auroc, nan), "auroc_bound": np.where(ok, auroc_bound, nan),
        "ap": np.where(ok, ap, nan), "ap_bound": np.where(ok, ap_bound, nan),
        "aupro": np.where(pro_ok, area / fpr_limit, nan), "aupro_bound": np.where(pro_ok, bound / fpr_limit, nan),
    }


def resample_block(n_bins: int) -> int:
    """Resamples per block so that one block's dense (resamples x bins) arrays stay near 8 MB each."""
    return max(1, _RESAMPLE_ELEMENTS // max(1, n_bins))


def percentile_interval(values: np.ndarray, level: float, where: str, metric: str) -> list[float]:
    """[lo, hi] percentiles of the finite values (NaN, warned, when there are none)."""
    finite = values[~np.isnan(values)]
    if finite.size == 0:
        nan = warn_undefined(where, metric, "every resample leaves it undefined")
        return [nan, nan]
    q = [100 * (1 - level) / 2, 100 * (1 + level) / 2]
    return [float(x) for x in np.percentile(finite, q)]


def pixel_bootstrap_ci(stats: PixelStats, n: int = 1000, level: float = 0.95, seed: int = 0,
                       fpr_limit: float = 0.3) -> dict[str, Any]:
    """Percentile intervals of pixel AUROC, AP and AUPRO over resamples of IMAGES (with replacement).

    Returns {metric: [lo, hi], "level", "n", "seed", "n_degenerate", "method", "grid_bits",
    "error_bound": {metric: largest quantization bound over the resamples}}; `error_bound` is 0
    when every grid bin holds one distinct score (then the intervals are exact).
    """
    where = "pixel_bootstrap_ci"
    if int(n) != n or n < 1:
        raise OddspotError(f"{where}: n must be a positive integer, got {n!r}")
    if not 0 < level < 1:
        raise OddspotError(f"{where}: level must be in (0, 1), got {level!r}")
    if not len(stats):
        raise OddspotError(f"{where}: no images with anomaly maps; evaluate a model that writes maps")
    mats = stats.matrices()
    n_images = len(stats)
    values: dict[str, list[np.ndarray]] = {m: [] for m in (*PIXEL_BOOTSTRAP_METRICS,
                                                           *(f"{m}_bound" for m in PIXEL_BOOTSTRAP_METRICS))}
    block = resample_block(mats[0].shape[1])
    blocks = resample_indices(n_images, int(n), seed, block)
    for idx in track(blocks, "pixel bootstrap", total=-(-int(n) // block)):
        got = pixel_metrics_weighted(mats, counts_of(idx, n_images), fpr_limit)
        for k, v in got.items():
            values[k].append(v)
    joined = {k: np.concatenate(v) for k, v in values.items()}
    out: dict[str, Any] = {m: percentile_interval(joined[m], level, where, m) for m in PIXEL_BOOTSTRAP_METRICS}
    bounds = {m: float(np.nanmax(joined[f"{m}_bound"])) if np.isfinite(joined[f"{m}_bound"]).any() else float("nan")
              for m in PIXEL_BOOTSTRAP_METRICS}
    out.update(level=float(level), n=int(n), seed=int(seed), n_degenerate=int(np.isnan(joined["auroc"]).sum()),
               method="percentile, images resampled", grid_bits=GRID_BITS, fpr_limit=float(fpr_limit),
               error_bound=bounds)
    return out
