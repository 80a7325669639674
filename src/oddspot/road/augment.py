"""Training augmentation for segmentation: multi-scale random crop, flip, rotation, colour jitter, blur.

Every augmentation has a switch in `AugmentConfig` (all recorded in model.json); with all of them
off and a crop as large as the images, a batch comes out as it went in.

Multi-scale crop, the usual convention (mmsegmentation's resize-then-crop): each image draws its
own scale s, log-uniform in `scale_range` (s = 1 with `scale` off), is resized by s -- s > 1 zooms
in, an object covers s^2 times the pixels -- and a random `crop_size` window of the resized image
is taken (computed as a window of crop / s source pixels resized to the crop; labels by nearest
neighbour). The crops of one batch share one size: `crop_size`, or smaller on a side where every
image of the batch, resized by its own s, is smaller. An image smaller than that size is placed at
a random offset and padded: pixels with `PAD_PIXEL` (the network's zero input), labels with the
ignore index, so padding never enters the loss.

Then per image: horizontal flip (p = 0.5); rotation by a uniform angle in +-`rotation_degrees`
about the crop's centre (pixels bilinear, labels nearest, corners from outside the crop padded as
above); brightness / contrast / saturation factors uniform in 1 +- the amounts; Gaussian blur with
probability `blur_prob`, sigma uniform in `blur_sigma`.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from oddspot.imaging import gaussian_blur
from oddspot.road.config import AugmentConfig

PAD_PIXEL = 127.0  # scaled to 0 by the network's input scaling ((x - 127) / 128)


def draw_scales(n: int, cfg: AugmentConfig, rng: np.random.Generator) -> np.ndarray:
    """One scale per image: log-uniform in `cfg.scale_range`, or all 1 with `cfg.scale` off."""
    if not cfg.scale:
        return np.ones(n)
    lo, hi = cfg.scale_range
    return np.exp(rng.uniform(math.log(lo), math.log(hi), n))


def _scaled_crop(im: np.ndarray, lab: np.ndarray, s: float, out: tuple[int, int], rng: np.random.Generator,
                 device: torch.device | str, ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """One image resized by `s` and cropped to `out` (padded where the resized image is smaller):
    float 3 x h x w pixels and float h x w labels."""
    h, w = im.shape[:2]
    oh, ow = min(out[0], max(1, round(h * s))), min(out[1], max(1, round(w * s)))
    wh, ww = min(h, max(1, round(oh / s))), min(w, max(1, round(ow / s)))
    top, left = int(rng.integers(0, h - wh + 1)), int(rng.integers(0, w - ww + 1))
    x = torch.from_numpy(np.array(im[top:top + wh, left:left + ww])).to(device).permute(2, 0, 1)[None].float()
    y = torch.from_numpy(np.array(lab[top:top + wh, left:left + ww])).to(device)[None, None].float()
    if (wh, ww) != (oh, ow):
        x = F.interpolate(x, size=(oh, ow), mode="bilinear", align_corners=False, antialias=wh > oh or ww > ow)
        y = F.interpolate(y, size=(oh, ow), mode="nearest")
    if (oh, ow) == tuple(out):
        return x[0], y[0, 0]
    dy, dx = int(rng.integers(0, out[0] - oh + 1)), int(rng.integers(0, out[1] - ow + 1))
    canvas = torch.full((3, *out), PAD_PIXEL, device=x.device)
    labels = torch.full(tuple(out), float(ignore_index), device=x.device)
    canvas[:, dy:dy + oh, dx:dx + ow] = x[0]
    labels[dy:dy + oh, dx:dx + ow] = y[0, 0]
    return canvas, labels


def rotate_batch(x: torch.Tensor, y: torch.Tensor, degrees: np.ndarray,
                 ignore_index: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate each image (N x 3 x H x W, bilinear) and its labels (N x H x W, nearest) by its angle
    (counter-clockwise, degrees) about the centre; what comes from outside is `PAD_PIXEL` / ignored."""
    n, _, h, w = x.shape
    a = torch.from_numpy(np.radians(np.asarray(degrees, np.float64))).to(x.device, torch.float32)
    cos, sin = torch.cos(a), torch.sin(a)
    zero = torch.zeros_like(a)
    # a rigid rotation in pixels, written in affine_grid's normalized coordinates of an H x W image
    theta = torch.stack([torch.stack([cos, -sin * h / w, zero], 1), torch.stack([sin * w / h, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, [n, 1, h, w], align_corners=False)
    xr = F.grid_sample(x - PAD_PIXEL, grid, mode="bilinear", padding_mode="zeros", align_corners=False) + PAD_PIXEL
    shifted = F.grid_sample((y.float() + 1)[:, None], grid, mode="nearest", padding_mode="zeros", align_corners=False)[:, 0]
    yr = torch.where(shifted == 0, torch.full_like(shifted, float(ignore_index)), shifted - 1)
    return xr, yr


def augment_batch(images: list[np.ndarray], labels: list[np.ndarray], cfg: AugmentConfig, rng: np.random.Generator,
                  device: torch.device | str = "cpu", ignore_index: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """uint8 images (H x W x 3) and labels (H x W) -> float N x 3 x h x w in 0..255 and long N x h x w."""
    scales = draw_scales(len(images), cfg, rng)
    out_h = max(8, min(cfg.crop_size[0], max(round(im.shape[0] * s) for im, s in zip(images, scales))))
    out_w = max(8, min(cfg.crop_size[1], max(round(im.shape[1] * s) for im, s in zip(images, scales))))
    xs, ys = [], []
    for im, lab, s in zip(images, labels, scales):
        x, y = _scaled_crop(im, lab, float(s), (out_h, out_w), rng, device, ignore_index)
        if cfg.flip and rng.random() < 0.5:
            x, y = x.flip(-1), y.flip(-1)
        xs.append(x)
        ys.append(y)
    x = torch.stack(xs)
    y = torch.stack(ys)
    if cfg.rotate and cfg.rotation_degrees > 0:
        x, y = rotate_batch(x, y, rng.uniform(-cfg.rotation_degrees, cfg.rotation_degrees, len(xs)), ignore_index)
    y = y.long()
    if cfg.colour:
        x = _colour_jitter(x, cfg, rng)
    if cfg.blur and cfg.blur_prob > 0:
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
