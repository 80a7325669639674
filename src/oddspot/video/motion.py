"""Motion-aware detector: PatchCore-style nearest-neighbour scoring of motion features per patch.

Each patch of frame t (on the grid of the deepest backbone layer) is described by three cues:

- appearance in motion: backbone features (two layers, 3 x 3 local averaging, PatchCore style)
  of a "temporal colour" stack, the grey frames t - 2g, t - g and t as red, green and blue. A
  still background stays grey; a moving object leaves coloured copies whose order and spacing
  follow its direction and speed;
- velocity: the patch's displacement per `flow_step` frames from 3-frame block matching of the
  foreground (pixels that differ from the per-pixel median of the training frames: the camera
  is fixed), in units of `max_shift`, times `flow_weight`;
- position: the patch's (row, column) in the frame, times `position_weight`, so that walking
  left can be normal on one walkway and anomalous on the other.

Velocity and position are scaled by the median length of the training appearance features, so
their weights are unit-free. Rows are compared with a memory bank of training rows (greedy
coreset, exact L2 search); patch distances form the anomaly map and a frame's score is its
largest patch distance. Frames before the start of a video are replaced by its first frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from oddspot.configs import check_range
from oddspot.errors import OddspotError
from oddspot.progress import track
from oddspot.runs.contract import TENSORS_FILE, Record
from oddspot.video.base import VideoDetector, check_common, check_tensor_names
from oddspot.video.postprocess import read_fields

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
    frames: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    foreground: torch.Tensor,
    grid: tuple[int, int],
    max_shift: tuple[int, int],
) -> torch.Tensor:
    """Per-cell velocity (rows, columns per step) of the foreground, by 3-frame block matching.

    `frames` are grey N x H x W images at t - 2s, t - s and t; `foreground` (N x H x W, bool) marks
    the pixels of frame t that differ from the background. For every displacement d within
    +-max_shift the cost |I_t(x) - I_{t-s}(x - d)| + |I_t(x) - I_{t-2s}(x - 2d)| (constant
    velocity) is summed over each cell's foreground pixels, all displacements at once on the
    foreground pixels only; each cell takes its cheapest d (ties to the smaller one). Cells whose
    foreground covers under 5% of them get (0, 0). Returns N x gh x gw x 2.
    """
    prev2, prev, cur = (_blur(f) for f in frames)
    n, h, w = cur.shape
    gh, gw = grid
    my, mx = max_shift
    dy, dx = torch.meshgrid(torch.arange(-my, my + 1), torch.arange(-mx, mx + 1), indexing="ij")
    dy, dx = dy.reshape(-1), dx.reshape(-1)
    fi, ys, xs = foreground.nonzero(as_tuple=True)
    c = cur[fi, ys, xs][:, None]
    fi2 = fi[:, None]
    y1, x1 = (ys[:, None] - dy).clamp(0, h - 1), (xs[:, None] - dx).clamp(0, w - 1)
    y2, x2 = (ys[:, None] - 2 * dy).clamp(0, h - 1), (xs[:, None] - 2 * dx).clamp(0, w - 1)
    cost = (c - prev[fi2, y1, x1]).abs() + (c - prev2[fi2, y2, x2]).abs()
    cell = fi * (gh * gw) + (ys * gh // h) * gw + (xs * gw // w)
    total = torch.zeros((n * gh * gw, dy.numel())).index_add_(0, cell, cost)
    count = torch.bincount(cell, minlength=n * gh * gw).float()
    total += 1e-3 * (dy.abs() + dx.abs()).float()[None] * count[:, None]
    best = total.argmin(dim=1)
    flow = torch.stack([dy[best], dx[best]], dim=-1).float()
    flow = flow * (count >= 0.05 * (h * w) / (gh * gw))[:, None]
    return flow.reshape(n, gh, gw, 2)


def _blur(x: torch.Tensor) -> torch.Tensor:
    """3 x 3 binomial blur of N x H x W images (edges replicated)."""
    k = torch.tensor([1.0, 2.0, 1.0]) / 4.0
    kernel = (k[:, None] * k[None, :])[None, None]
    return F.conv2d(F.pad(x[:, None], (1, 1, 1, 1), mode="replicate"), kernel)[:, 0]


class MotionDetector(VideoDetector):
    """PatchCore-style nearest-neighbour scoring of temporal-stack features (see module docstring).

    `MotionDetector(MotionConfig(...))` or `MotionDetector(coreset_ratio=0.25, ...)`; `device` is where
    the backbone runs (flow, memory bank and search stay on the CPU).
    """

    kind = "motion"
    config_class = MotionConfig

    def __init__(self, config: MotionConfig | None = None, *, device: str | torch.device = "cpu", **options: Any) -> None:
        super().__init__(config, device=device, **options)
        self.config: MotionConfig
        from oddspot.features import FeatureExtractor, build_backbone

        self.backbone = build_backbone(self.config.backbone, device=self.device)
        self.extractor = FeatureExtractor(self.backbone, list(self.config.layers))
        self.bank: np.ndarray | None = None
        self.background = torch.zeros(self.config.size)
        self.feature_scale: float = 1.0
        self.bank_info: dict[str, int] = {}
        self._index = None

    @property
    def fitted(self) -> bool:
        return self.bank is not None

    def _patch_features(self, grey: np.ndarray, idx: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Deep features (N x h x w x C) and block-matching flow (N x h x w x 2) of the frames `idx`."""
        cfg = self.config
        deep, flow = [], []
        for s in range(0, len(idx), cfg.batch_size):
            part = idx[s : s + cfg.batch_size]
            stacks = stacks_from_grey(grey, cfg.gap, part)
            feats = self.extractor(self.backbone.preprocess(stacks, cfg.size))
            maps = list(feats.values())
            hw = min((tuple(m.shape[-2:]) for m in maps), key=lambda t: t[0] * t[1])
            parts = []
            for m in maps:
                m = m.float()
                if cfg.pool > 1:
                    m = F.avg_pool2d(m, cfg.pool, stride=1, padding=cfg.pool // 2, count_include_pad=False)
                parts.append(F.adaptive_avg_pool2d(m, hw) if tuple(m.shape[-2:]) != hw else m)
            deep.append(torch.cat(parts, dim=1).permute(0, 2, 3, 1).contiguous().cpu())
            if cfg.flow_weight > 0:
                trio = tuple(torch.from_numpy(grey[np.clip(part - k * cfg.flow_step, 0, None)]).float() for k in (2, 1, 0))
                fg = (trio[2] - self.background).abs() > cfg.foreground_threshold
                flow.append(block_flow(trio, fg, hw, cfg.max_shift))
            else:
                flow.append(torch.zeros((len(part), *hw, 2)))
        return torch.cat(deep), torch.cat(flow)

    def _rows(self, deep: torch.Tensor, flow: torch.Tensor) -> np.ndarray:
        """Patch rows: deep features, flow in units of `max_shift` and position in units of the frame,
        the last two scaled by their weights times the typical deep-feature length (unit-free weights)."""
        cfg = self.config
        n, h, w, c = deep.shape
        ys = (torch.arange(h, dtype=torch.float32) + 0.5) / h
        xs = (torch.arange(w, dtype=torch.float32) + 0.5) / w
        pos = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1) * (cfg.position_weight * self.feature_scale)
        span = torch.tensor([max(cfg.max_shift[0], 1), cfg.max_shift[1]], dtype=torch.float32)
        vel = flow / span * (cfg.flow_weight * self.feature_scale)
        rows = torch.cat([deep, vel, pos.expand(n, h, w, 2)], dim=-1)
        return rows.reshape(-1, c + 4).numpy()

    def _fit_model(self, segments: list[np.ndarray]) -> None:
        from oddspot.detectors.memory_bank import greedy_coreset
        from oddspot.neighbors import KNNIndex

        cfg = self.config
        greys = [to_grey(seg) for seg in segments]
        every = np.concatenate(greys)
        pick = np.linspace(0, every.shape[0] - 1, min(every.shape[0], 256)).round().astype(int)
        # The camera is fixed: the per-pixel median of training frames is the empty scene.
        self.background = torch.from_numpy(np.median(every[pick], axis=0).astype(np.float32))
        deep, flow = [], []
        for seg in track(segments, "extracting training motion features"):
            d, f = self._patch_features(to_grey(seg), np.arange(0, seg.shape[0], cfg.train_step))
            deep.append(d)
            flow.append(f)
        deep_all, flow_all = torch.cat(deep), torch.cat(flow)
        self.feature_scale = float(deep_all.reshape(-1, deep_all.shape[-1]).norm(dim=1).median())
        rows = self._rows(deep_all, flow_all)
        keep = greedy_coreset(rows, cfg.coreset_ratio, seed=cfg.seed)
        self.bank = np.ascontiguousarray(rows[keep], dtype=np.float32)
        self._index = KNNIndex(self.bank)
        self.bank_info = {"patches": int(rows.shape[0]), "bank": int(self.bank.shape[0])}

    def _score_frames(self, frames: np.ndarray, with_maps: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        if self.bank is None:
            raise OddspotError("the motion detector is not fitted; run fit on training videos first")
        if self._index is None:
            from oddspot.neighbors import KNNIndex

            self._index = KNNIndex(self.bank)
        cfg = self.config
        n = frames.shape[0]
        grey = to_grey(frames)
        patch_maps = []
        for s in range(0, n, 4 * cfg.batch_size):
            idx = np.arange(s, min(n, s + 4 * cfg.batch_size))
            deep, flow = self._patch_features(grey, idx)
            dist, _ = self._index.search(self._rows(deep, flow), cfg.k)
            patch_maps.append(dist.mean(axis=1).reshape(deep.shape[:3]))
        patches = np.concatenate(patch_maps)
        scores = patches.reshape(n, -1).max(axis=1).astype(np.float64)
        maps = self._upsample(patches) if with_maps else None
        return scores, maps

    def _upsample(self, patches: np.ndarray) -> np.ndarray:
        """Patch scores N x h x w -> maps at frame size, blurred with a Gaussian of `map_sigma` pixels."""
        from scipy.ndimage import gaussian_filter

        up = F.interpolate(torch.from_numpy(patches[:, None].astype(np.float32)), size=self.config.size, mode="bilinear", align_corners=False)[:, 0].numpy()
        if self.config.map_sigma > 0:
            up = gaussian_filter(up, sigma=(0, self.config.map_sigma, self.config.map_sigma))
        return up

    def _deep_channels(self) -> int:
        """Channels of the deep part of a patch row, from one probe frame through the backbone."""
        probe = self.extractor(self.backbone.preprocess(np.zeros((1, *self.config.size, 3), np.uint8), self.config.size))
        return int(sum(m.shape[1] for m in probe.values()))

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
        self.background = torch.from_numpy(background.copy())
        self._index = None

    def _state(self) -> dict[str, Any]:
        return {"feature_scale": self.feature_scale, **self.bank_info}

    def _load_state(self, state: dict[str, Any], source: str) -> None:
        loaded = read_fields(MotionState, {"patches": 0, "bank": 0, **state}, source)
        self.feature_scale = loaded.feature_scale
        self.bank_info = {"patches": loaded.patches, "bank": loaded.bank} if loaded.bank else {}
