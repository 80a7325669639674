"""PatchCore (Roth et al., 2022): a coreset memory bank of normal patch features, scored by kNN distance.

Patch features come from two backbone layers (stride 8 and 16), locally averaged over 3 x 3
neighbourhoods, brought to the stride-8 grid and concatenated. A greedy k-center coreset keeps a
fraction of the training patches. A test patch's score is its distance to the nearest memory
entries; the image score is the maximum patch score, optionally reweighted as in the paper.
Saved as one run folder: the memory bank is the tensor `memory_bank` of model.safetensors.
"""

from __future__ import annotations

import time
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
    record_postprocess, state_int,
)
from oddspot.detectors.memory_bank import KNNIndex, greedy_coreset
from oddspot.errors import OddspotError
from oddspot.features import Backbone, FeatureExtractor, build_backbone
from oddspot.imaging import resize_map, upsample_and_blur
from oddspot.progress import track
from oddspot.runs.contract import Record
from oddspot.runs.model import RunModel

SCORINGS = ("max", "reweighted", "topk_mean")


@dataclass
class PatchCoreConfig:
    """Settings of a PatchCore model; every field is saved with the model."""

    backbone: str = "efficientnet_lite0"
    layers: tuple[str, ...] = ("stage3", "stage5")
    image_size: int = 224
    pool: int = 3
    coreset_ratio: float = 0.01
    projection_dim: int = 128
    num_neighbors: int = 1
    scoring: str = "max"
    reweight_neighbors: int = 9
    topk: int = 10
    blur_sigma: float = 4.0
    batch_size: int = 16
    seed: int = 0

    def __post_init__(self) -> None:
        if self.scoring not in SCORINGS:
            raise OddspotError(f"scoring {self.scoring!r} unknown; use one of {', '.join(SCORINGS)}")
        if len(self.layers) != 2 or not all(self.layers):
            raise OddspotError(f"layers must name two backbone layers (stride 8 and 16), got {list(self.layers)}")
        if not self.backbone:
            raise OddspotError("backbone must name a backbone, e.g. efficientnet_lite0")
        check_range("image_size", self.image_size, 32, 2048)
        check_range("pool", self.pool, 1, 15)
        check_range("coreset_ratio", self.coreset_ratio, 0.0, 1.0, low_open=True)
        check_range("projection_dim", self.projection_dim, 1, 65536)
        check_range("num_neighbors", self.num_neighbors, 1, 1024)
        check_range("reweight_neighbors", self.reweight_neighbors, 1, 1024)
        check_range("topk", self.topk, 1, 1_000_000)
        check_range("blur_sigma", self.blur_sigma, 0.0, 64.0)
        check_range("batch_size", self.batch_size, 1, 1024)
        check_range("seed", self.seed, 0, 2**32 - 1)


class PatchCore(RunModel):
    """PatchCore detector: `fit(images)`, `predict(images)`, `save(folder)`, `PatchCore.load(folder)`.

    `postprocess` is the calibration fitted on validation data (None until one is fitted); with
    it, `predict` also returns normalized scores, decisions and defect masks.
    """

    task = TASK
    kind = "patchcore"
    config_class = PatchCoreConfig

    def __init__(self, config: PatchCoreConfig | None = None, backbone: Backbone | None = None,
                 device: str | None = None, **options: Any) -> None:
        self.config = make_config(PatchCoreConfig, config, options, "PatchCore")
        self.backbone = backbone if backbone is not None else build_backbone(self.config.backbone, device=device)
        self.extractor = FeatureExtractor(self.backbone, self.config.layers)
        self.memory_bank: np.ndarray | None = None
        self.state: dict[str, Any] = {}
        self.postprocess: Calibration | None = None
        self._index: KNNIndex | None = None

    # features ---------------------------------------------------------------------------------
    def _batches(self, images: list[np.ndarray], description: str):
        bs = self.config.batch_size
        starts = range(0, len(images), bs)
        for lo in track(starts, description, total=len(starts)):
            yield lo, images[lo:lo + bs]

    def _preprocess(self, batch: list[np.ndarray]) -> torch.Tensor:
        return self.backbone.preprocess_batch(batch, self.config.image_size, self.config.batch_size)

    def patch_features(self, x: torch.Tensor) -> torch.Tensor:
        """Preprocessed batch -> N x h x w x C patch features on the stride-8 grid."""
        feats = self.extractor(x)
        p = self.config.pool
        low, high = (F.avg_pool2d(feats[name], p, stride=1, padding=p // 2) for name in self.config.layers)
        if high.shape[-2:] != low.shape[-2:]:
            high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        return torch.cat([low, high], dim=1).permute(0, 2, 3, 1).float().contiguous()

    # fit --------------------------------------------------------------------------------------
    def fit(self, images: Sequence[ImageLike]) -> PatchCore:
        """Build the memory bank from normal images (H x W x 3 uint8 each, or Samples)."""
        images = images_of(images)
        if len(images) == 0:
            raise OddspotError("PatchCore.fit needs at least one normal image")
        t0 = time.perf_counter()
        chunks = []
        for _, batch in self._batches(images, "features"):
            chunks.append(self.patch_features(self._preprocess(batch))[: len(batch)].cpu().numpy())
        feats = np.concatenate(chunks)
        grid = feats.shape[1:3]
        feats = feats.reshape(-1, feats.shape[-1])
        t1 = time.perf_counter()
        work: dict = {}
        picks = greedy_coreset(feats, self.config.coreset_ratio, seed=self.config.seed,
                               projection_dim=self.config.projection_dim, stats=work)
        t2 = time.perf_counter()
        self.memory_bank = np.ascontiguousarray(feats[picks])
        self._index = None
        self.postprocess = None
        self.state = {
            "n_train_images": len(images),
            "n_train_patches": int(feats.shape[0]),
            "memory_bank_size": int(self.memory_bank.shape[0]),
            "feature_dim": int(self.memory_bank.shape[1]),
            "grid": [int(grid[0]), int(grid[1])],
            "seconds_features": round(t1 - t0, 3),
            "seconds_coreset": round(t2 - t1, 3),
            "coreset_distance_evaluations": int(work.get("distance_evaluations", 0)),
        }
        return self

    # predict ----------------------------------------------------------------------------------
    @property
    def index(self) -> KNNIndex:
        if self.memory_bank is None:
            raise OddspotError("PatchCore is not fitted; call fit() or load a saved model")
        if self._index is None:
            self._index = KNNIndex(self.memory_bank)
        return self._index

    def _image_scores(self, patch_scores: np.ndarray, queries: np.ndarray, nn_idx: np.ndarray) -> np.ndarray:
        """patch_scores: N x P, queries: N x P x C, nn_idx: N x P (nearest memory entry per patch)."""
        cfg = self.config
        if cfg.scoring == "max":
            return patch_scores.max(axis=1)
        if cfg.scoring == "topk_mean":
            k = min(cfg.topk, patch_scores.shape[1])
            return np.sort(patch_scores, axis=1)[:, -k:].mean(axis=1)
        # reweighted (PatchCore eq. 7): s = (1 - exp(||m_test - m*||) / sum_{m in N_b(m*)} exp(||m_test - m||)) s*
        rows = np.arange(patch_scores.shape[0])
        arg = patch_scores.argmax(axis=1)
        s_star = patch_scores[rows, arg]
        m_test = queries[rows, arg]
        m_star = self.memory_bank[nn_idx[rows, arg]]
        b = min(cfg.reweight_neighbors, self.memory_bank.shape[0])
        _, neigh = self.index.search(m_star, b)
        dist = np.linalg.norm(self.memory_bank[neigh] - m_test[:, None, :], axis=2)
        # The numerator is the distance to m* itself, not the patch score s* (they differ when
        # num_neighbors > 1), computed as the sum's terms are: m* is in N_b(m*), so the ratio is <= 1.
        nearest = np.linalg.norm(m_star - m_test, axis=1)
        shift = dist.min(axis=1)  # for numerical stability; cancels in the ratio
        weights = 1.0 - np.exp(nearest - shift) / np.exp(dist - shift[:, None]).sum(axis=1)
        return weights * s_star

    def predict(self, images: Sequence[ImageLike], maps: bool = True) -> Prediction:
        """Score images; maps are at each image's own resolution (bilinear + Gaussian blur sigma).

        With a calibration (`postprocess`), also normalized scores, decisions and (with maps) masks.
        """
        images = images_of(images)
        index = self.index
        cfg = self.config
        scores: list[np.ndarray] = []
        out_maps: list[np.ndarray] | None = [] if maps else None
        for _, batch in self._batches(images, "scoring"):
            feats = self.patch_features(self._preprocess(batch))
            n, h, w, c = feats.shape
            if c != self.memory_bank.shape[1]:
                raise OddspotError(f"backbone {cfg.backbone} layers {list(cfg.layers)} give {c} features per patch, but "
                                   f"the memory bank holds {self.memory_bank.shape[1]}; use the backbone the model was fitted with")
            queries = feats.reshape(-1, c).cpu().numpy()
            dist, idx = index.search(queries, cfg.num_neighbors)
            patch = dist.mean(axis=1).reshape(n, h * w)
            scores.append(self._image_scores(patch, queries.reshape(n, h * w, c), idx[:, 0].reshape(n, h * w))[: len(batch)])
            if out_maps is not None:
                grid = torch.from_numpy(patch.reshape(n, h, w).astype(np.float32))
                full = upsample_and_blur(grid, (cfg.image_size, cfg.image_size), cfg.blur_sigma).numpy()
                out_maps.extend(resize_map(full[i], img.shape[:2]) for i, img in enumerate(batch))
        return finish(Prediction(np.concatenate(scores).astype(np.float64), out_maps), self.postprocess)

    # persistence ------------------------------------------------------------------------------
    def to_record(self) -> Record:
        """Config, fitted statistics, calibration and the memory bank, for the run contract."""
        if self.memory_bank is None:
            raise OddspotError("cannot save an unfitted PatchCore; call fit() first")
        return Record(TASK, self.kind, asdict(self.config), dict(self.state),
                      self.postprocess.to_dict() if self.postprocess is not None else None,
                      {"memory_bank": np.ascontiguousarray(self.memory_bank, dtype=np.float32)})

    @classmethod
    def from_record(cls, record: Record, backbone: Backbone | None = None, device: str | None = None) -> PatchCore:
        """Rebuild a saved PatchCore; the memory bank must agree with the stored state."""
        config = record_config(PatchCoreConfig, record)
        bank = record.tensor("memory_bank", ndim=2, dtype=np.float32)
        state = display_state(record.state, record)
        rows, dim = state_int(record, state, "memory_bank_size"), state_int(record, state, "feature_dim")
        check_shape(record, "memory_bank", bank, (rows, dim), "state.memory_bank_size x state.feature_dim")
        if rows == 0:
            raise OddspotError(f"{record.source}: the memory bank is empty; refit the model")
        postprocess = record_postprocess(record)
        model = cls(config, backbone=backbone, device=device)
        model.memory_bank = np.ascontiguousarray(bank)
        model.state = dict(state)
        model.postprocess = postprocess
        return model


__all__ = ["PatchCore", "PatchCoreConfig"]
