"""The motion-aware detector without its network (numpy; no torch): temporal stacks, block-matching
flow, patch rows, nearest-neighbour scores and maps, and the model's record.

`MotionHead._score_frames` takes deep features from `deep_features(stacks)`, which a subclass
provides: `video.motion.MotionDetector` runs the backbone in torch, the exported runtime
(`oddspot.runtime.video`) runs the same trunk on OpenVINO or ONNX Runtime. See `video.motion` for
what the detector computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from oddspot.configs import check_range
from oddspot.errors import OddspotError
from oddspot.imaging import resize_matrix
from oddspot.neighbors import KNNIndex
from oddspot.runs.contract import TENSORS_FILE, Record
from oddspot.video.head import VideoHead, check_common, check_tensor_names
from oddspot.video.postprocess import gaussian_weights, read_fields

LUMA = np.array([0.299, 0.587, 0.114], np.float32)
MAX_GAP = 1000
MAX_WEIGHT = 1e6


@dataclass
class MotionConfig:
    """Settings of the motion-aware nearest-neighbour detector (the options of `oddspot video fit --model motion`)."""

    size: tuple[int, int] = (96, 128)
    backbone: str = "efficientnet_lite0"
    layers: tuple[str, ...] = ("stage2", "stage3")
    gap: int = 4
    pool: int = 3
    position_weight: float = 3.0
    flow_weight: float = 4.0
    flow_step: int = 2
    max_shift: tuple[int, int] = (1, 14)
    foreground_threshold: float = 20.0
    coreset_ratio: float = 0.1
    train_step: int = 2
    k: int = 1
    map_sigma: float = 4.0
    batch_size: int = 32
    seed: int = 0
    sigma: float = 3.0
    normalization: str = "train_zscore"
    threshold_quantile: float | None = 0.995
    holdout_fraction: float = 0.25

    def __post_init__(self) -> None:
        self.size = tuple(int(v) for v in self.size)  # type: ignore[assignment]
        self.layers = tuple(self.layers)
        self.max_shift = tuple(int(v) for v in self.max_shift)  # type: ignore[assignment]
        check_common(self)
        if not self.layers:
            raise OddspotError("layers is empty; name at least one backbone layer, e.g. stage2")
        check_range("gap", self.gap, 1, MAX_GAP)
        check_range("flow_step", self.flow_step, 1, MAX_GAP)
        check_range("pool", self.pool, 1, 15)
        check_range("k", self.k, 1, 1000)
        check_range("coreset_ratio", self.coreset_ratio, 0.0, 1.0, low_open=True)
        check_range("position_weight", self.position_weight, 0.0, MAX_WEIGHT)
        check_range("flow_weight", self.flow_weight, 0.0, MAX_WEIGHT)
        check_range("foreground_threshold", self.foreground_threshold, 0.0, 255.0)
        check_range("map_sigma", self.map_sigma, 0.0, 100.0)
        if len(self.max_shift) != 2:
            raise OddspotError(f"max_shift {self.max_shift} must be (rows, columns)")
        for shift in self.max_shift:
            check_range("max_shift", shift, 0, 64)
        if max(self.max_shift) < 1:
            raise OddspotError(f"max_shift {self.max_shift} must have a positive value (rows, columns)")


@dataclass
class MotionState:
    """Fitted numbers of a motion model besides its tensors: the feature scale and the bank's sizes."""

    feature_scale: float
    patches: int = 0
    bank: int = 0

    def __post_init__(self) -> None:
        check_range("feature_scale", self.feature_scale, 0.0, None, low_open=True)
        check_range("patches", self.patches, 0)
        check_range("bank", self.bank, 0)


def temporal_stacks(frames: np.ndarray, gap: int, indices: np.ndarray | None = None) -> np.ndarray:
    """uint8 T x H x W x 3 frames -> uint8 N x H x W x 3 stacks (grey t-2g, t-g, t) for the frames `indices`.

    Frames before the start of the segment are replaced by its first frame.
    """
    return stacks_from_grey(to_grey(frames), gap, indices)


def to_grey(frames: np.ndarray) -> np.ndarray:
    """uint8 T x H x W x 3 -> uint8 T x H x W luma."""
    return np.round(np.asarray(frames, dtype=np.float32) @ LUMA).astype(np.uint8)


def stacks_from_grey(grey: np.ndarray, gap: int, indices: np.ndarray | None = None) -> np.ndarray:
    """Grey T x H x W -> stacks N x H x W x 3 of frames (t-2g, t-g, t) for t in `indices` (clamped at 0)."""
    idx = np.arange(grey.shape[0]) if indices is None else np.asarray(indices)
    chans = [np.clip(idx - 2 * gap, 0, None), np.clip(idx - gap, 0, None), idx]
    return np.stack([grey[c] for c in chans], axis=-1)


def block_flow(
    frames: tuple[np.ndarray, np.ndarray, np.ndarray],
    foreground: np.ndarray,
    grid: tuple[int, int],
    max_shift: tuple[int, int],
) -> np.ndarray:
    """Per-cell velocity (rows, columns per step) of the foreground, by 3-frame block matching.

    `frames` are grey N x H x W images at t - 2s, t - s and t; `foreground` (N x H x W, bool) marks
    the pixels of frame t that differ from the background. For every displacement d within
    +-max_shift the cost |I_t(x) - I_{t-s}(x - d)| + |I_t(x) - I_{t-2s}(x - 2d)| (constant
    velocity) is summed over each cell's foreground pixels, all displacements at once on the
    foreground pixels only; each cell takes its cheapest d (ties to the smaller one, then to the
    first in row-major order). Cells whose foreground covers under 5% of them get (0, 0).
    Returns float32 N x gh x gw x 2.

    Blurred grey levels are multiples of 1/16, so every cost and cell sum is exact in float32:
    the result does not depend on the order of the sums (nor on the library that adds them).
    """
    prev2, prev, cur = (_blur(np.asarray(f, dtype=np.float32)) for f in frames)
    n, h, w = cur.shape
    gh, gw = grid
    my, mx = max_shift
    dy, dx = (d.reshape(-1) for d in np.meshgrid(np.arange(-my, my + 1), np.arange(-mx, mx + 1), indexing="ij"))
    fi, ys, xs = np.nonzero(foreground)
    c = cur[fi, ys, xs][:, None]
    fi2 = fi[:, None]
    y1, x1 = np.clip(ys[:, None] - dy, 0, h - 1), np.clip(xs[:, None] - dx, 0, w - 1)
    y2, x2 = np.clip(ys[:, None] - 2 * dy, 0, h - 1), np.clip(xs[:, None] - 2 * dx, 0, w - 1)
    cost = np.abs(c - prev[fi2, y1, x1]) + np.abs(c - prev2[fi2, y2, x2])
    cell = fi * (gh * gw) + (ys * gh // h) * gw + (xs * gw // w)
    total = np.zeros((n * gh * gw, dy.size), np.float32)
    if cell.size:
        order = np.argsort(cell, kind="stable")
        cells, starts = np.unique(cell[order], return_index=True)
        total[cells] = np.add.reduceat(cost[order], starts, axis=0)
    count = np.bincount(cell, minlength=n * gh * gw).astype(np.float32)
    total += 1e-3 * (np.abs(dy) + np.abs(dx)).astype(np.float32)[None] * count[:, None]
    best = total.argmin(axis=1)
    flow = np.stack([dy[best], dx[best]], axis=-1).astype(np.float32)
    flow *= (count >= 0.05 * (h * w) / (gh * gw))[:, None]
    return flow.reshape(n, gh, gw, 2)


def _blur(x: np.ndarray) -> np.ndarray:
    """3 x 3 binomial blur of float32 N x H x W images (edges replicated)."""
    p = np.pad(x, ((0, 0), (1, 1), (1, 1)), mode="edge")
    rows = 0.25 * p[:, :-2] + 0.5 * p[:, 1:-1] + 0.25 * p[:, 2:]
    return 0.25 * rows[:, :, :-2] + 0.5 * rows[:, :, 1:-1] + 0.25 * rows[:, :, 2:]


@lru_cache(maxsize=64)
def _reflect_blur_matrix(n: int, sigma: float) -> np.ndarray:
    """n x n float64 matrix of `scipy.ndimage.gaussian_filter1d(..., mode='reflect')` (edges mirrored with repeat)."""
    k = gaussian_weights(sigma)
    r = k.size // 2
    source = np.pad(np.arange(n), r, mode="symmetric")  # padded position -> original index
    m = np.zeros((n, n), np.float64)
    np.add.at(m, (np.repeat(np.arange(n), k.size), source[np.arange(n)[:, None] + np.arange(k.size)[None, :]].ravel()),
              np.tile(k, n))
    return m


@lru_cache(maxsize=64)
def _map_matrix(n_grid: int, n_out: int, sigma: float) -> np.ndarray:
    """n_out x n_grid float32: bilinear upsampling, then the Gaussian blur of `sigma` pixels (none for 0)."""
    m = resize_matrix(n_grid, n_out)
    if sigma > 0:
        m = _reflect_blur_matrix(n_out, sigma) @ m
    return m.astype(np.float32)


class MotionHead(VideoHead):
    """Nearest-neighbour scoring of motion-aware patch rows; `deep_features` is the subclass's."""

    kind = "motion"
    config_class = MotionConfig

    config: MotionConfig
    bank: np.ndarray | None
    background: np.ndarray
    feature_scale: float
    bank_info: dict[str, int]
    _index: KNNIndex | None

    def init_bank(self) -> None:
        """No memory bank yet (after `init_head`)."""
        self.bank = None
        self.background = np.zeros(self.config.size, np.float32)
        self.feature_scale = 1.0
        self.bank_info = {}
        self._index = None

    def deep_features(self, stacks: np.ndarray) -> np.ndarray:
        """uint8 N x H x W x 3 temporal stacks (at the model's size) -> float32 N x h x w x C deep features."""
        raise NotImplementedError

    def _deep_channels(self) -> int:
        """Channels of the deep part of a patch row."""
        raise NotImplementedError

    @property
    def fitted(self) -> bool:
        return self.bank is not None

    def tta_override(self, views: Sequence[str] | None) -> tuple[str, ...] | None:
        """None for no views or identity only; flips are refused: the memory bank holds each patch with
        its position in the fixed camera's frame and its motion direction, so a flipped frame puts
        the background where the bank never saw it and reverses every velocity."""
        if views is None or tuple(views) == ("identity",):
            return None
        raise OddspotError("--tta does not apply to the motion model: its memory bank ties patches to their place in the "
                           "fixed camera's view and their direction of motion, which a flip changes; use --tta model or none")

    @property
    def index(self) -> KNNIndex:
        if self.bank is None:
            raise OddspotError("the motion detector is not fitted; run fit on training videos first")
        if self._index is None:
            self._index = KNNIndex(self.bank)
        return self._index

    def motion_features(self, grey: np.ndarray, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Deep features (N x h x w x C) and block-matching flow (N x h x w x 2) of the frames `idx`."""
        cfg = self.config
        deep, flow = [], []
        for s in range(0, len(idx), cfg.batch_size):
            part = idx[s : s + cfg.batch_size]
            feats = self.deep_features(stacks_from_grey(grey, cfg.gap, part))
            deep.append(feats)
            hw = feats.shape[1:3]
            if cfg.flow_weight > 0:
                trio = tuple(grey[np.clip(part - k * cfg.flow_step, 0, None)].astype(np.float32) for k in (2, 1, 0))
                fg = np.abs(trio[2] - self.background) > cfg.foreground_threshold
                flow.append(block_flow(trio, fg, hw, cfg.max_shift))
            else:
                flow.append(np.zeros((len(part), *hw, 2), np.float32))
        return np.concatenate(deep), np.concatenate(flow)

    def _rows(self, deep: np.ndarray, flow: np.ndarray) -> np.ndarray:
        """Patch rows: deep features, flow in units of `max_shift` and position in units of the frame,
        the last two scaled by their weights times the typical deep-feature length (unit-free weights)."""
        cfg = self.config
        n, h, w, c = deep.shape
        ys = (np.arange(h, dtype=np.float32) + 0.5) / h
        xs = (np.arange(w, dtype=np.float32) + 0.5) / w
        pos = np.stack(np.meshgrid(ys, xs, indexing="ij"), -1) * (cfg.position_weight * self.feature_scale)
        span = np.array([max(cfg.max_shift[0], 1), cfg.max_shift[1]], dtype=np.float32)
        vel = flow / span * (cfg.flow_weight * self.feature_scale)
        rows = np.concatenate([deep, vel, np.broadcast_to(pos, (n, h, w, 2))], axis=-1, dtype=np.float32)
        return rows.reshape(-1, c + 4)

    def _score_frames(self, frames: np.ndarray, with_maps: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        index = self.index
        cfg = self.config
        n = frames.shape[0]
        grey = to_grey(frames)
        patch_maps = []
        for s in range(0, n, 4 * cfg.batch_size):
            idx = np.arange(s, min(n, s + 4 * cfg.batch_size))
            deep, flow = self.motion_features(grey, idx)
            dist, _ = index.search(self._rows(deep, flow), cfg.k)
            patch_maps.append(dist.mean(axis=1).reshape(deep.shape[:3]))
        patches = np.concatenate(patch_maps)
        scores = patches.reshape(n, -1).max(axis=1).astype(np.float64)
        maps = self._upsample(patches) if with_maps else None
        return scores, maps

    def _upsample(self, patches: np.ndarray) -> np.ndarray:
        """Patch scores N x h x w -> float32 maps at frame size: bilinear, then a Gaussian of `map_sigma` pixels
        (reflected edges, as scipy.ndimage.gaussian_filter)."""
        _, h, w = patches.shape
        sigma = float(self.config.map_sigma)
        my = _map_matrix(h, self.config.size[0], sigma)
        mx = _map_matrix(w, self.config.size[1], sigma)
        return np.ascontiguousarray(my @ np.asarray(patches, dtype=np.float32) @ mx.T)

    def _tensors(self) -> dict[str, Any]:
        return {"bank": self.bank, "background": self.background}

    def _load_tensors(self, record: Record) -> None:
        where = f"{record.source}/{TENSORS_FILE}"
        check_tensor_names(record, {"bank", "background"})
        bank = record.tensor("bank", ndim=2, dtype=np.float32)
        width = self._deep_channels() + 4
        if bank.shape[0] < 1 or bank.shape[1] != width:
            raise OddspotError(f"{where}: tensor 'bank' has shape {bank.shape}, expected (rows >= 1, {width}) "
                               "for this configuration; refit the model")
        if self.bank_info.get("bank", bank.shape[0]) != bank.shape[0]:
            raise OddspotError(f"{where}: tensor 'bank' has {bank.shape[0]} rows, but state.bank says "
                               f"{self.bank_info['bank']}; the folder mixes parts of different models, refit it")
        background = record.tensor("background", ndim=2, dtype=np.float32)
        if background.shape != tuple(self.config.size):
            raise OddspotError(f"{where}: tensor 'background' has shape {background.shape}, expected "
                               f"{tuple(self.config.size)} (the model's frame size); refit the model")
        self.bank = np.array(bank, dtype=np.float32)
        self.background = np.array(background, dtype=np.float32)
        self._index = None

    def _state(self) -> dict[str, Any]:
        return {"feature_scale": self.feature_scale, **self.bank_info}

    def _load_state(self, state: dict[str, Any], source: str) -> None:
        loaded = read_fields(MotionState, {"patches": 0, "bank": 0, **state}, source)
        self.feature_scale = loaded.feature_scale
        self.bank_info = {"patches": loaded.patches, "bank": loaded.bank} if loaded.bank else {}


__all__ = ["LUMA", "MotionConfig", "MotionHead", "MotionState", "block_flow", "stacks_from_grey", "temporal_stacks",
           "to_grey"]
