"""PatchCore (Roth et al., 2022): a coreset memory bank of normal patch features, scored by kNN distance.

Patch features come from two backbone layers, a finer and a coarser one (e.g. stride 8 and 16),
locally averaged over 3 x 3 neighbourhoods, brought to the first layer's grid and concatenated. A greedy k-center coreset keeps a
fraction of the training patches. A test patch's score is its distance to the nearest memory
entries; the image score is the maximum patch score, optionally reweighted as in the paper.
Saved as one run folder: the memory bank is the tensor `memory_bank` of model.safetensors.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from oddspot.detectors.backbones import config_backbone
from oddspot.detectors.base import ImageLike, batches, images_of, make_config
from oddspot.detectors.memory_bank import greedy_coreset
from oddspot.detectors.patchcore_head import SCORINGS, PatchCoreConfig, PatchCoreHead
from oddspot.errors import OddspotError
from oddspot.features import Backbone, FeatureExtractor
from oddspot.runs.contract import Record
from oddspot.runs.model import RunModel


class PatchCore(PatchCoreHead, RunModel):
    """PatchCore detector: `fit(images)`, `predict(images)`, `save(folder)`, `PatchCore.load(folder)`.

    `postprocess` is the calibration fitted on validation data (None until one is fitted); with
    it, `predict` also returns normalized scores, decisions and defect masks. Scoring after the
    features is `PatchCoreHead`'s, shared with the exported runtime. `backbone` is a `Backbone` to
    share (it must be the one the config names) or a backbone name (the config option).
    """

    def __init__(self, config: PatchCoreConfig | None = None, backbone: Backbone | str | None = None,
                 device: str | None = None, **options: Any) -> None:
        if isinstance(backbone, str):  # a backbone name is the config option; a Backbone is shared as is
            options, backbone = {**options, "backbone": backbone}, None
        self.config = make_config(PatchCoreConfig, config, options, "PatchCore")
        self.config, self.backbone = config_backbone(self.config, backbone, device)
        self.extractor = FeatureExtractor(self.backbone, self.config.layers)
        self.memory_bank: np.ndarray | None = None
        self.state: dict[str, Any] = {}
        self.postprocess = None
        self._index = None

    # features ---------------------------------------------------------------------------------
    def _preprocess(self, batch: list[np.ndarray]) -> torch.Tensor:
        return self.backbone.preprocess_batch(batch, self.config.image_size, self.config.batch_size)

    def trunk_features(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed batch -> N x h x w x C patch features on the first layer's grid (the exported graph)."""
        feats = self.extractor(x)
        p = self.config.pool
        low, high = (F.avg_pool2d(feats[name], p, stride=1, padding=p // 2) for name in self.config.layers)
        if high.shape[-2:] != low.shape[-2:]:
            high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([low, high], dim=1).permute(0, 2, 3, 1).float().contiguous()

    @torch.no_grad()
    def patch_features(self, batch: list[np.ndarray]) -> np.ndarray:
        """Images -> float32 N x h x w x C patch features (numpy), the batch padded to `batch_size`."""
        return self.trunk_features(self._preprocess(batch)).cpu().numpy()

    # fit --------------------------------------------------------------------------------------
    def fit(self, images: Sequence[ImageLike]) -> PatchCore:
        """Build the memory bank from normal images (H x W x 3 uint8 each, or Samples)."""
        images = images_of(images)
        if len(images) == 0:
            raise OddspotError("PatchCore.fit needs at least one normal image")
        t0 = time.perf_counter()
        chunks = [self.patch_features(batch)[: len(batch)] for _, batch in batches(images, self.config.batch_size, "features")]
        feats = np.concatenate(chunks)
        grid = feats.shape[1:3]
        feats = feats.reshape(-1, feats.shape[-1])
        t1 = time.perf_counter()
        work: dict = {}
        picks = greedy_coreset(feats, self.config.coreset_ratio, seed=self.config.seed,
                               projection_dim=self.config.projection_dim, stats=work)
        t2 = time.perf_counter()
        bank = np.ascontiguousarray(feats[picks])
        self.set_fitted(bank, {
            "n_train_images": len(images),
            "n_train_patches": int(feats.shape[0]),
            "memory_bank_size": int(bank.shape[0]),
            "feature_dim": int(bank.shape[1]),
            "grid": [int(grid[0]), int(grid[1])],
            "seconds_features": round(t1 - t0, 3),
            "seconds_coreset": round(t2 - t1, 3),
            "coreset_distance_evaluations": int(work.get("distance_evaluations", 0)),
        }, None)
        return self

    # persistence ------------------------------------------------------------------------------
    @classmethod
    def from_record(cls, record: Record, backbone: Backbone | None = None, device: str | None = None) -> PatchCore:
        """Rebuild a saved PatchCore; the memory bank must agree with the stored state."""
        config, bank, state, postprocess = cls.read_record(record)
        model = cls(config, backbone=backbone, device=device)
        model.set_fitted(bank, state, postprocess)
        return model


__all__ = ["SCORINGS", "PatchCore", "PatchCoreConfig"]
