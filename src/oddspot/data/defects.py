"""Seeded defect families for the quality benchmark: a normal image -> (defective image, exact bool mask).

The three families of `oddspot.data.synthetic` (foreign texture, magnified cut-paste, colour
change; used unchanged) plus six more, each a vectorised numpy operation:

- `scratch`: a thin bright or dark polyline (1-3 px wide);
- `missing`: a region filled with the image's border colour (an occluded or missing part; given a
  foreground `within`, the region is cut from the object only, so a part of the object is gone);
- `stain`: a soft semi-transparent colour tint (the mask is where its opacity is at least half);
- `blur`: a Gaussian blur inside a region (a smeared or out-of-focus spot);
- `rotated`: a square of the same image, rotated by 30-150 degrees and pasted elsewhere;
- `holes`: two to five small dark discs.

A family whose change would be barely visible at the drawn place (mean change under
`MIN_CHANGE` grey levels, e.g. a blur on a flat area) is drawn again, up to `TRIES` times.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from oddspot.data.synthetic import KINDS as SYNTHETIC_KINDS
from oddspot.data.synthetic import blob_mask, synthesize_anomaly
from oddspot.errors import OddspotError

FAMILIES = (*SYNTHETIC_KINDS, "scratch", "missing", "stain", "blur", "rotated", "holes")
MIN_CHANGE = 8.0
TRIES = 20


def _grid(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[:h, :w]
    return yy.astype(np.float32), xx.astype(np.float32)


def _place(within: np.ndarray | None, shape: tuple[int, int], rng: np.random.Generator, margin: int) -> tuple[int, int]:
    """A random (y, x) at least `margin` from the border, inside `within` when one is given."""
    h, w = shape
    inner = np.zeros(shape, bool)
    inner[margin:h - margin, margin:w - margin] = True
    if within is not None and (within & inner).any():
        inner &= within
    ys, xs = np.nonzero(inner)
    i = int(rng.integers(len(ys)))
    return int(ys[i]), int(xs[i])


def _region(shape: tuple[int, int], rng: np.random.Generator, within: np.ndarray | None) -> np.ndarray:
    """An irregular blob (synthetic.blob_mask), moved so it overlaps `within`, and cut to it."""
    mask = blob_mask(shape, rng, 0.01, 0.06)
    if within is None or not within.any():
        return mask
    cy, cx = (int(round(v)) for v in ndimage.center_of_mass(mask))
    ty, tx = _place(within, shape, rng, 8)
    moved = np.roll(mask, (ty - cy, tx - cx), axis=(0, 1))
    cut = moved & within
    return cut if cut.sum() >= 0.3 * moved.sum() else moved


def scratch(img: np.ndarray, rng: np.random.Generator, within: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    yy, xx = _grid(h, w)
    y, x = _place(within, (h, w), rng, h // 8)
    points = [(float(y), float(x))]
    angle = rng.uniform(0, 2 * np.pi)
    for _ in range(int(rng.integers(2, 5))):
        angle += rng.uniform(-0.6, 0.6)
        step = rng.uniform(0.08, 0.18) * min(h, w)
        points.append((points[-1][0] + step * np.sin(angle), points[-1][1] + step * np.cos(angle)))
    width = rng.uniform(0.8, 1.6)
    dist = np.full((h, w), np.inf, np.float32)
    for (y0, x0), (y1, x1) in zip(points[:-1], points[1:]):
        dy, dx = y1 - y0, x1 - x0
        t = np.clip(((yy - y0) * dy + (xx - x0) * dx) / max(dy * dy + dx * dx, 1e-6), 0, 1)
        dist = np.minimum(dist, np.hypot(yy - (y0 + t * dy), xx - (x0 + t * dx)))
    mask = dist <= width
    level = rng.uniform(0, 40) if img[mask].mean() > 110 else rng.uniform(215, 255)
    out = img.copy()
    out[mask] = level
    return out, mask


def missing(img: np.ndarray, rng: np.random.Generator, within: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    mask = _region((h, w), rng, within)
    border = np.concatenate([img[0], img[-1], img[:, 0], img[:, -1]])
    fill = np.median(border, axis=0) + rng.normal(0, 3, (h, w, 1))
    out = np.where(mask[..., None], fill, img)
    return out, mask


def stain(img: np.ndarray, rng: np.random.Generator, within: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    core = _region((h, w), rng, within)
    strength = rng.uniform(0.45, 0.8)
    alpha = ndimage.gaussian_filter(core.astype(np.float32), rng.uniform(1.5, 3.0)) * strength
    mask = alpha >= 0.5 * strength
    colour = rng.uniform(0, 255, 3).astype(np.float32)
    out = img * (1 - alpha[..., None]) + colour * alpha[..., None]
    return out, mask


def blur(img: np.ndarray, rng: np.random.Generator, within: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    mask = _region((h, w), rng, within)
    sigma = rng.uniform(3.0, 6.0)
    blurred = ndimage.gaussian_filter(img, (sigma, sigma, 0))
    return np.where(mask[..., None], blurred, img), mask


def rotated(img: np.ndarray, rng: np.random.Generator, within: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    side = int(rng.uniform(0.2, 0.32) * min(h, w))
    y0, x0 = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
    patch = ndimage.rotate(img[y0:y0 + side, x0:x0 + side], rng.uniform(30, 150), axes=(1, 0), reshape=False,
                           order=1, mode="reflect")
    yy, xx = _grid(side, side)
    disc = (yy - (side - 1) / 2) ** 2 + (xx - (side - 1) / 2) ** 2 <= (side / 2) ** 2
    cy, cx = _place(within, (h, w), rng, side // 2 + 1)
    ty, tx = cy - side // 2, cx - side // 2
    mask = np.zeros((h, w), bool)
    mask[ty:ty + side, tx:tx + side] = disc
    out = img.copy()
    out[mask] = patch[disc]
    return out, mask


def holes(img: np.ndarray, rng: np.random.Generator, within: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    h, w = img.shape[:2]
    yy, xx = _grid(h, w)
    mask = np.zeros((h, w), bool)
    for _ in range(int(rng.integers(2, 6))):
        r = rng.uniform(0.012, 0.03) * min(h, w)
        cy, cx = _place(within, (h, w), rng, int(r) + 2)
        mask |= (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
    out = img.copy()
    out[mask] = rng.uniform(0, 25)
    return out, mask


_FAMILY_FUNCS = {"scratch": scratch, "missing": missing, "stain": stain, "blur": blur, "rotated": rotated, "holes": holes}


def make_defect(image: np.ndarray, rng: np.random.Generator, family: str, foreign: np.ndarray | None = None,
                within: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(defective uint8 image, bool mask) of one `family` (FAMILIES) on an RGB uint8 `image`.

    `foreign`: an RGB photo the `texture` family takes its fill from; `within`: a bool foreground
    mask of an object (regions are placed on it, and `missing` cuts from it only).
    """
    if family not in FAMILIES:
        raise OddspotError(f"unknown defect family {family!r}; use one of {', '.join(FAMILIES)}")
    base = image.astype(np.float32)
    best: tuple[float, np.ndarray, np.ndarray] | None = None
    for _ in range(TRIES):
        if family in SYNTHETIC_KINDS:
            out, mask, _ = synthesize_anomaly(image, rng, kind=family, foreign=foreign)
            out = out.astype(np.float32)
        else:
            out, mask = _FAMILY_FUNCS[family](base, rng, within)
        out = np.clip(np.round(out), 0, 255)
        change = float(np.abs(out - base).max(axis=2)[mask].mean()) if mask.any() else 0.0
        if best is None or change > best[0]:
            best = (change, out, mask)
        if change >= MIN_CHANGE:
            break
    _, out, mask = best
    return out.astype(np.uint8), mask
