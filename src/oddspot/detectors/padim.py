"""PaDiM (Defard et al., 2020): one Gaussian per feature-map position, scored by Mahalanobis distance.

Features from up to four backbone layers are brought to the grid of the second layer (the first
when there is one) and concatenated; a seeded random subset of channels is kept (the indices are
saved). Means and covariances (+ regularization x I) are accumulated in float64 over training
batches, inverted for all positions at once, and a test patch's score is its Mahalanobis distance
to the Gaussian of its position. Saved as one run folder: tensors `mean` (P x d), `inv_cov`
(P x d x d) and `channels` (d) of model.safetensors. Scoring after the features is
`PaDiMHead`'s, shared with the exported runtime.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import lru_cache
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from oddspot.detectors.backbones import config_backbone
from oddspot.detectors.base import ImageLike, batches, images_of, make_config
from oddspot.detectors.padim_head import PaDiMConfig, PaDiMHead, select_channels
from oddspot.errors import OddspotError
from oddspot.features import Backbone, FeatureExtractor
from oddspot.runs.contract import Record
from oddspot.runs.model import RunModel


@lru_cache(maxsize=32)
def _pool_matrix(n_in: int, n_out: int) -> np.ndarray:
    """n_out x n_in float32 matrix of 1-D adaptive average pooling (bins floor(i n/m) .. ceil((i+1) n/m))."""
    m = np.zeros((n_out, n_in), np.float32)
    for i in range(n_out):
        lo, hi = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
        m[i, lo:hi] = 1.0 / (hi - lo)
    return m


def align(f: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """N x C x H x W -> N x C x grid: adaptive average pooling down, bilinear up.

    Adaptive pooling by a whole factor is plain average pooling; any other reduction is the same
    bins as two matrix products. Both export to ONNX with static shapes (adaptive pooling does not).
    """
    if tuple(f.shape[-2:]) == tuple(grid):
        return f
    if f.shape[-1] <= grid[-1]:
        return F.interpolate(f, size=grid, mode="bilinear", align_corners=False)
    (h, w), (gh, gw) = (int(v) for v in f.shape[-2:]), grid
    if h % gh == 0 and w % gw == 0:
        return F.avg_pool2d(f, (h // gh, w // gw))
    my = torch.from_numpy(_pool_matrix(h, gh)).to(f.device, f.dtype)
    mx = torch.from_numpy(_pool_matrix(w, gw)).to(f.device, f.dtype)
    return torch.matmul(torch.matmul(my, f), mx.T)


class PaDiM(PaDiMHead, RunModel):
    """PaDiM detector: `fit(images)`, `predict(images)`, `save(folder)`, `PaDiM.load(folder)`.

    `postprocess` is the calibration fitted on validation data (None until one is fitted).
    `backbone` is a `Backbone` to share (it must be the one the config names) or a backbone name.
    """

    def __init__(self, config: PaDiMConfig | None = None, backbone: Backbone | str | None = None,
                 device: str | None = None, **options: Any) -> None:
        if isinstance(backbone, str):  # a backbone name is the config option; a Backbone is shared as is
            options, backbone = {**options, "backbone": backbone}, None
        self.config = make_config(PaDiMConfig, config, options, "PaDiM")
        self.config, self.backbone = config_backbone(self.config, backbone, device)
        self.extractor = FeatureExtractor(self.backbone, self.config.layers)
        self.set_fitted(None, None, None, {}, None)

    # features ---------------------------------------------------------------------------------
    def _preprocess(self, batch: list[np.ndarray]) -> torch.Tensor:
        return self.backbone.preprocess_batch(batch, self.config.image_size, self.config.batch_size)

    def _channel_count(self) -> int:
        """Channels of the configured layers together, from one small probe image through the backbone."""
        feats = self.extractor(self.backbone.preprocess(np.zeros((1, 32, 32, 3), np.uint8), 32))
        return int(sum(f.shape[1] for f in feats.values()))

    def trunk_features(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed batch -> N x h x w x d features at the kept channels (the exported graph)."""
        feats = self.extractor(x)
        layers = self.config.layers
        grid = tuple(int(v) for v in feats[layers[1] if len(layers) > 1 else layers[0]].shape[-2:])  # static in the graph
        x = torch.cat([align(feats[name], grid) for name in layers], 1)
        if self.channels is None:
            raise OddspotError("PaDiM is not fitted; call fit() or load a saved model")
        if int(self.channels.max()) >= x.shape[1]:
            raise OddspotError(f"the model keeps channel {int(self.channels.max())}, but layers {list(layers)} of "
                               f"{self.config.backbone} have {x.shape[1]}; use the backbone the model was fitted with")
        x = x[:, torch.from_numpy(self.channels).to(x.device)]
        return x.permute(0, 2, 3, 1).float().contiguous()

    @torch.no_grad()
    def patch_features(self, batch: list[np.ndarray]) -> np.ndarray:
        """Images -> float32 N x h x w x d features (numpy), the batch padded to `batch_size`."""
        return self.trunk_features(self._preprocess(batch)).cpu().numpy()

    # fit --------------------------------------------------------------------------------------
    def fit(self, images: Sequence[ImageLike]) -> PaDiM:
        """Fit one Gaussian per position from normal images, streaming sums in float64."""
        images = images_of(images)
        if len(images) < 2:
            raise OddspotError("PaDiM.fit needs at least two normal images")
        self.set_fitted(None, None, select_channels(self._channel_count(), self.config), {}, None)
        total = outer = None
        grid = (0, 0)
        for _, batch in batches(images, self.config.batch_size, "features"):
            feats = self.patch_features(batch)[: len(batch)]
            grid = feats.shape[1:3]
            x = torch.from_numpy(feats).double().flatten(1, 2)
            s, o = x.sum(0), torch.einsum("npi,npj->pij", x, x)
            total, outer = (s, o) if total is None else (total + s, outer + o)
        n = len(images)
        mean = total / n
        cov = (outer - n * torch.einsum("pi,pj->pij", mean, mean)) / (n - 1)
        cov += self.config.regularization * torch.eye(cov.shape[-1], dtype=cov.dtype)
        state = {"n_train_images": n, "grid": [int(grid[0]), int(grid[1])], "n_features": int(self.channels.size)}
        # contiguous, as a loaded model's are (linalg.inv can return transposed strides; products would round differently)
        self.set_fitted(np.ascontiguousarray(mean.float().numpy()), np.ascontiguousarray(torch.linalg.inv(cov).float().numpy()),
                        self.channels, state, None)
        return self

    # persistence ------------------------------------------------------------------------------
    @classmethod
    def from_record(cls, record: Record, backbone: Backbone | None = None, device: str | None = None) -> PaDiM:
        """Rebuild a saved PaDiM; tensor shapes must agree with the stored grid and channel count."""
        config, mean, inv_cov, channels, state, postprocess = cls.read_record(record)
        model = cls(config, backbone=backbone, device=device)
        total = model._channel_count()
        if int(channels.max()) >= total:
            raise OddspotError(f"{record.source}: tensor 'channels' holds channel {int(channels.max())}, but layers "
                               f"{list(config.layers)} of {config.backbone} have {total}; refit the model")
        model.set_fitted(mean, inv_cov, channels, state, postprocess)
        return model


__all__ = ["PaDiM", "PaDiMConfig"]
