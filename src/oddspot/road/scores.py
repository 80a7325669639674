"""Pixel anomaly scores from a segmentation network's logits and features; larger = more anomalous.

Pure functions of logits (class axis `dim`, default 1 for N x K x H x W):
  msp        1 - max softmax probability
  max_logit  - max logit
  energy     - T * logsumexp(logits / T)   (the free energy)
  entropy    - sum p log p of the softmax
They accept numpy arrays or torch tensors and return the same kind.

Fitted scores are small objects with `partial_fit` / `finalize` (streamed, bounded memory),
`fitted(...)` (rebuilt from what the road model stores in its run folder) and `__call__`:
  StandardizedMaxLogit  per-predicted-class mean/std of the max logit (fitted on validation)
  Mahalanobis           class-conditional Gaussians with one tied covariance on a decoder feature
                        map, fitted on training pixels subsampled per class with a seed
  Fusion                weighted sum of z-normalised, Gaussian-smoothed energy and feature distance;
                        normalisation and weights fitted on validation data only
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from oddspot.errors import OddspotError
from oddspot.imaging import gaussian_blur

ArrayLike = np.ndarray | torch.Tensor


def _pure(fn: Callable[..., torch.Tensor]) -> Callable[..., ArrayLike]:
    """Let a torch score function take and return numpy arrays too."""

    def wrapper(logits: ArrayLike, *args: Any, **kwargs: Any) -> ArrayLike:
        if isinstance(logits, torch.Tensor):
            t = logits if logits.is_floating_point() else logits.float()
            return fn(t, *args, **kwargs)
        arr = np.asarray(logits)
        t = torch.from_numpy(arr if arr.dtype in (np.float32, np.float64) else arr.astype(np.float32))
        return fn(t, *args, **kwargs).numpy()

    wrapper.__name__ = fn.__name__
    wrapper.__doc__ = fn.__doc__
    return wrapper


@_pure
def msp(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """1 - maximum softmax probability."""
    return 1.0 - torch.softmax(logits, dim=dim).amax(dim=dim)


@_pure
def max_logit(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Negative maximum logit."""
    return -logits.amax(dim=dim)


@_pure
def energy(logits: torch.Tensor, temperature: float = 1.0, dim: int = 1) -> torch.Tensor:
    """Free energy -T logsumexp(logits / T)."""
    if temperature <= 0:
        raise OddspotError(f"energy temperature {temperature} must be positive")
    return -temperature * torch.logsumexp(logits / temperature, dim=dim)


@_pure
def entropy(logits: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Entropy of the softmax distribution (nats)."""
    logp = torch.log_softmax(logits, dim=dim)
    return -(logp.exp() * logp).sum(dim=dim)


class StandardizedMaxLogit:
    """SML: -(max logit - mean[c]) / std[c] with c the predicted class, fitted on validation outputs.

    Classes predicted on fewer than `min_pixels` fitting pixels use the statistics over all classes
    (listed in `fallback_classes`), so a class rare on validation does not get a degenerate std.
    """

    def __init__(self, num_classes: int, min_pixels: int = 100) -> None:
        self.num_classes = num_classes
        self.min_pixels = min_pixels
        self.reset()

    def reset(self) -> None:
        self._n = torch.zeros(self.num_classes, dtype=torch.float64)
        self._s = torch.zeros(self.num_classes, dtype=torch.float64)
        self._ss = torch.zeros(self.num_classes, dtype=torch.float64)
        self.mean: torch.Tensor | None = None
        self.std: torch.Tensor | None = None
        self.counts: list[int] = []
        self.fallback_classes: list[int] = []

    def partial_fit(self, logits: torch.Tensor, valid: torch.Tensor | None = None) -> None:
        """Accumulate max-logit statistics by predicted class over (valid) pixels of N x K x H x W logits."""
        if logits.shape[1] != self.num_classes:
            raise OddspotError(f"SML: logits have {logits.shape[1]} classes, the scorer {self.num_classes}")
        ml, pred = logits.detach().max(dim=1)
        ml, pred = ml.double().flatten().cpu(), pred.flatten().cpu()
        if valid is not None:
            keep = valid.flatten().cpu()
            ml, pred = ml[keep], pred[keep]
        self._n += torch.bincount(pred, minlength=self.num_classes).double()
        self._s.index_add_(0, pred, ml)
        self._ss.index_add_(0, pred, ml * ml)

    def finalize(self) -> StandardizedMaxLogit:
        total = float(self._n.sum())
        if total < 2:
            raise OddspotError("SML: no fitting pixels; fit on validation outputs before scoring")
        g_mean = float(self._s.sum()) / total
        g_var = max(float(self._ss.sum()) / total - g_mean**2, 1e-12)
        n = self._n.clamp(min=1)
        mean = self._s / n
        var = (self._ss / n - mean**2).clamp(min=1e-12)
        rare = self._n < self.min_pixels
        mean[rare] = g_mean
        var[rare] = g_var
        self.mean, self.std = mean.float(), var.sqrt().float()
        self.counts = [int(v) for v in self._n]
        self.fallback_classes = [int(i) for i in torch.nonzero(rare).flatten()]
        return self

    def __call__(self, logits: torch.Tensor) -> torch.Tensor:
        if self.mean is None or self.std is None:
            raise OddspotError("SML: not fitted; call partial_fit(...) and finalize() on validation outputs first")
        if logits.shape[1] != self.num_classes:
            raise OddspotError(f"SML: logits have {logits.shape[1]} classes, the fitted scorer {self.num_classes}")
        ml, pred = logits.max(dim=1)
        mean, std = self.mean.to(logits.device), self.std.to(logits.device)
        return -(ml - mean[pred]) / std[pred]

    @classmethod
    def fitted(cls, mean: torch.Tensor, std: torch.Tensor, min_pixels: int, counts: list[int],
               fallback_classes: list[int]) -> StandardizedMaxLogit:
        """An SML with stored statistics (per-class float32 `mean` and `std`), as `finalize` leaves it."""
        sml = cls(int(mean.shape[0]), min_pixels)
        sml.mean, sml.std = mean.float(), std.float()
        sml.counts, sml.fallback_classes = list(counts), list(fallback_classes)
        return sml


class Mahalanobis:
    """min over classes c of the Mahalanobis distance to the class mean, with one tied covariance.

    Fitting streams images: from each image at most `pixels_per_class` pixels of every class are
    drawn at random (seeded), and only sums are kept (class sums, one D x D scatter), so memory is
    independent of the data size and rare classes are not drowned by the road. The covariance is
    regularised by `shrinkage` x (mean variance) on the diagonal.
    """

    def __init__(self, num_classes: int, pixels_per_class: int = 64, seed: int = 0, shrinkage: float = 0.01,
                 ignore_index: int = 255) -> None:
        self.num_classes = num_classes
        self.pixels_per_class = pixels_per_class
        self.seed = seed
        self.shrinkage = shrinkage
        self.ignore_index = ignore_index
        self.reset()

    def reset(self) -> None:
        self._rng = np.random.default_rng(self.seed)
        self._n = np.zeros(self.num_classes, np.int64)
        self._sum: np.ndarray | None = None
        self._scatter: np.ndarray | None = None
        self.means: torch.Tensor | None = None
        self.precision: torch.Tensor | None = None
        self.counts: list[int] = []

    def partial_fit(self, features: torch.Tensor, labels: torch.Tensor) -> None:
        """Add pixels of N x D x h x w features; `labels` N x H x W are resampled (nearest) to h x w."""
        feats = features.detach().float()
        n, d, h, w = feats.shape
        lab = labels.to(feats.device)
        if lab.shape[-2:] != (h, w):
            lab = F.interpolate(lab[:, None].float(), size=(h, w), mode="nearest")[:, 0].long()
        lab = lab.long().flatten(1).cpu().numpy()
        x = feats.permute(0, 2, 3, 1).reshape(n, h * w, d).cpu().numpy().astype(np.float64)
        if self._sum is None:
            self._sum = np.zeros((self.num_classes, d))
            self._scatter = np.zeros((d, d))
        for i in range(n):
            picks = []
            for c in np.unique(lab[i]):
                if c == self.ignore_index or c < 0 or c >= self.num_classes:
                    continue
                idx = np.flatnonzero(lab[i] == c)
                if len(idx) > self.pixels_per_class:
                    idx = self._rng.choice(idx, self.pixels_per_class, replace=False)
                picks.append((int(c), idx))
            for c, idx in picks:
                xs = x[i, idx]
                self._sum[c] += xs.sum(0)
                self._n[c] += len(idx)
                self._scatter += xs.T @ xs

    def finalize(self) -> Mahalanobis:
        if self._sum is None or self._n.sum() < 2:
            raise OddspotError("Mahalanobis: no fitting pixels; fit on training features before scoring")
        present = self._n > 0
        means = np.where(present[:, None], self._sum / np.maximum(self._n, 1)[:, None], 0.0)
        total = self._n.sum()
        cov = (self._scatter - (means.T * self._n) @ means) / total
        d = cov.shape[0]
        cov += np.eye(d) * self.shrinkage * max(np.trace(cov) / d, 1e-12)
        prec = np.linalg.inv(cov)
        prec = (prec + prec.T) / 2
        self.means = torch.from_numpy(means[present]).float()
        self.precision = torch.from_numpy(prec).float()
        self.counts = [int(v) for v in self._n]
        return self

    def __call__(self, features: torch.Tensor, size: tuple[int, int] | None = None) -> torch.Tensor:
        """N x D x h x w features -> N x h x w distances (bilinearly resized to `size` when given)."""
        if self.means is None or self.precision is None:
            raise OddspotError("Mahalanobis: not fitted; fit on training features first")
        n, d, h, w = features.shape
        if d != self.precision.shape[0]:
            raise OddspotError(f"Mahalanobis: features have {d} channels, the fitted scorer {self.precision.shape[0]}")
        x = features.float().permute(0, 2, 3, 1).reshape(-1, d)
        prec, mu = self.precision.to(x.device), self.means.to(x.device)
        xp = x @ prec
        d2 = (xp * x).sum(1, keepdim=True) - 2 * xp @ mu.T + ((mu @ prec) * mu).sum(1)[None]
        dist = d2.amin(1).clamp(min=0).sqrt().view(n, 1, h, w)
        if size is not None and (h, w) != tuple(size):
            dist = F.interpolate(dist, size=size, mode="bilinear", align_corners=False)
        return dist[:, 0]

    @classmethod
    def fitted(cls, num_classes: int, means: torch.Tensor, precision: torch.Tensor, counts: list[int],
               pixels_per_class: int = 64, seed: int = 0, shrinkage: float = 0.01,
               ignore_index: int = 255) -> Mahalanobis:
        """A Mahalanobis score with stored class means (classes with pixels only) and tied precision."""
        m = cls(num_classes, pixels_per_class, seed, shrinkage, ignore_index)
        m.means, m.precision, m.counts = means.float(), precision.float(), list(counts)
        return m


class Fusion:
    """sum_i w_i (G_sigma * s_i - mean_i) / std_i over components s = (energy at temperature T, feature distance).

    `fit` takes component values of validation pixels (already smoothed with `component_maps`) and,
    when some are anomalous, learns the weights by logistic regression; without anomalous pixels
    the weights stay equal. Means and stds come from the normal validation pixels.
    """

    COMPONENTS = ("energy", "mahalanobis")

    def __init__(self, temperature: float = 1.0, sigma: float = 1.0) -> None:
        self.temperature = temperature
        self.sigma = sigma
        self.mean: list[float] | None = None
        self.std: list[float] | None = None
        self.weights: list[float] = [1.0, 1.0]
        self.weight_source = "equal (no anomalous validation pixels)"
        self.n_fit = 0

    def component_maps(self, logits: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
        """N x 2 x H x W smoothed components from N x K x H x W logits and an N x H x W feature distance."""
        e = gaussian_blur(energy(logits, self.temperature), self.sigma)
        m = gaussian_blur(distance, self.sigma)
        return torch.stack([e, m], 1)

    def fit(self, components: np.ndarray, anomalous: np.ndarray | None = None) -> Fusion:
        """Fit from M x 2 validation component values and optional M anomalous flags."""
        comps = np.asarray(components, np.float64)
        pos = np.zeros(len(comps), bool) if anomalous is None else np.asarray(anomalous, bool)
        neg = comps[~pos]
        if len(neg) < 2:
            raise OddspotError("Fusion: fewer than 2 normal validation pixels; cannot normalise the components")
        self.mean = neg.mean(0).tolist()
        self.std = np.maximum(neg.std(0), 1e-12).tolist()
        self.n_fit = int(len(comps))
        if pos.any():
            z = (comps - np.asarray(self.mean)) / np.asarray(self.std)
            self.weights = _logistic_weights(z, pos).tolist()
            self.weight_source = "logistic regression on validation pixels"
        return self

    def combine(self, components: torch.Tensor) -> torch.Tensor:
        """N x 2 x H x W smoothed components -> N x H x W fused score."""
        if self.mean is None or self.std is None:
            raise OddspotError("Fusion: not fitted; fit on validation outputs first")
        dev, dt = components.device, components.dtype
        mean = torch.tensor(self.mean, device=dev, dtype=dt).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=dev, dtype=dt).view(1, -1, 1, 1)
        w = torch.tensor(self.weights, device=dev, dtype=dt).view(1, -1, 1, 1)
        return (((components - mean) / std) * w).sum(1)

    def __call__(self, logits: torch.Tensor, distance: torch.Tensor) -> torch.Tensor:
        return self.combine(self.component_maps(logits, distance))

    @classmethod
    def fitted(cls, temperature: float, sigma: float, mean: list[float], std: list[float], weights: list[float],
               weight_source: str, n_fit: int) -> Fusion:
        """A fusion with stored normalisation and weights (one value per component)."""
        f = cls(temperature, sigma)
        f.mean, f.std, f.weights = [float(v) for v in mean], [float(v) for v in std], [float(v) for v in weights]
        f.weight_source, f.n_fit = weight_source, int(n_fit)
        return f


def _logistic_weights(z: np.ndarray, y: np.ndarray, l2: float = 1e-3, iters: int = 50) -> np.ndarray:
    """Coefficients (without the intercept) of an L2-regularised logistic regression, by Newton steps."""
    x = np.concatenate([z, np.ones((len(z), 1))], 1)
    beta = np.zeros(x.shape[1])
    t = y.astype(np.float64)
    for _ in range(iters):
        p = 1.0 / (1.0 + np.exp(-np.clip(x @ beta, -30, 30)))
        grad = x.T @ (p - t) / len(x) + l2 * np.r_[beta[:-1], 0.0]
        hess = (x * (p * (1 - p))[:, None]).T @ x / len(x) + l2 * np.eye(x.shape[1])
        step = np.linalg.solve(hess, grad)
        beta -= step
        if np.abs(step).max() < 1e-8:
            break
    return beta[:-1]
