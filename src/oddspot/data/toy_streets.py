"""Procedural "toy street" scenes written in the StreetHazards layout, small enough for a 2-core CPU.

Each scene is a perspective street: sky, road with dashed lane lines, sidewalks, facades of
buildings, walls, fences and hedges converging to a vanishing point, and objects scaled by their
distance (cars, pedestrians, poles with traffic signs, trees, bins). Colours, geometry, object
counts and lighting change per scene. Test scenes also contain unseen objects (class 13): stars,
rings, blobs and bars with checker, dot, stripe or rainbow textures in colours no known class uses.
Training and validation scenes never contain them.

All randomness flows from one seed; scene i of a split uses the stream (seed, split, i), so a
scene does not depend on how many others are generated. A manifest `toy_streets.json` records
the seed, size and counts.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from oddspot import __version__
from oddspot.configs import check_range
from oddspot.data.streethazards import ANOMALY_CLASS, CLASS_NAMES, SPLITS, encode_labels
from oddspot.errors import OddspotError
from oddspot.files import read_json, write_json, write_png

FORMAT_VERSION = 1
MANIFEST = "toy_streets.json"

UNLABELED, BUILDING, FENCE, OTHER, PEDESTRIAN, POLE, ROAD_LINE, ROAD, SIDEWALK, VEGETATION, CAR, WALL, SIGN = range(13)

_SPLIT_CODE = {"training": 0, "validation": 1, "test": 2}

_BUILDING_COLORS = np.array([[0.62, 0.55, 0.45], [0.55, 0.30, 0.25], [0.50, 0.52, 0.58], [0.70, 0.66, 0.55],
                             [0.42, 0.40, 0.38]])
_CAR_COLORS = np.array([[0.70, 0.08, 0.08], [0.10, 0.18, 0.55], [0.85, 0.85, 0.85], [0.08, 0.08, 0.09],
                        [0.55, 0.56, 0.58], [0.85, 0.70, 0.10], [0.15, 0.35, 0.20]])
_CLOTH_COLORS = np.array([[0.12, 0.15, 0.35], [0.35, 0.22, 0.12], [0.30, 0.30, 0.30], [0.60, 0.12, 0.12],
                          [0.10, 0.10, 0.10], [0.55, 0.50, 0.40]])
_BIN_COLORS = np.array([[0.15, 0.35, 0.20], [0.15, 0.25, 0.50], [0.32, 0.22, 0.12]])
_SIGN_COLORS = np.array([[0.80, 0.10, 0.10], [0.10, 0.25, 0.75], [0.90, 0.75, 0.10]])
# Saturated hues that no known class uses: magenta, cyan, lime, violet, hot pink, electric orange.
_ANOMALY_COLORS = np.array([[0.95, 0.10, 0.90], [0.10, 0.95, 0.95], [0.55, 1.00, 0.10], [0.55, 0.15, 0.95],
                            [1.00, 0.35, 0.65], [1.00, 0.50, 0.00]])


@dataclass(frozen=True)
class ToyStreetConfig:
    """Size and counts of a toy street data set."""

    height: int = 128
    width: int = 256
    n_train: int = 300
    n_val: int = 60
    n_test: int = 60
    towns: int = 2
    seed: int = 0

    def __post_init__(self) -> None:
        if self.height < 32 or self.width < 32:
            raise OddspotError(f"toy street size {self.height}x{self.width} is too small; use at least 32x32")
        if self.height > 4096 or self.width > 4096:
            raise OddspotError(f"toy street size {self.height}x{self.width} is too large; use at most 4096x4096")
        if min(self.n_train, self.n_val, self.n_test) < 1 or self.towns < 1:
            raise OddspotError("toy street counts (train/val/test/towns) must each be at least 1")
        for name in ("n_train", "n_val", "n_test"):
            check_range(name, getattr(self, name), 1, 1_000_000)
        check_range("towns", self.towns, 1, 100)
        check_range("seed", self.seed, 0, 2**32 - 1)


class _Canvas:
    """An image (H x W x 3 float in 0..1) and its label map, painted back to front."""

    def __init__(self, h: int, w: int, rng: np.random.Generator) -> None:
        self.h, self.w, self.rng = h, w, rng
        self.img = np.zeros((h, w, 3), np.float32)
        self.lab = np.zeros((h, w), np.uint8)
        self.yy, self.xx = np.mgrid[0:h, 0:w].astype(np.float32)

    def noise(self, scale: float, shape: tuple[int, int] | None = None) -> np.ndarray:
        """Smooth noise in about -1..1 with feature size `scale` pixels."""
        h, w = shape or (self.h, self.w)
        gh, gw = max(2, int(np.ceil(h / scale)) + 1), max(2, int(np.ceil(w / scale)) + 1)
        grid = self.rng.standard_normal((gh, gw)).astype(np.float32)
        up = ndimage.zoom(grid, (h / gh, w / gw), order=1, mode="nearest", grid_mode=True)
        return np.clip(up[:h, :w], -2.5, 2.5) / 1.5

    def paint(self, mask: np.ndarray, color: np.ndarray, cls: int, texture: np.ndarray | None = None) -> None:
        """Paint `mask` with `color` (3,) or (H, W, 3), times (1 + texture) when given."""
        col = np.broadcast_to(np.asarray(color, np.float32), self.img.shape)
        if texture is not None:
            col = col * (1.0 + texture[..., None])
        self.img[mask] = col[mask]
        self.lab[mask] = cls


def _jitter(rng: np.random.Generator, color: np.ndarray, amount: float = 0.08) -> np.ndarray:
    return np.clip(np.asarray(color, np.float32) * rng.uniform(1 - amount, 1 + amount) + rng.normal(0, amount / 3, 3), 0, 1)


class _Street:
    """Geometry of one scene: horizon, vanishing point, road and sidewalk edges per row."""

    def __init__(self, c: _Canvas) -> None:
        r, h, w = c.rng, c.h, c.w
        self.y_h = r.uniform(0.36, 0.48) * h
        self.x_v = r.uniform(0.38, 0.62) * w
        self.road_l = r.uniform(0.30, 0.50) * w
        self.road_r = r.uniform(0.30, 0.50) * w
        self.walk_l = r.uniform(0.12, 0.25) * w
        self.walk_r = r.uniform(0.12, 0.25) * w
        self.h, self.w = h, w

    def t(self, y: np.ndarray | float) -> np.ndarray:
        """Nearness 0 (horizon) .. 1 (bottom row); negative above the horizon."""
        return (np.asarray(y, np.float32) - self.y_h) / (self.h - self.y_h)

    def edges(self, y: np.ndarray | float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Outer-left sidewalk, left road, right road, outer-right sidewalk x at row(s) y."""
        t = np.clip(self.t(y), 0, None)
        left = self.x_v - 1.5 - t * self.road_l
        right = self.x_v + 1.5 + t * self.road_r
        return left - 1.0 - t * self.walk_l, left, right, right + 1.0 + t * self.walk_r


def _sky(c: _Canvas, s: _Street) -> None:
    r = c.rng
    top = _jitter(r, [0.35, 0.55, 0.85], 0.1)
    low = _jitter(r, [0.75, 0.85, 0.95], 0.05)
    a = np.clip(c.yy / max(s.y_h, 1.0), 0, 1)[..., None]
    col = top * (1 - a) + low * a
    clouds = np.clip(c.noise(r.uniform(10, 25)) - 0.3, 0, None)[..., None] * r.uniform(0.2, 0.6)
    c.img[:] = col + clouds * (1 - col)
    c.lab[:] = UNLABELED


def _facades(c: _Canvas, s: _Street) -> None:
    """Blocks of building / wall / fence / hedge on each side, from their top line down to the sidewalk."""
    r = c.rng
    outer_l, _, _, outer_r = s.edges(c.yy)
    ground = c.yy > s.y_h
    for side in (-1, 1):
        if side < 0:
            u = (s.x_v - c.xx) / max(s.x_v, 1.0)
            beside = c.xx < outer_l
        else:
            u = (c.xx - s.x_v) / max(c.w - s.x_v, 1.0)
            beside = c.xx > outer_r
        cuts = np.sort(np.concatenate([[0.0, 1.01], r.uniform(0.05, 1.0, r.integers(2, 5))]))
        for u0, u1 in zip(cuts[:-1], cuts[1:]):
            kind = r.choice([BUILDING, VEGETATION, WALL, FENCE], p=[0.55, 0.17, 0.14, 0.14])
            hgt = {BUILDING: r.uniform(0.35, 1.0), VEGETATION: r.uniform(0.15, 0.4),
                   WALL: r.uniform(0.06, 0.12), FENCE: r.uniform(0.07, 0.14)}[kind]
            seg = (u > u0) & (u <= u1)
            top = s.y_h - u * hgt * c.h
            if kind == VEGETATION:
                top = top + c.noise(4.0) * 3.0 * np.clip(u, 0.2, 1)
            region = seg & ((beside & ground) | ((c.yy > top) & ~ground & (u > 0.02)))
            if kind == BUILDING:
                base = _jitter(r, _BUILDING_COLORS[r.integers(len(_BUILDING_COLORS))])
                per_x, per_y = r.uniform(5, 9), r.uniform(5, 8)
                win = (np.mod(c.xx, per_x) < per_x * 0.45) & (np.mod(c.yy, per_y) < per_y * 0.5) & (c.yy > top + 2)
                tex = c.noise(6.0) * 0.06 - win * r.uniform(0.35, 0.6)
                c.paint(region, base, BUILDING, tex)
            elif kind == VEGETATION:
                base = _jitter(r, [0.18, 0.42, 0.15], 0.15)
                c.paint(region, base, VEGETATION, c.noise(2.0) * 0.35)
            elif kind == WALL:
                base = _jitter(r, [0.66, 0.66, 0.63], 0.08)
                lines = (np.mod(c.yy, r.uniform(3, 5)) < 0.8) * -0.12
                c.paint(region, base, WALL, lines + c.noise(8.0) * 0.04)
            else:
                base = _jitter(r, [0.45, 0.30, 0.18] if r.random() < 0.5 else [0.35, 0.38, 0.40], 0.1)
                bars = (np.mod(c.xx, r.uniform(2.5, 4.0)) < 1.0) * -0.45
                c.paint(region, base, FENCE, bars)


def _ground(c: _Canvas, s: _Street) -> None:
    r = c.rng
    outer_l, left, right, outer_r = s.edges(c.yy)
    ground = c.yy > s.y_h
    t = np.clip(s.t(c.yy), 0, 1)
    road = ground & (c.xx >= left) & (c.xx <= right)
    walk = ground & (((c.xx >= outer_l) & (c.xx < left)) | ((c.xx > right) & (c.xx <= outer_r)))
    asphalt = _jitter(r, [0.30, 0.30, 0.32], 0.12)
    c.paint(road, asphalt, ROAD, c.noise(1.5) * 0.08 + (t - 0.5) * 0.1)
    tile = _jitter(r, [0.62, 0.58, 0.52], 0.08)
    per = r.uniform(3, 6)
    grout = (np.mod(c.yy * 1.7 / np.maximum(t, 0.1), per) < 0.7) * -0.15
    c.paint(walk, tile, SIDEWALK, grout + c.noise(3.0) * 0.05)
    # Lane lines: a dashed centre line and, sometimes, solid lines near the road edges.
    paint = _jitter(r, [0.95, 0.95, 0.92] if r.random() < 0.7 else [0.95, 0.80, 0.15], 0.04)
    frac = r.uniform(0.35, 0.65)
    center = left + (right - left) * frac
    half = np.maximum(1.0, 0.014 * c.w * t)
    phase = r.uniform(0, 1)
    dash = np.mod(2.5 / np.maximum(t, 0.02) + phase, 1.0) < 0.5
    lines = ground & (np.abs(c.xx - center) < half) & dash & (t > 0.04)
    if r.random() < 0.6:
        inset = 0.04 * (right - left)
        near_edge = (np.abs(c.xx - (left + inset)) < half * 0.8) | (np.abs(c.xx - (right - inset)) < half * 0.8)
        lines |= ground & (t > 0.04) & near_edge
    c.paint(lines, paint, ROAD_LINE)


def _box(c: _Canvas, x0: float, y0: float, x1: float, y1: float) -> tuple[slice, slice] | None:
    """Integer bounding box clipped to the canvas, or None when empty."""
    ya, yb = int(max(np.floor(y0), 0)), int(min(np.ceil(y1), c.h))
    xa, xb = int(max(np.floor(x0), 0)), int(min(np.ceil(x1), c.w))
    if ya >= yb or xa >= xb:
        return None
    return slice(ya, yb), slice(xa, xb)


def _paint_local(c: _Canvas, box: tuple[slice, slice], mask: np.ndarray, color: np.ndarray, cls: int,
                 texture: np.ndarray | None = None) -> None:
    col = np.broadcast_to(np.asarray(color, np.float32), mask.shape + (3,))
    if texture is not None:
        col = col * (1.0 + texture[..., None])
    c.img[box][mask] = col[mask]
    c.lab[box][mask] = cls


def _car(c: _Canvas, s: _Street, yb: float) -> None:
    r = c.rng
    t = float(s.t(yb))
    _, left, right, _ = (float(e) for e in s.edges(yb))
    w = max(6.0, t * r.uniform(0.28, 0.38) * c.w)
    hgt = w * r.uniform(0.55, 0.75)
    xc = r.uniform(left + w * 0.3, max(left + w * 0.3 + 1, right - w * 0.3))
    box = _box(c, xc - w / 2, yb - hgt, xc + w / 2, yb)
    if box is None:
        return
    yy, xx = c.yy[box], c.xx[box]
    body_col = _jitter(r, _CAR_COLORS[r.integers(len(_CAR_COLORS))], 0.06)
    rel_y = (yb - yy) / hgt
    rel_x = np.abs(xx - xc) / (w / 2)
    cabin = (rel_y > 0.55) & (rel_x < 0.75 - (rel_y - 0.55) * 0.6)
    body = (rel_y <= 0.58) & (rel_y > 0.12)
    wheels = (rel_y <= 0.2) & (rel_x > 0.5) & (rel_x < 0.85)
    glass = cabin & (rel_x < 0.62 - (rel_y - 0.55) * 0.6) & (rel_y < 0.93)
    shade = (rel_y - 0.3) * 0.3
    _paint_local(c, box, body | cabin, body_col, CAR, shade)
    _paint_local(c, box, glass, _jitter(r, [0.15, 0.2, 0.28], 0.1), CAR)
    _paint_local(c, box, wheels, [0.05, 0.05, 0.05], CAR)
    lights = (rel_y > 0.35) & (rel_y < 0.45) & (rel_x > 0.7) & (rel_x < 0.95)
    _paint_local(c, box, lights, [0.9, 0.85, 0.6] if r.random() < 0.5 else [0.8, 0.1, 0.1], CAR)


def _pedestrian(c: _Canvas, s: _Street, yb: float, on_road: bool) -> None:
    r = c.rng
    t = float(s.t(yb))
    outer_l, left, right, outer_r = (float(e) for e in s.edges(yb))
    hgt = max(12.0, t * r.uniform(0.32, 0.42) * c.h)
    w = hgt * 0.34
    if on_road:
        xc = r.uniform(left, right)
    else:
        xc = r.uniform(outer_l, left) if r.random() < 0.5 else r.uniform(right, outer_r)
    box = _box(c, xc - w / 2, yb - hgt, xc + w / 2, yb)
    if box is None:
        return
    yy, xx = c.yy[box], c.xx[box]
    rel_y = (yb - yy) / hgt
    dx = (xx - xc) / (w / 2)
    head = ((dx / 0.45) ** 2 + ((rel_y - 0.9) / 0.09) ** 2) < 1
    torso = (rel_y > 0.45) & (rel_y <= 0.82) & (np.abs(dx) < 0.85)
    legs = (rel_y <= 0.45) & (np.abs(np.abs(dx) - 0.35) < 0.25 + 0.1 * (rel_y > 0.3))
    _paint_local(c, box, legs, _jitter(r, _CLOTH_COLORS[r.integers(len(_CLOTH_COLORS))]), PEDESTRIAN)
    _paint_local(c, box, torso, _jitter(r, _CLOTH_COLORS[r.integers(len(_CLOTH_COLORS))]), PEDESTRIAN)
    skin = _jitter(r, [0.85, 0.65, 0.50] if r.random() < 0.6 else [0.45, 0.30, 0.20], 0.08)
    _paint_local(c, box, head, skin, PEDESTRIAN)


def _pole(c: _Canvas, s: _Street, yb: float) -> None:
    r = c.rng
    t = float(s.t(yb))
    outer_l, left, right, outer_r = (float(e) for e in s.edges(yb))
    right_side = r.random() < 0.5
    xc = (left - (left - outer_l) * 0.25) if not right_side else (right + (outer_r - right) * 0.25)
    hgt = max(10.0, t * r.uniform(0.6, 0.9) * c.h)
    w = max(2.5, 0.016 * c.w * t)
    box = _box(c, xc - w / 2, yb - hgt, xc + w / 2, yb)
    if box is None:
        return
    xx = c.xx[box]
    mask = np.abs(xx + 0.5 - xc) <= w / 2
    _paint_local(c, box, mask, _jitter(r, [0.45, 0.45, 0.47], 0.1), POLE)
    if r.random() < 0.6:
        size = max(7.0, w * r.uniform(3.0, 4.5))
        yc = yb - hgt + size / 2
        sbox = _box(c, xc - size / 2, yc - size / 2, xc + size / 2, yc + size / 2)
        if sbox is None:
            return
        dy = (c.yy[sbox] + 0.5 - yc) / (size / 2)
        dx = (c.xx[sbox] + 0.5 - xc) / (size / 2)
        shape = r.integers(3)
        if shape == 0:
            plate = dx**2 + dy**2 < 1
        elif shape == 1:
            plate = (np.abs(dx) < 0.9) & (np.abs(dy) < 0.9)
        else:
            plate = np.abs(dx) + np.abs(dy) < 1
        col = _SIGN_COLORS[r.integers(len(_SIGN_COLORS))]
        inner = (dx**2 + dy**2) < 0.25
        _paint_local(c, sbox, plate, _jitter(r, col, 0.05), SIGN, -0.5 * (plate & inner) * (r.random() < 0.5))


def _tree(c: _Canvas, s: _Street, yb: float) -> None:
    r = c.rng
    t = float(s.t(yb))
    outer_l, left, right, outer_r = (float(e) for e in s.edges(yb))
    xc = r.uniform(outer_l, left) if r.random() < 0.5 else r.uniform(right, outer_r)
    hgt = max(10.0, t * r.uniform(0.6, 1.0) * c.h)
    trunk_w = max(1.5, hgt * 0.06)
    crown = hgt * r.uniform(0.25, 0.35)
    box = _box(c, xc - crown, yb - hgt, xc + crown, yb)
    if box is None:
        return
    yy, xx = c.yy[box], c.xx[box]
    trunk = (np.abs(xx - xc) < trunk_w / 2) & (yy > yb - hgt * 0.6)
    cy = yb - hgt + crown
    wobble = c.noise(3.0, yy.shape) * 0.25
    canopy = ((xx - xc) ** 2 + ((yy - cy) * 1.1) ** 2) < (crown * (1 + wobble)) ** 2
    _paint_local(c, box, trunk, _jitter(r, [0.35, 0.24, 0.14]), VEGETATION)
    _paint_local(c, box, canopy, _jitter(r, [0.16, 0.40, 0.14], 0.15), VEGETATION, c.noise(2.0, yy.shape) * 0.35)


def _bin(c: _Canvas, s: _Street, yb: float) -> None:
    r = c.rng
    t = float(s.t(yb))
    outer_l, left, right, outer_r = (float(e) for e in s.edges(yb))
    xc = r.uniform(outer_l, left) if r.random() < 0.5 else r.uniform(right, outer_r)
    hgt = max(7.0, t * r.uniform(0.14, 0.22) * c.h)
    w = hgt * r.uniform(0.7, 1.6)
    box = _box(c, xc - w / 2, yb - hgt, xc + w / 2, yb)
    if box is None:
        return
    mask = np.ones((box[0].stop - box[0].start, box[1].stop - box[1].start), bool)
    rel = (yb - c.yy[box]) / hgt
    base = _BIN_COLORS[r.integers(len(_BIN_COLORS))]
    stripe = (np.abs(rel - 0.45) < 0.08) * 0.5
    _paint_local(c, box, mask, _jitter(r, base), OTHER, (rel > 0.85) * 0.4 + stripe)


def _anomaly(c: _Canvas, s: _Street, yb: float) -> None:
    """An unseen object: a shape and texture that no training class has, labelled ANOMALY_CLASS."""
    r = c.rng
    t = float(s.t(yb))
    outer_l, left, right, outer_r = (float(e) for e in s.edges(yb))
    xc = r.uniform(left, right) if r.random() < 0.75 else r.uniform(outer_l, outer_r)
    size = max(7.0, t * r.uniform(0.12, 0.28) * c.w)
    yc = yb - size / 2
    box = _box(c, xc - size / 2, yc - size / 2, xc + size / 2, yc + size / 2)
    if box is None:
        return
    yy, xx = c.yy[box] + 0.5, c.xx[box] + 0.5
    dy, dx = (yy - yc) / (size / 2), (xx - xc) / (size / 2)
    rad, ang = np.hypot(dx, dy), np.arctan2(dy, dx) + r.uniform(0, 2 * np.pi)
    shape = r.integers(4)
    if shape == 0:
        k = r.integers(5, 8)
        mask = rad < 0.55 + 0.4 * np.abs(np.cos(ang * k / 2))
    elif shape == 1:
        mask = (rad < 0.95) & (rad > r.uniform(0.35, 0.6))
    elif shape == 2:
        a = r.normal(0, 0.18, 4)
        mask = rad < 0.7 + a[0] * np.cos(2 * ang) + a[1] * np.sin(3 * ang) + a[2] * np.cos(5 * ang) + a[3] * np.sin(ang)
    else:
        th = r.uniform(0, np.pi)
        u = dx * np.cos(th) + dy * np.sin(th)
        v = -dx * np.sin(th) + dy * np.cos(th)
        mask = (np.abs(u) < 0.95) & (np.abs(v) < r.uniform(0.3, 0.5))
    pick = r.choice(len(_ANOMALY_COLORS), 2, replace=False)
    c1, c2 = _ANOMALY_COLORS[pick[0]], _ANOMALY_COLORS[pick[1]]
    tex = r.integers(4)
    cell = max(2.0, size / r.uniform(3, 6))
    if tex == 0:
        sel = (np.floor(xx / cell) + np.floor(yy / cell)) % 2 == 0
    elif tex == 1:
        sel = (np.mod(xx, cell) - cell / 2) ** 2 + (np.mod(yy, cell) - cell / 2) ** 2 < (cell * 0.35) ** 2
    elif tex == 2:
        sel = np.mod(xx + yy, cell) < cell / 2
    else:
        sel = None
    if sel is None:
        hue = np.mod(ang / (2 * np.pi) + rad * 0.5, 1.0)
        col = np.stack([np.abs(hue * 6 - 3) - 1, 2 - np.abs(hue * 6 - 2), 2 - np.abs(hue * 6 - 4)], -1)
        col = np.clip(col, 0, 1).astype(np.float32)
    else:
        col = np.where(sel[..., None], c1, c2).astype(np.float32)
    _paint_local(c, box, mask, col, ANOMALY_CLASS)


def render_scene(rng: np.random.Generator, height: int = 128, width: int = 256,
                 anomalies: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Draw one scene: (H x W x 3 uint8 image, H x W uint8 0-indexed labels, 13 = anomaly)."""
    c = _Canvas(height, width, rng)
    s = _Street(c)
    _sky(c, s)
    _facades(c, s)
    _ground(c, s)
    span = height - s.y_h
    objects: list[tuple[float, str]] = []
    counts = {"car": rng.integers(0, 5), "ped": rng.integers(1, 5), "pole": rng.integers(1, 5),
              "tree": rng.integers(0, 4), "bin": rng.integers(1, 4)}
    if anomalies:
        counts["anomaly"] = rng.integers(1, 4)
    for kind, n in counts.items():
        for _ in range(int(n)):
            objects.append((s.y_h + span * rng.uniform(0.12, 1.0) ** 0.7, kind))
    objects.sort(key=lambda o: o[0])
    for yb, kind in objects:
        if kind == "car":
            _car(c, s, yb)
        elif kind == "ped":
            _pedestrian(c, s, yb, on_road=rng.random() < 0.2)
        elif kind == "pole":
            _pole(c, s, yb)
        elif kind == "tree":
            _tree(c, s, yb)
        elif kind == "bin":
            _bin(c, s, yb)
        else:
            _anomaly(c, s, yb)
    light = rng.uniform(0.75, 1.2)
    cast = rng.normal(0, 0.03, 3).astype(np.float32)
    img = c.img * light + cast + rng.normal(0, rng.uniform(0.005, 0.02), c.img.shape).astype(np.float32)
    return np.clip(np.round(img * 255), 0, 255).astype(np.uint8), c.lab


def generate_toy_streets(root: str | os.PathLike[str], config: ToyStreetConfig | None = None) -> dict[str, Any]:
    """Write a toy street data set in the StreetHazards layout under `root`; return its manifest.

    Unseen objects (class 13) appear in test scenes only. An existing manifest with the same
    configuration means the data is already there: it is reused, not regenerated.
    """
    config = config or ToyStreetConfig()
    root = Path(root)
    manifest_path = root / MANIFEST
    manifest = {
        "format_version": FORMAT_VERSION,
        "generator": "oddspot.data.toy_streets",
        "oddspot_version": __version__,
        "seed": config.seed,
        "height": config.height,
        "width": config.width,
        "counts": {"training": config.n_train, "validation": config.n_val, "test": config.n_test},
        "towns": config.towns,
        "classes": list(CLASS_NAMES) + ["anomaly"],
        "label_encoding": "PNG value = class + 1; 0 = unannotated",
    }
    if manifest_path.exists():
        try:
            old = read_json(manifest_path, "choose another folder")
        except OddspotError:
            old = None
        if old is not None and {k: old.get(k) for k in manifest if k != "oddspot_version"} == {
            k: v for k, v in manifest.items() if k != "oddspot_version"
        }:
            return old
        raise OddspotError(f"{manifest_path}: a different toy data set is already there; choose another folder")
    for split, n in manifest["counts"].items():
        top, sub = SPLITS[split]
        for i in range(n):
            rng = np.random.default_rng([config.seed, _SPLIT_CODE[split], i])
            image, labels = render_scene(rng, config.height, config.width, anomalies=split == "test")
            rel = Path(f"town{i % config.towns:02d}") / f"{i:06d}.png"
            write_png(root / top / "images" / sub / rel, image)
            write_png(root / top / "annotations" / sub / rel, encode_labels(labels))
    write_json(manifest_path, manifest)
    return manifest
