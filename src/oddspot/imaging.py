"""Image-space operations shared by every task: the one Gaussian blur, and map resizing."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

TRUNCATE = 4.0


def gaussian_kernel1d(sigma: float, truncate: float = TRUNCATE) -> torch.Tensor:
    """Normalised 1-D Gaussian of radius `truncate` x sigma (4 sigma, as the PatchCore reference code)."""
    radius = max(1, int(math.ceil(truncate * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def gaussian_blur(maps: torch.Tensor, sigma: float, truncate: float = TRUNCATE) -> torch.Tensor:
    """Separable Gaussian blur of N x H x W maps; sigma <= 0 returns them as they are.

    Edges are reflected; a map smaller than the kernel's radius is padded by replication instead
    (reflection needs a radius below the map's size). Each map is blurred on its own, by its own
    convolution call: conv2d's arithmetic can change with the batch size, and a map must not
    depend on the maps it is passed with.
    """
    if sigma <= 0:
        return maps
    k = gaussian_kernel1d(sigma, truncate).to(maps.device, maps.dtype)
    r = k.numel() // 2
    mode = "reflect" if r < min(maps.shape[-2:]) else "replicate"
    out = []
    for i in range(maps.shape[0]):
        x = maps[i:i + 1, None]
        x = F.conv2d(F.pad(x, (r, r, 0, 0), mode=mode), k.view(1, 1, 1, -1))
        out.append(F.conv2d(F.pad(x, (0, 0, r, r), mode=mode), k.view(1, 1, -1, 1))[:, 0])
    return torch.cat(out) if out else maps


def upsample_and_blur(grid: torch.Tensor, size: tuple[int, int], sigma: float) -> torch.Tensor:
    """N x h x w patch scores -> N x H x W map: bilinear upsampling, then Gaussian blur."""
    up = F.interpolate(grid[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
    return gaussian_blur(up, sigma)


def resize_map(anomaly_map: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Resize one H x W float map to `shape` (bilinear), returning float32."""
    if anomaly_map.shape == tuple(shape):
        return anomaly_map.astype(np.float32, copy=False)
    t = torch.from_numpy(np.ascontiguousarray(anomaly_map, dtype=np.float32))[None, None]
    return F.interpolate(t, size=tuple(shape), mode="bilinear", align_corners=False)[0, 0].numpy()
