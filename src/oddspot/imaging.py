"""Image-space operations shared by every task: the one Gaussian blur, image resizing and anomaly maps.

Two backends of the same definitions. `gaussian_blur` works on torch tensors (road and video maps,
on the network's device). The numpy functions, used by the inspect detectors in torch and by the
torch-free runtime alike, express resizing and blurring as small matrices, so an image or a map is
two matrix products and never depends on what else is being processed:

- `resize_image`: uint8 H x W x 3 -> float32 S x S x 3, bilinear with antialiasing, the
  definition of `torch.nn.functional.interpolate(..., antialias=True)` (PIL's filter);
- `anomaly_maps`: patch-score grids -> maps at each image's own size: bilinear upsampling to the
  model's input size, Gaussian blur (edges reflected), bilinear resizing to the image's shape.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

TRUNCATE = 4.0


def gaussian_kernel(sigma: float, truncate: float = TRUNCATE) -> np.ndarray:
    """Normalised 1-D Gaussian of radius `truncate` x sigma (4 sigma, as the PatchCore reference code), float64."""
    radius = max(1, int(math.ceil(truncate * sigma)))
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    k = np.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def gaussian_blur(maps: torch.Tensor, sigma: float, truncate: float = TRUNCATE) -> torch.Tensor:
    """Separable Gaussian blur of N x H x W torch maps; sigma <= 0 returns them as they are.

    Edges are reflected; a map smaller than the kernel's radius is padded by replication instead
    (reflection needs a radius below the map's size). Each map is blurred on its own, by its own
    convolution call: conv2d's arithmetic can change with the batch size, and a map must not
    depend on the maps it is passed with.
    """
    import torch
    import torch.nn.functional as F

    if sigma <= 0:
        return maps
    k = torch.from_numpy(gaussian_kernel(sigma, truncate).astype(np.float32)).to(maps.device, maps.dtype)
    r = k.numel() // 2
    mode = "reflect" if r < min(maps.shape[-2:]) else "replicate"
    out = []
    for i in range(maps.shape[0]):
        x = maps[i:i + 1, None]
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1))
        out.append(F.conv2d(F.pad(x, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1))[:, 0])
    return torch.cat(out) if out else maps


@lru_cache(maxsize=64)
def resize_matrix(n_in: int, n_out: int, antialias: bool = False) -> np.ndarray:
    """n_out x n_in float64 matrix of 1-D bilinear resizing (half-pixel centres, align_corners=False).

    With `antialias` and a reduction, the triangle filter is widened by the scale (PIL's and
    torch's antialiased bilinear); otherwise the classic two-tap interpolation with clamped edges.
    """
    m = np.zeros((n_out, n_in), np.float64)
    scale = n_in / n_out
    if antialias and scale > 1.0:
        centers = scale * (np.arange(n_out) + 0.5)
        lo = np.maximum((centers - scale + 0.5).astype(np.int64), 0)
        hi = np.minimum((centers + scale + 0.5).astype(np.int64), n_in)
        for i in range(n_out):  # n_out rows of at most 2 x scale + 1 taps: setup only, cached
            j = np.arange(lo[i], hi[i])
            w = np.maximum(0.0, 1.0 - np.abs((j - centers[i] + 0.5) / scale))
            m[i, j] = w / w.sum()
        return m
    src = np.maximum(scale * (np.arange(n_out) + 0.5) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    i1 = np.minimum(i0 + 1, n_in - 1)
    frac = src - i0
    rows = np.arange(n_out)
    np.add.at(m, (rows, i0), 1.0 - frac)
    np.add.at(m, (rows, i1), frac)
    return m


@lru_cache(maxsize=64)
def blur_matrix(n: int, sigma: float, truncate: float = TRUNCATE) -> np.ndarray:
    """n x n float64 matrix of the 1-D Gaussian blur of `gaussian_blur` (reflected edges, or
    replicated when the radius reaches the length); the identity for sigma <= 0."""
    if sigma <= 0:
        return np.eye(n)
    k = gaussian_kernel(sigma, truncate)
    r = k.size // 2
    mode = "reflect" if r < n else "edge"
    source = np.pad(np.arange(n), r, mode=mode)  # padded position -> original index
    m = np.zeros((n, n), np.float64)
    rows = np.repeat(np.arange(n), k.size)
    cols = source[np.arange(n)[:, None] + np.arange(k.size)[None, :]].ravel()
    np.add.at(m, (rows, cols), np.tile(k, n))
    return m


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """uint8 H x W x 3 -> float32 size x size x 3 pixels in 0..255 (antialiased bilinear)."""
    h, w = image.shape[:2]
    x = image.astype(np.float32)
    if (h, w) == (size, size):
        return x
    wy = resize_matrix(h, size, True).astype(np.float32)
    wx = resize_matrix(w, size, True).astype(np.float32)
    x = (wy @ x.reshape(h, w * 3)).reshape(size, w, 3)
    return np.ascontiguousarray(np.einsum("pw,swc->spc", wx, x, optimize=True), dtype=np.float32)


@lru_cache(maxsize=64)
def _map_matrix(n_grid: int, size: int, sigma: float, n_out: int) -> np.ndarray:
    """n_out x n_grid float32: upsample to `size`, blur, resize to `n_out`, as one matrix."""
    m = blur_matrix(size, sigma) @ resize_matrix(n_grid, size)
    if n_out != size:
        m = resize_matrix(size, n_out) @ m
    return m.astype(np.float32)


def anomaly_maps(grids: np.ndarray, size: int, sigma: float, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    """N x h x w patch scores -> one float32 map per image at `shapes[i]`.

    Bilinear upsampling to size x size (the model's input), Gaussian blur of `sigma`, bilinear
    resizing to the image's own shape: each map is `My @ grid @ Mx.T`, on its own.
    """
    n, h, w = grids.shape
    grids = np.asarray(grids, dtype=np.float32)
    return [np.ascontiguousarray(_map_matrix(h, size, float(sigma), shape[0]) @ grids[i]
                                 @ _map_matrix(w, size, float(sigma), shape[1]).T) for i, shape in enumerate(shapes)]


@lru_cache(maxsize=64)
def _bilinear_taps(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices i0, i1 and the weight of i1 of `resize_matrix`'s two-tap interpolation."""
    src = np.maximum((n_in / n_out) * (np.arange(n_out) + 0.5) - 0.5, 0.0)
    i0 = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    return i0, np.minimum(i0 + 1, n_in - 1), (src - i0).astype(np.float32)


def resize_maps(maps: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """float ... x H x W maps -> float32 ... x shape[0] x shape[1], bilinear without antialiasing.

    The definition of `torch.nn.functional.interpolate(..., mode="bilinear", align_corners=False)`
    (as `resize_matrix` without `antialias`), computed as two taps per output pixel, so resizing
    full-resolution score or logit maps costs a few passes over them, not a matrix product.
    """
    x = np.ascontiguousarray(maps, dtype=np.float32)
    h, w = x.shape[-2:]
    out_h, out_w = int(shape[0]), int(shape[1])
    if (h, w) == (out_h, out_w):
        return x
    lead = x.shape[:-2]
    x = x.reshape(-1, h, w)
    i0, i1, f = _bilinear_taps(h, out_h)
    rows = x[:, i0, :] * (1.0 - f)[:, None]
    rows += x[:, i1, :] * f[:, None]
    flat = rows.reshape(-1, w)  # np.take along the last axis of a 2-D array keeps the output C-ordered (fast)
    j0, j1, g = _bilinear_taps(w, out_w)
    out = np.take(flat, j0, axis=1)
    out *= 1.0 - g
    out += np.take(flat, j1, axis=1) * g
    return out.reshape(*lead, out_h, out_w)


def blur_maps(maps: np.ndarray, sigma: float, truncate: float = TRUNCATE) -> np.ndarray:
    """`gaussian_blur` in numpy: a separable Gaussian blur of float ... x H x W maps, as float32.

    The same kernel and edges (reflected; replicated when the radius reaches the smaller side),
    as a sum of shifted copies along each axis: about 2 x (2 x radius + 1) passes over the maps,
    at full resolution, each map on its own.
    """
    x = np.asarray(maps, dtype=np.float32)
    if sigma <= 0:
        return x.copy()
    k = gaussian_kernel(sigma, truncate).astype(np.float32)
    r = k.size // 2
    mode = "reflect" if r < min(x.shape[-2:]) else "edge"
    for axis in (-1, -2):
        n = x.shape[axis]
        pad = [(0, 0)] * x.ndim
        pad[axis] = (r, r)
        padded = np.pad(x, pad, mode=mode)
        window = [slice(None)] * x.ndim
        out = np.zeros_like(x)
        for j in range(k.size):
            window[axis] = slice(j, j + n)
            out += k[j] * padded[tuple(window)]
        x = out
    return x


def resize_pixels(image: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """uint8 H x W x 3 -> float32 shape[0] x shape[1] x 3 pixels in 0..255: `resize_image` to any
    height and width (antialiased bilinear, torch's `interpolate(..., antialias=True)`)."""
    h, w = image.shape[:2]
    x = image.astype(np.float32)
    if (h, w) == tuple(shape):
        return x
    wy = resize_matrix(h, int(shape[0]), True).astype(np.float32)
    wx = resize_matrix(w, int(shape[1]), True).astype(np.float32)
    x = (wy @ x.reshape(h, w * 3)).reshape(int(shape[0]), w, 3)
    return np.ascontiguousarray(np.einsum("pw,swc->spc", wx, x, optimize=True), dtype=np.float32)
