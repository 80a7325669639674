"""PaDiM without its network: the Gaussians per position, Mahalanobis scoring and maps (numpy; no torch).

`PaDiMHead.predict` takes features at the kept channels from `patch_features(batch)`, which a
subclass provides: `detectors.padim.PaDiM` runs the backbone in torch, the exported runtime
(`oddspot.runtime.padim`) runs the same trunk on OpenVINO or ONNX Runtime. Everything after the
features (Mahalanobis distances, maps, image scores, calibration) is this one code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, ClassVar

import numpy as np

from oddspot.calibration import Calibration
from oddspot.configs import check_range, from_mapping
from oddspot.detectors.backbone_choice import BACKBONE_ADDED_FIELDS, resolve_backbone
from oddspot.detectors.base import (
    TASK, batches, ImageLike, Prediction, check_shape, display_state, finish, images_of, record_postprocess, state_int,
    where,
)
from oddspot.errors import OddspotError
from oddspot.imaging import anomaly_maps
from oddspot.runs.contract import Record


# Feature layers per backbone family (the PaDiM paper: ResNet layer1..layer3).
DEFAULT_LAYERS = {"lite": ("stage2", "stage3", "stage5"), "resnet": ("layer1", "layer2", "layer3")}


@dataclass
class PaDiMConfig:
    """Settings of a PaDiM model; every field is saved with the model."""

    ADDED_FIELDS: ClassVar[dict[str, Any]] = BACKBONE_ADDED_FIELDS

    backbone: str = "efficientnet_lite0"
    weights: str | None = None  # a weights file or URL for the backbone (None: its own offline weights)
    weights_sha256: str | None = None  # recorded when the model is built on `weights`
    layers: tuple[str, ...] | None = None  # None: the backbone's default (DEFAULT_LAYERS), stored explicitly
    image_size: int | None = None  # None: the backbone's default input size, stored explicitly
    n_features: int = 100
    regularization: float = 0.01
    blur_sigma: float = 4.0
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        resolve_backbone(self, DEFAULT_LAYERS)
        if not 1 <= len(self.layers) <= 4 or not all(self.layers):
            raise OddspotError(f"layers must name one to four backbone layers, got {list(self.layers)}")
        check_range("image_size", self.image_size, 32, 2048)
        check_range("n_features", self.n_features, 1, 4096)
        check_range("regularization", self.regularization, 0.0, 1000.0, low_open=True)
        check_range("blur_sigma", self.blur_sigma, 0.0, 64.0)
        check_range("batch_size", self.batch_size, 1, 1024)
        check_range("seed", self.seed, 0, 2**32 - 1)


def select_channels(total: int, config: PaDiMConfig) -> np.ndarray:
    """The seeded random subset of `config.n_features` of the layers' `total` channels, sorted (int64)."""
    if config.n_features > total:
        raise OddspotError(f"n_features {config.n_features} exceeds the {total} channels of layers {list(config.layers)}")
    rng = np.random.default_rng(config.seed)
    return np.sort(rng.choice(total, config.n_features, replace=False)).astype(np.int64)


class PaDiMHead:
    """Scores images from features at the kept channels against one Gaussian per grid position."""

    task = TASK
    kind = "padim"
    config_class = PaDiMConfig

    config: PaDiMConfig
    channels: np.ndarray | None
    mean: np.ndarray | None
    inv_cov: np.ndarray | None
    state: dict[str, Any]
    postprocess: Calibration | None

    def patch_features(self, batch: list[np.ndarray]) -> np.ndarray:
        """Up to `config.batch_size` images -> float32 N x h x w x d features at the kept channels (N >= len(batch))."""
        raise NotImplementedError

    def mahalanobis(self, feats: np.ndarray) -> np.ndarray:
        """N x h x w x d features -> N x h x w Mahalanobis distances to each position's Gaussian (float32).

        Each image is computed on its own (P vector-matrix products; reading inv_cov bounds the
        time), so a distance never depends on the images it is scored with.
        """
        n, h, w, d = feats.shape
        mean = np.asarray(self.mean, dtype=np.float32)
        inv_cov = np.asarray(self.inv_cov, dtype=np.float32)
        out = np.empty((n, h * w), np.float32)
        for i in range(n):
            diff = feats[i].reshape(h * w, d).astype(np.float32) - mean
            t = np.einsum("pi,pij->pj", diff, inv_cov)
            out[i] = np.sqrt(np.maximum(np.einsum("pd,pd->p", t, diff), 0.0))
        return out.reshape(n, h, w)

    def predict(self, images: Sequence[ImageLike], maps: bool = True) -> Prediction:
        """Mahalanobis map per image (upsampled, blurred), image score = max of the map at the model's input size.

        With a calibration (`postprocess`), also normalized scores, decisions and (with maps) masks.
        """
        images = images_of(images)
        if self.mean is None:
            raise OddspotError("PaDiM is not fitted; call fit() or load a saved model")
        cfg = self.config
        positions, d = self.mean.shape
        scores: list[np.ndarray] = []
        out_maps: list[np.ndarray] | None = [] if maps else None
        for _, batch in batches(images, self.config.batch_size, "scoring"):
            feats = self.patch_features(batch)[: len(batch)]
            n, h, w, c = feats.shape
            if h * w != positions:
                raise OddspotError(f"image_size {cfg.image_size} gives {h * w} grid positions, but the model holds "
                                   f"{positions}; use the backbone the model was fitted with")
            if c != d:
                raise OddspotError(f"the network gives {c} features per position, but the model holds {d}; "
                                   "use the backbone the model was fitted with")
            grid = self.mahalanobis(feats)
            full = anomaly_maps(grid, cfg.image_size, cfg.blur_sigma, [(cfg.image_size, cfg.image_size)] * n)
            scores.append(np.array([m.max() for m in full], dtype=np.float32))
            if out_maps is not None:
                out_maps.extend(anomaly_maps(grid, cfg.image_size, cfg.blur_sigma, [img.shape[:2] for img in batch]))
        return finish(Prediction(np.concatenate(scores).astype(np.float64), out_maps), self.postprocess)

    def to_record(self) -> Record:
        """Config, fitted statistics, calibration, and the Gaussians and channel indices as tensors."""
        if self.mean is None:
            raise OddspotError("cannot save an unfitted PaDiM; call fit() first")
        tensors = {"mean": np.ascontiguousarray(self.mean, dtype=np.float32),
                   "inv_cov": np.ascontiguousarray(self.inv_cov, dtype=np.float32),
                   "channels": np.asarray(self.channels, dtype=np.int64)}
        return Record(TASK, self.kind, asdict(self.config), dict(self.state),
                      self.postprocess.to_dict() if self.postprocess is not None else None, tensors)

    @staticmethod
    def read_record(record: Record) -> tuple[PaDiMConfig, np.ndarray, np.ndarray, np.ndarray, dict[str, Any],
                                             Calibration | None]:
        """Config, mean, inv_cov, channels, state and calibration of a saved PaDiM; shapes must agree with the state."""
        config = from_mapping(PaDiMConfig, record.config, f"{where(record)}: config", complete=True)
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
        return (config, np.ascontiguousarray(mean), np.ascontiguousarray(inv_cov), channels.copy(), dict(state),
                record_postprocess(record))

    def set_fitted(self, mean: np.ndarray, inv_cov: np.ndarray, channels: np.ndarray, state: dict[str, Any],
                   postprocess: Calibration | None) -> None:
        """Install fitted Gaussians (P x d mean, P x d x d inverse covariances), the kept channels, state and calibration."""
        self.mean, self.inv_cov, self.channels = mean, inv_cov, channels
        self.state = state
        self.postprocess = postprocess


__all__ = ["PaDiMConfig", "PaDiMHead", "select_channels"]
