"""PaDiM (Defard et al., 2020): one Gaussian per feature-map position, scored by Mahalanobis distance.

Features from three backbone layers are brought to the stride-8 grid and concatenated; a seeded
random subset of channels is kept (the indices are saved). Means and covariances (+ 0.01 I) are
accumulated in float64 over training batches, inverted for all positions at once, and a test
patch's score is its Mahalanobis distance to the Gaussian of its position. Saved as one run
folder: tensors `mean` (P x d), `inv_cov` (P x d x d) and `channels` (d) of model.safetensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from oddspot.calibration import Calibration
from oddspot.configs import check_range
from oddspot.detectors.base import (
    TASK, ImageLike, Prediction, check_shape, display_state, finish, images_of, make_config, record_config,
    record_postprocess, state_int, where,
)
from oddspot.errors import OddspotError
from oddspot.features import Backbone, FeatureExtractor, build_backbone
from oddspot.imaging import anomaly_maps
from oddspot.progress import track
from oddspot.runs.contract import Record
from oddspot.runs.model import RunModel


@dataclass
class PaDiMConfig:
    """Settings of a PaDiM model; every field is saved with the model."""

    backbone: str = "efficientnet_lite0"
    layers: tuple[str, ...] = ("stage2", "stage3", "stage5")
    image_size: int = 224
    n_features: int = 100
    regularization: float = 0.01
    blur_sigma: float = 4.0
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if not 1 <= len(self.layers) <= 4 or not all(self.layers):
            raise OddspotError(f"layers must name one to four backbone layers, got {list(self.layers)}")
        if not self.backbone:
            raise OddspotError("backbone must name a backbone, e.g. efficientnet_lite0")
        check_range("image_size", self.image_size, 32, 2048)
        check_range("n_features", self.n_features, 1, 4096)
        check_range("regularization", self.regularization, 0.0, 1000.0, low_open=True)
        check_range("blur_sigma", self.blur_sigma, 0.0, 64.0)
        check_range("batch_size", self.batch_size, 1, 1024)
        check_range("seed", self.seed, 0, 2**32 - 1)


class PaDiM(RunModel):
    """PaDiM detector: `fit(images)`, `predict(images)`, `save(folder)`, `PaDiM.load(folder)`.

    `postprocess` is the calibration fitted on validation data (None until one is fitted).
    """

    task = TASK
    kind = "padim"
    config_class = PaDiMConfig

    def __init__(self, config: PaDiMConfig | None = None, backbone: Backbone | None = None,
                 device: str | None = None, **options: Any) -> None:
        self.config = make_config(PaDiMConfig, config, options, "PaDiM")
        self.backbone = backbone if backbone is not None else build_backbone(self.config.backbone, device=device)
        self.extractor = FeatureExtractor(self.backbone, self.config.layers)
        self.channels: np.ndarray | None = None
        self.mean: torch.Tensor | None = None
        self.inv_cov: torch.Tensor | None = None
        self.state: dict[str, Any] = {}
        self.postprocess: Calibration | None = None

    def _preprocess(self, batch: list[np.ndarray]) -> torch.Tensor:
        return self.backbone.preprocess_batch(batch, self.config.image_size, self.config.batch_size)

    def _channel_count(self) -> int:
        """Channels of the configured layers together, from one small probe image through the backbone."""
        feats = self.extractor(self.backbone.preprocess(np.zeros((1, 32, 32, 3), np.uint8), 32))
        return int(sum(f.shape[1] for f in feats.values()))

    def _features(self, batch: list[np.ndarray]) -> torch.Tensor:
        """B x P x d features (P grid positions, d selected channels) in float64, for the padded batch of B."""
        feats = self.extractor(self._preprocess(batch))
        grid = feats[self.config.layers[1]].shape[-2:] if len(self.config.layers) > 1 else None
        grid = grid or feats[self.config.layers[0]].shape[-2:]
        maps = []
        for name in self.config.layers:
            f = feats[name]
            if f.shape[-2:] != grid:
                f = F.adaptive_avg_pool2d(f, grid) if f.shape[-1] > grid[-1] else F.interpolate(f, size=grid, mode="bilinear", align_corners=False)
            maps.append(f)
        x = torch.cat(maps, 1).cpu()
        total = x.shape[1]
        if self.channels is None:
            if self.config.n_features > total:
                raise OddspotError(f"n_features {self.config.n_features} exceeds the {total} channels of layers {list(self.config.layers)}")
            rng = np.random.default_rng(self.config.seed)
            self.channels = np.sort(rng.choice(total, self.config.n_features, replace=False))
        elif self.channels.max(initial=-1) >= total:
            raise OddspotError(f"the model keeps channel {int(self.channels.max())}, but layers {list(self.config.layers)} of "
                               f"{self.config.backbone} have {total}; use the backbone the model was fitted with")
        x = x[:, torch.from_numpy(self.channels)]
        self._grid = tuple(int(g) for g in grid)
        return x.flatten(2).transpose(1, 2).double()

    def fit(self, images: Sequence[ImageLike]) -> PaDiM:
        """Fit one Gaussian per position from normal images, streaming sums in float64."""
        images = images_of(images)
        if len(images) < 2:
            raise OddspotError("PaDiM.fit needs at least two normal images")
        self.channels = None
        total = outer = None
        bs = self.config.batch_size
        for lo in track(range(0, len(images), bs), "features", total=-(-len(images) // bs)):
            x = self._features(images[lo:lo + bs])[: len(images[lo:lo + bs])]
            s, o = x.sum(0), torch.einsum("npi,npj->pij", x, x)
            total, outer = (s, o) if total is None else (total + s, outer + o)
        n = len(images)
        mean = total / n
        cov = (outer - n * torch.einsum("pi,pj->pij", mean, mean)) / (n - 1)
        cov += self.config.regularization * torch.eye(cov.shape[-1], dtype=cov.dtype)
        self.mean = mean.float()
        self.inv_cov = torch.linalg.inv(cov).float()
        self.state = {"n_train_images": n, "grid": list(self._grid), "n_features": int(self.channels.size)}
        self.postprocess = None
        return self

    def predict(self, images: Sequence[ImageLike], maps: bool = True) -> Prediction:
        """Mahalanobis map per image (upsampled, blurred), image score = max of the map.

        With a calibration (`postprocess`), also normalized scores, decisions and (with maps) masks.
        """
        images = images_of(images)
        if self.mean is None:
            raise OddspotError("PaDiM is not fitted; call fit() or load a saved model")
        cfg = self.config
        scores, out_maps = [], ([] if maps else None)
        for lo in track(range(0, len(images), cfg.batch_size), "scoring", total=-(-len(images) // cfg.batch_size)):
            batch = images[lo:lo + cfg.batch_size]
            feats = self._features(batch)
            if feats.shape[1] != self.mean.shape[0]:
                raise OddspotError(f"image_size {cfg.image_size} gives {feats.shape[1]} grid positions, but the model holds "
                                   f"{self.mean.shape[0]}; use the backbone the model was fitted with")
            diff = feats.float() - self.mean[None]
            dist = torch.einsum("npi,pij,npj->np", diff, self.inv_cov, diff).clamp_(min=0).sqrt_()
            grid = dist.view(dist.shape[0], *self._grid)[: len(batch)].numpy()
            full = anomaly_maps(grid, cfg.image_size, cfg.blur_sigma, [(cfg.image_size, cfg.image_size)] * len(batch))
            scores.append(np.array([m.max() for m in full], dtype=np.float32))
            if out_maps is not None:
                out_maps.extend(anomaly_maps(grid, cfg.image_size, cfg.blur_sigma, [img.shape[:2] for img in batch]))
        return finish(Prediction(np.concatenate(scores).astype(np.float64), out_maps), self.postprocess)

    def to_record(self) -> Record:
        """Config, fitted statistics, calibration, and the Gaussians and channel indices as tensors."""
        if self.mean is None:
            raise OddspotError("cannot save an unfitted PaDiM; call fit() first")
        tensors = {"mean": self.mean.numpy(), "inv_cov": self.inv_cov.numpy(), "channels": self.channels.astype(np.int64)}
        return Record(TASK, self.kind, asdict(self.config), dict(self.state),
                      self.postprocess.to_dict() if self.postprocess is not None else None, tensors)

    @classmethod
    def from_record(cls, record: Record, backbone: Backbone | None = None, device: str | None = None) -> PaDiM:
        """Rebuild a saved PaDiM; tensor shapes must agree with the stored grid and channel count."""
        config = record_config(PaDiMConfig, record)
        state = display_state(record.state, record)
        grid = state.get("grid")
        if (not isinstance(grid, list) or len(grid) != 2
                or not all(isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in grid)):
            raise OddspotError(f"{where(record)}: state.grid must be two positive integers, got {grid!r:.40}")
        d = state_int(record, state, "n_features")
        mean = record.tensor("mean", ndim=2, dtype=np.float32)
        inv_cov = record.tensor("inv_cov", ndim=3, dtype=np.float32)
        channels = record.tensor("channels", ndim=1, dtype=np.int64)
        positions = grid[0] * grid[1]
        check_shape(record, "channels", channels, (d,), "state.n_features")
        check_shape(record, "mean", mean, (positions, d), "state.grid x state.n_features")
        check_shape(record, "inv_cov", inv_cov, (positions, d, d), "state.grid x state.n_features^2")
        if d < 1 or channels.min() < 0 or np.unique(channels).size != d:
            raise OddspotError(f"{record.source}: tensor 'channels' must hold distinct channel indices >= 0; refit the model")
        postprocess = record_postprocess(record)
        model = cls(config, backbone=backbone, device=device)
        total = model._channel_count()
        if int(channels.max()) >= total:
            raise OddspotError(f"{record.source}: tensor 'channels' holds channel {int(channels.max())}, but layers "
                               f"{list(config.layers)} of {config.backbone} have {total}; refit the model")
        model.mean, model.inv_cov = torch.from_numpy(mean.copy()), torch.from_numpy(inv_cov.copy())
        model.channels = channels.copy()
        model.state = dict(state)
        model._grid = tuple(grid)
        model.postprocess = postprocess
        return model
