"""Seeded synthetic defects: turn a normal image into an anomalous one plus its exact mask.

Shapes come from thresholded Perlin noise (irregular blobs, like stains and scratch clusters);
fills are a foreign texture, a magnified cut-and-paste of the image itself (same material at the
wrong scale: a plain shifted copy of a stochastic texture is not an anomaly at all), or a local
colour / intensity change. Used by the demo, the tests, and users with no defective validation images.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

KINDS = ("texture", "cutpaste", "color")


def perlin_noise(shape: tuple[int, int], cells: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """2-D gradient (Perlin) noise on a grid of `cells`, vectorised; values roughly in [-1, 1]."""
    h, w = shape
    cy, cx = cells
    angles = rng.uniform(0, 2 * np.pi, (cy + 1, cx + 1))
    grads = np.stack([np.cos(angles), np.sin(angles)], axis=-1)
    y = np.linspace(0, cy, h, endpoint=False)
    x = np.linspace(0, cx, w, endpoint=False)
    yy, xx = np.meshgrid(y, x, indexing="ij")
    y0, x0 = yy.astype(int), xx.astype(int)
    fy, fx = yy - y0, xx - x0

    def dot(oy: int, ox: int) -> np.ndarray:
        g = grads[y0 + oy, x0 + ox]
        return g[..., 0] * (fy - oy) + g[..., 1] * (fx - ox)

    fade_y = fy * fy * fy * (fy * (fy * 6 - 15) + 10)
    fade_x = fx * fx * fx * (fx * (fx * 6 - 15) + 10)
    top = dot(0, 0) * (1 - fade_x) + dot(0, 1) * fade_x
    bottom = dot(1, 0) * (1 - fade_x) + dot(1, 1) * fade_x
    return np.sqrt(2) * (top * (1 - fade_y) + bottom * fade_y)


def blob_mask(shape: tuple[int, int], rng: np.random.Generator, min_frac: float = 0.01, max_frac: float = 0.08) -> np.ndarray:
    """An irregular connected region covering min_frac..max_frac of the image, inside a random window."""
    h, w = shape
    for _ in range(50):
        scale = int(rng.integers(2, 5))
        noise = perlin_noise(shape, (scale, scale), rng)
        thresh = rng.uniform(0.35, 0.6)
        mask = noise > thresh
        labels, count = ndimage.label(mask)
        if count == 0:
            continue
        sizes = ndimage.sum_labels(mask, labels, index=np.arange(1, count + 1))
        keep = int(np.argmax(sizes)) + 1
        mask = labels == keep
        frac = mask.mean()
        if frac > max_frac:  # shrink by eroding until small enough
            while mask.mean() > max_frac:
                mask = ndimage.binary_erosion(mask, iterations=2)
        if min_frac <= mask.mean() <= max_frac and mask.any():
            return mask
    cy, cx, r = h // 2, w // 2, max(2, int(min(h, w) * 0.08))
    yy, xx = np.ogrid[:h, :w]
    return (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r


def _foreign_texture(shape: tuple[int, int], rng: np.random.Generator, foreign: np.ndarray | None) -> np.ndarray:
    h, w = shape
    if foreign is not None and foreign.shape[0] >= h and foreign.shape[1] >= w:
        y = int(rng.integers(0, foreign.shape[0] - h + 1))
        x = int(rng.integers(0, foreign.shape[1] - w + 1))
        return foreign[y:y + h, x:x + w].astype(np.float32)
    base = rng.uniform(0, 255, 3)
    stripes = np.sin(np.arange(w)[None, :] * rng.uniform(0.2, 0.8) + np.arange(h)[:, None] * rng.uniform(0.2, 0.8))
    return np.clip(base[None, None, :] + 80 * stripes[..., None], 0, 255).astype(np.float32)


def synthesize_anomaly(image: np.ndarray, rng: np.random.Generator, kind: str | None = None,
                       foreign: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, str]:
    """Return (defective image, bool mask, kind). `foreign` is an RGB image to take textures from."""
    if kind is None:
        kind = KINDS[int(rng.integers(len(KINDS)))]
    if kind not in KINDS:
        raise ValueError(f"unknown defect kind {kind!r}; use one of {KINDS}")
    h, w = image.shape[:2]
    mask = blob_mask((h, w), rng)
    img = image.astype(np.float32)
    if kind == "texture":
        fill = _foreign_texture((h, w), rng, foreign)
    elif kind == "cutpaste":
        # a crop of the same image pasted back magnified: same material, wrong scale and brightness
        zoom = rng.uniform(2.0, 3.0)
        ch, cw = max(2, int(h / zoom)), max(2, int(w / zoom))
        y, x = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        crop = img[y:y + ch, x:x + cw]
        fill = ndimage.zoom(crop, (h / ch, w / cw, 1), order=1)[:h, :w]
        fill = np.clip(fill * rng.uniform(0.75, 1.3), 0, 255)
    else:
        shift = rng.uniform(-1, 1, 3) * 90
        gain = rng.uniform(0.5, 1.5)
        fill = np.clip(img * gain + shift[None, None, :], 0, 255)
    alpha = mask[..., None].astype(np.float32)
    out = img * (1 - alpha) + fill * alpha
    return np.clip(np.round(out), 0, 255).astype(np.uint8), mask, kind
