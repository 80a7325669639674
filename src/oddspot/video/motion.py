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

Everything after the backbone (stacks, flow, rows, search, maps, the record) is
`video.motion_head.MotionHead`'s, shared with the exported runtime; this module adds the
backbone's trunk (`trunk_features`, the exported graph's body) and fitting.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from oddspot.progress import track
from oddspot.video.base import VideoDetector
from oddspot.video.motion_head import (
    LUMA, MAX_GAP, MAX_WEIGHT, MotionConfig, MotionHead, MotionState, stacks_from_grey, temporal_stacks, to_grey,
)
from oddspot.video.motion_head import block_flow as _block_flow


def block_flow(
    frames: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    foreground: torch.Tensor,
    grid: tuple[int, int],
    max_shift: tuple[int, int],
) -> torch.Tensor:
    """`video.motion_head.block_flow` on CPU torch tensors (N x H x W each): N x gh x gw x 2 float32."""
    flow = _block_flow(tuple(f.numpy() for f in frames), foreground.numpy(), grid, max_shift)  # type: ignore[arg-type]
    return torch.from_numpy(flow)


@lru_cache(maxsize=32)
def _pool_matrix(n_in: int, n_out: int) -> np.ndarray:
    """n_out x n_in float32 matrix of adaptive average pooling: row i averages [floor(i n_in / n_out), ceil((i+1) n_in / n_out))."""
    m = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, -((-(i + 1) * n_in) // n_out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def adaptive_average(x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """`F.adaptive_avg_pool2d(x, hw)` as two matrix products (ONNX has no adaptive pooling whose sizes do not divide)."""
    py = torch.from_numpy(_pool_matrix(x.shape[-2], hw[0])).to(x)
    px = torch.from_numpy(_pool_matrix(x.shape[-1], hw[1])).to(x)
    return torch.matmul(torch.matmul(py, x), px.t())


class MotionDetector(MotionHead, VideoDetector):
    """PatchCore-style nearest-neighbour scoring of temporal-stack features (see module docstring).

    `MotionDetector(MotionConfig(...))` or `MotionDetector(coreset_ratio=0.25, ...)`; `device` is where
    the backbone runs (flow, memory bank and search stay on the CPU).
    """

    def __init__(self, config: MotionConfig | None = None, *, device: str | torch.device = "cpu", **options: Any) -> None:
        super().__init__(config, device=device, **options)
        from oddspot.features import FeatureExtractor, build_backbone

        self.init_bank()
        self.backbone = build_backbone(self.config.backbone, device=self.device)
        self.extractor = FeatureExtractor(self.backbone, list(self.config.layers))

    def trunk_features(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed stacks N x 3 x H x W -> N x h x w x C deep features on the grid of the deepest layer
        (the exported graph's body): each layer locally averaged (`pool`), brought to that grid, concatenated."""
        cfg = self.config
        maps = list(self.extractor(x).values())
        hw = min((tuple(m.shape[-2:]) for m in maps), key=lambda t: t[0] * t[1])
        parts = []
        for m in maps:
            m = m.float()
            if cfg.pool > 1:
                m = F.avg_pool2d(m, cfg.pool, stride=1, padding=cfg.pool // 2, count_include_pad=False)
            parts.append(adaptive_average(m, hw) if tuple(m.shape[-2:]) != hw else m)
        return torch.cat(parts, dim=1).permute(0, 2, 3, 1).contiguous()

    @torch.no_grad()
    def deep_features(self, stacks: np.ndarray) -> np.ndarray:
        return self.trunk_features(self.backbone.preprocess(stacks, self.config.size)).cpu().numpy()

    def _fit_model(self, segments: list[np.ndarray]) -> None:
        from oddspot.detectors.memory_bank import greedy_coreset

        cfg = self.config
        greys = [to_grey(seg) for seg in segments]
        every = np.concatenate(greys)
        pick = np.linspace(0, every.shape[0] - 1, min(every.shape[0], 256)).round().astype(int)
        # The camera is fixed: the per-pixel median of training frames is the empty scene.
        self.background = np.median(every[pick], axis=0).astype(np.float32)
        deep, flow = [], []
        for grey in track(greys, "extracting training motion features"):
            d, f = self.motion_features(grey, np.arange(0, grey.shape[0], cfg.train_step))
            deep.append(d)
            flow.append(f)
        deep_all, flow_all = np.concatenate(deep), np.concatenate(flow)
        self.feature_scale = float(torch.from_numpy(deep_all.reshape(-1, deep_all.shape[-1])).norm(dim=1).median())
        rows = self._rows(deep_all, flow_all)
        keep = greedy_coreset(rows, cfg.coreset_ratio, seed=cfg.seed)
        self.bank = np.ascontiguousarray(rows[keep], dtype=np.float32)
        self._index = None
        self.bank_info = {"patches": int(rows.shape[0]), "bank": int(self.bank.shape[0])}

    def _deep_channels(self) -> int:
        """Channels of the deep part of a patch row, from one probe frame through the backbone."""
        probe = self.extractor(self.backbone.preprocess(np.zeros((1, *self.config.size, 3), np.uint8), self.config.size))
        return int(sum(m.shape[1] for m in probe.values()))


__all__ = ["LUMA", "MAX_GAP", "MAX_WEIGHT", "MotionConfig", "MotionDetector", "MotionState", "block_flow",
           "stacks_from_grey", "temporal_stacks", "to_grey"]
