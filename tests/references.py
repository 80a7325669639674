"""Plain reference implementations of oddspot's detector and decision maths, for tests only.

Each function is written from the definition it names (the paper's equation or the documented
convention), in float64 with explicit loops where that is clearest, and never calls oddspot: the
tests in `test_references_*.py` compare the implementation with these on small random inputs,
and show with a deliberately perturbed implementation that each comparison can fail.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from fractions import Fraction

import numpy as np

# --- inspect: PatchCore ----------------------------------------------------------------------


def distances(query: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """Euclidean distance from one query vector to every row of the memory bank (float64)."""
    diff = np.asarray(bank, np.float64) - np.asarray(query, np.float64)[None, :]
    return np.sqrt(np.sum(diff * diff, axis=1))


def knn_mean(queries: np.ndarray, bank: np.ndarray, k: int) -> np.ndarray:
    """Patch score: the mean distance of each query to its k nearest memory entries."""
    return np.array([np.sort(distances(q, bank))[:k].mean() for q in queries])


def topk_mean(patch_scores: np.ndarray, k: int) -> float:
    """Image score: the mean of the k largest patch scores (all of them when there are fewer)."""
    ordered = sorted((float(s) for s in patch_scores), reverse=True)
    top = ordered[:k]
    return sum(top) / len(top)


def patchcore_reweighted(patch_scores: np.ndarray, queries: np.ndarray, bank: np.ndarray, b: int) -> float:
    """PatchCore eq. 7 (Roth et al., 2022).

    m_test* is the patch with the largest score s*, m* its nearest memory entry and N_b(m*) the b
    memory entries nearest to m* (m* itself among them):
        s = (1 - exp||m_test* - m*|| / sum_{m in N_b(m*)} exp||m_test* - m||) * s*
    """
    i = int(np.argmax(patch_scores))
    s_star = float(patch_scores[i])
    m_test = queries[i]
    to_test = distances(m_test, bank)
    m_star = bank[int(np.argmin(to_test))]
    neighbourhood = np.argsort(distances(m_star, bank), kind="stable")[:b]
    numerator = math.exp(float(to_test.min()))
    denominator = sum(math.exp(float(to_test[j])) for j in neighbourhood)
    return (1.0 - numerator / denominator) * s_star


def bilinear_upsample(grid: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bilinear resize of an h x w grid to `size`, sampling at pixel centres (align_corners=False).

    Output pixel i reads the source at (i + 0.5) * h / H - 0.5, clamped to the grid.
    """
    h, w = grid.shape
    out = np.empty(size, np.float64)

    def source(i: int, n_in: int, n_out: int) -> tuple[int, int, float]:
        x = max((i + 0.5) * n_in / n_out - 0.5, 0.0)
        lo = min(int(math.floor(x)), n_in - 1)
        return lo, min(lo + 1, n_in - 1), x - lo

    for r in range(size[0]):
        r0, r1, fr = source(r, h, size[0])
        for c in range(size[1]):
            c0, c1, fc = source(c, w, size[1])
            top = (1 - fc) * grid[r0, c0] + fc * grid[r0, c1]
            bottom = (1 - fc) * grid[r1, c0] + fc * grid[r1, c1]
            out[r, c] = (1 - fr) * top + fr * bottom
    return out


# --- inspect: PaDiM --------------------------------------------------------------------------


def padim_gaussians(features: np.ndarray, eps: float) -> tuple[np.ndarray, np.ndarray]:
    """PaDiM (Defard et al., 2020): per position p, the mean and the unbiased covariance + eps I.

    `features` is N x P x d (N training images, P positions); returns P x d means, P x d x d covariances.
    """
    x = np.asarray(features, np.float64)
    n, positions, d = x.shape
    means = np.zeros((positions, d))
    covs = np.zeros((positions, d, d))
    for p in range(positions):
        mu = sum(x[i, p] for i in range(n)) / n
        cov = sum(np.outer(x[i, p] - mu, x[i, p] - mu) for i in range(n)) / (n - 1)
        means[p] = mu
        covs[p] = cov + eps * np.eye(d)
    return means, covs


def mahalanobis_grid(features: np.ndarray, means: np.ndarray, covs: np.ndarray) -> np.ndarray:
    """Per position p, sqrt((x_p - mu_p)^T Sigma_p^-1 (x_p - mu_p)) for one image's P x d features."""
    out = np.zeros(len(features))
    for p, x in enumerate(np.asarray(features, np.float64)):
        diff = x - means[p]
        out[p] = math.sqrt(float(diff @ np.linalg.solve(covs[p], diff)))
    return out


# --- decisions (inspect calibration) ---------------------------------------------------------


def f1_max_threshold(scores: Sequence[float], labels: Sequence[bool]) -> tuple[float, float]:
    """The threshold t maximizing F1 of "anomalous iff score >= t", over the observed scores.

    F1 = 2 TP / (2 TP + FP + FN), compared exactly; among thresholds reaching the maximum the
    lowest is returned (oddspot's documented tie rule). Thresholds are visited from the highest
    score down, counting the samples at or above each. Returns (threshold, F1).
    """
    pairs = sorted(((float(s), bool(y)) for s, y in zip(scores, labels)), reverse=True)
    positives = sum(y for _, y in pairs)
    best, best_t, tp, fp, i = Fraction(-1), math.nan, 0, 0, 0
    while i < len(pairs):
        t = pairs[i][0]
        while i < len(pairs) and pairs[i][0] == t:  # every sample scored t is predicted anomalous at t
            tp, fp, i = tp + pairs[i][1], fp + (not pairs[i][1]), i + 1
        f1 = Fraction(2 * tp, 2 * tp + fp + (positives - tp))
        if f1 >= best:  # ">=": a lower threshold reaching the same F1 wins
            best, best_t = f1, t
    return best_t, float(best)


def quantile(values: Sequence[float], q: float) -> float:
    """The q-quantile with linear interpolation between order statistics (Hyndman & Fan type 7)."""
    x = sorted(float(v) for v in values)
    h = (len(x) - 1) * q
    lo = int(math.floor(h))
    hi = min(lo + 1, len(x) - 1)
    return x[lo] + (h - lo) * (x[hi] - x[lo])


def scale_ends(normal: Sequence[float], anomalous: Sequence[float], threshold: float) -> tuple[float, float, float]:
    """(low, threshold, high) of the [0, 1] normalization, as oddspot documents them.

    low: the lowest normal validation score (or the threshold, when lower); high: the highest
    anomalous score (the highest normal score or the threshold when there are none); when high
    does not exceed the threshold it becomes threshold + max(threshold - low, 1e-6).
    """
    low = min(min(normal), threshold)
    high = max(anomalous) if len(anomalous) else max(max(normal), threshold)
    if high <= threshold:
        high = threshold + max(threshold - low, 1e-6)
    return low, threshold, high


def normalize(score: float, low: float, threshold: float, high: float) -> float:
    """Piecewise-linear map low -> 0, threshold -> 0.5, high -> 1, clipped to [0, 1]."""
    if score < threshold:
        v = 0.0 if threshold == low else 0.5 * (score - low) / (threshold - low)
    else:
        v = 1.0 if high == threshold else 0.5 + 0.5 * (score - threshold) / (high - threshold)
    return min(max(v, 0.0), 1.0)


# --- road: pixel scores from logits ----------------------------------------------------------


def _softmax(logits: Sequence[float]) -> list[float]:
    top = max(logits)
    e = [math.exp(v - top) for v in logits]
    total = sum(e)
    return [v / total for v in e]


def per_pixel(fn, logits: np.ndarray) -> np.ndarray:
    """Apply `fn(list of K logits) -> float` to every pixel of N x K x H x W logits."""
    n, _, h, w = logits.shape
    out = np.zeros((n, h, w))
    for i in range(n):
        for r in range(h):
            for c in range(w):
                out[i, r, c] = fn([float(v) for v in logits[i, :, r, c]])
    return out


def msp(pixel: Sequence[float]) -> float:
    """1 - the largest softmax probability (Hendrycks & Gimpel, 2017)."""
    return 1.0 - max(_softmax(pixel))


def max_logit(pixel: Sequence[float]) -> float:
    """- the largest logit (Hendrycks et al., 2022)."""
    return -max(pixel)


def energy(pixel: Sequence[float], temperature: float) -> float:
    """Free energy -T log sum_c exp(l_c / T) (Liu et al., 2020)."""
    top = max(pixel) / temperature
    return -temperature * (top + math.log(sum(math.exp(v / temperature - top) for v in pixel)))


def entropy(pixel: Sequence[float]) -> float:
    """Entropy of the softmax, in nats: - sum_c p_c log p_c."""
    return -sum(p * math.log(p) for p in _softmax(pixel) if p > 0)


def sml_statistics(logits: np.ndarray, valid: np.ndarray | None, min_pixels: int) -> tuple[list[float], list[float]]:
    """SML (Jung et al., 2021): per predicted class c, the mean and (population) std of the max logit.

    Over the fitting pixels (N x K x H x W logits, `valid` N x H x W or None) whose argmax is c.
    A class predicted on fewer than `min_pixels` pixels takes the statistics of all pixels.
    """
    n, k, h, w = logits.shape
    by_class: list[list[float]] = [[] for _ in range(k)]
    for i in range(n):
        for r in range(h):
            for c in range(w):
                if valid is not None and not valid[i, r, c]:
                    continue
                pixel = [float(v) for v in logits[i, :, r, c]]
                by_class[pixel.index(max(pixel))].append(max(pixel))

    def stats(values: list[float]) -> tuple[float, float]:
        mu = sum(values) / len(values)
        return mu, math.sqrt(sum((v - mu) ** 2 for v in values) / len(values))

    everything = stats([v for values in by_class for v in values])
    pairs = [stats(v) if len(v) >= min_pixels else everything for v in by_class]
    return [m for m, _ in pairs], [s for _, s in pairs]


def sml(pixel: Sequence[float], means: Sequence[float], stds: Sequence[float]) -> float:
    """- (max logit - mean_c) / std_c, c the predicted class (larger = more anomalous)."""
    c = list(pixel).index(max(pixel))
    return -(max(pixel) - means[c]) / stds[c]


# --- video: test-time augmentation and frame-score post-processing ----------------------------


def view_source(view: str, r: int, c: int, h: int, w: int) -> tuple[int, int]:
    """Where pixel (r, c) of a view reads the frame: identity, hflip (mirror left-right), vflip
    (mirror top-bottom) or rot180 (a half turn)."""
    return {
        "identity": (r, c),
        "hflip": (r, w - 1 - c),
        "vflip": (h - 1 - r, c),
        "rot180": (h - 1 - r, w - 1 - c),
    }[view]


def apply_view(image: np.ndarray, view: str) -> np.ndarray:
    """The view of an H x W (x ...) array, pixel by pixel."""
    h, w = image.shape[:2]
    out = np.empty_like(image)
    for r in range(h):
        for c in range(w):
            out[r, c] = image[view_source(view, r, c, h, w)]
    return out


def unview(seen: np.ndarray, view: str) -> np.ndarray:
    """A map computed on the view, put back where each pixel came from in the frame."""
    h, w = seen.shape[:2]
    out = np.empty_like(seen)
    for r in range(h):
        for c in range(w):
            out[view_source(view, r, c, h, w)] = seen[r, c]
    return out


def gaussian_smooth(scores: Sequence[float], sigma: float, truncate: float = 4.0) -> np.ndarray:
    """Gaussian smoothing along time: weights exp(-j^2 / 2 sigma^2) for |j| <= int(truncate sigma + 0.5),
    normalized to sum 1; frames beyond either end repeat the end frame. sigma 0: unchanged."""
    s = [float(v) for v in scores]
    if sigma == 0 or len(s) < 2:
        return np.array(s)
    radius = int(truncate * sigma + 0.5)
    weights = [math.exp(-(j * j) / (2 * sigma * sigma)) for j in range(-radius, radius + 1)]
    total = sum(weights)
    n = len(s)
    return np.array([
        sum(wt * s[min(max(t + j, 0), n - 1)] for wt, j in zip(weights, range(-radius, radius + 1))) / total
        for t in range(n)
    ])


def train_standardization(train_videos: Sequence[Sequence[float]], sigma: float) -> tuple[float, float]:
    """Mean and population std of the smoothed training scores, all videos pooled (std 0 -> 1)."""
    pooled = [v for video in train_videos if len(video) for v in gaussian_smooth(video, sigma)]
    mu = sum(pooled) / len(pooled)
    std = math.sqrt(sum((v - mu) ** 2 for v in pooled) / len(pooled))
    return mu, std or 1.0
