"""Training augmentation for segmentation: multi-scale random crop, flip, colour jitter, blur.

Multi-scale crop without padding: one scale s per batch (log-uniform in `scale_range`); the
output crop is `crop_size` or, when the image scaled by s is smaller, the scaled image size, so
the crop size follows the scale and no pixel is ever padded. Each image then takes a random
window of (crop / s) source pixels, resized to the crop (labels by nearest neighbour).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from oddspot.imaging import gaussian_blur
from oddspot.road.config import AugmentConfig


def augment_batch(images: list[np.ndarray], labels: list[np.ndarray], cfg: AugmentConfig, rng: np.random.Generator,
                  device: torch.device | str = "cpu", ignore_index: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (H x W x 3) and labels (H x W) -> float N x 3 x h x w in 0..255 and long N x h x w."""
    lo, hi = cfg.scale_range
    s = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    min_h = min(im.shape[0] for im in images)
    min_w = min(im.shape[1] for im in images)
    out_h = max(8, min(cfg.crop_size[0], int(min_h * s)))
    out_w = max(8, min(cfg.crop_size[1], int(min_w * s)))
    xs, ys = [], []
    for im, lab in zip(images, labels):
        h, w = im.shape[:2]
        wh, ww = min(h, max(1, round(out_h / s))), min(w, max(1, round(out_w / s)))
        top = int(rng.integers(0, h - wh + 1))
        left = int(rng.integers(0, w - ww + 1))
        x = torch.from_numpy(np.array(im[top:top + wh, left:left + ww])).to(device)
        y = torch.from_numpy(np.array(lab[top:top + wh, left:left + ww])).to(device)
        x = x.permute(2, 0, 1)[None].float()
        x = F.interpolate(x, size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=wh > out_h)
        y = F.interpolate(y[None, None].float(), size=(out_h, out_w), mode="nearest")[0, 0]
        if cfg.flip and rng.random() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        xs.append(x[0])
        ys.append(y)
    x = torch.stack(xs)
    y = torch.stack(ys).long()
    x = _colour_jitter(x, cfg, rng)
    if cfg.blur_prob > 0:
        picks = np.flatnonzero(rng.random(len(xs)) < cfg.blur_prob)
        for i in picks:
            sigma = float(rng.uniform(*cfg.blur_sigma))
            x[i] = gaussian_blur(x[i], sigma)
    return x.clamp(0, 255), y


def _colour_jitter(x: torch.Tensor, cfg: AugmentConfig, rng: np.random.Generator) -> torch.Tensor:
    n = x.shape[0]

    def factors(amount: float) -> torch.Tensor:
        return torch.from_numpy(rng.uniform(1 - amount, 1 + amount, n).astype(np.float32)).to(x.device).view(n, 1, 1, 1)

    x = x * factors(cfg.brightness)
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
    x = (x - gray.mean((2, 3), keepdim=True)) * factors(cfg.contrast) + gray.mean((2, 3), keepdim=True)
    gray = (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])[:, None]
    return (x - gray) * factors(cfg.saturation) + gray
