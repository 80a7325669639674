"""PatchCore without its network: the memory bank, kNN search, image scores and maps (numpy; no torch).

`PatchCoreHead.predict` takes patch features from `patch_features(batch)`, which a subclass
provides: `detectors.patchcore.PatchCore` runs the backbone in torch, the exported runtime
(`oddspot.runtime`) runs the same trunk on OpenVINO or ONNX Runtime. Everything after the
features (search, scoring, maps, calibration) is this one code, so both give the same answers.
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
    TASK, batches, ImageLike, Prediction, check_shape, display_state, finish, images_of, record_postprocess, state_int, where,
)
from oddspot.errors import OddspotError
from oddspot.imaging import anomaly_maps
from oddspot.neighbors import KNNIndex
from oddspot.runs.contract import Record

SCORINGS = ("max", "reweighted", "topk_mean")
# Feature layers per backbone family: stride 8 and stride 16 (the PatchCore paper's layer2 + layer3).
DEFAULT_LAYERS = {"lite": ("stage3", "stage5"), "resnet": ("layer2", "layer3")}


@dataclass
class PatchCoreConfig:
    """Settings of a PatchCore model; every field is saved with the model."""

    ADDED_FIELDS: ClassVar[dict[str, Any]] = BACKBONE_ADDED_FIELDS

    backbone: str = "efficientnet_lite0"
    weights: str | None = None  # a weights file or URL for the backbone (None: its own offline weights)
    weights_sha256: str | None = None  # recorded when the model is built on `weights`
    layers: tuple[str, ...] | None = None  # None: the backbone's default (DEFAULT_LAYERS), stored explicitly
    image_size: int | None = None  # None: the backbone's default input size, stored explicitly
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
        resolve_backbone(self, DEFAULT_LAYERS)
        if len(self.layers) != 2 or not all(self.layers):
            raise OddspotError(f"layers must name two backbone layers, the finer first (e.g. stage3, stage5), "
                               f"got {list(self.layers)}")
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


class PatchCoreHead:
    """Scores images from patch features against the memory bank; `patch_features` is the subclass's."""

    task = TASK
    kind = "patchcore"
    config_class = PatchCoreConfig

    config: PatchCoreConfig
    memory_bank: np.ndarray | None
    state: dict[str, Any]
    postprocess: Calibration | None
    _index: KNNIndex | None
    search: str = "exact"  # "hnsw": approximate candidates, exact re-ranking (`oddspot.neighbors`); set before predict

    def patch_features(self, batch: list[np.ndarray]) -> np.ndarray:
        """Up to `config.batch_size` images -> float32 N x h x w x C patch features (N >= len(batch))."""
        raise NotImplementedError

    @property
    def index(self) -> KNNIndex:
        if self.memory_bank is None:
            raise OddspotError("PatchCore is not fitted; call fit() or load a saved model")
        if self._index is None or self._index.search_mode != self.search:
            self._index = KNNIndex(self.memory_bank, self.search)
        return self._index

    def image_scores(self, patch_scores: np.ndarray, queries: np.ndarray, nn_idx: np.ndarray) -> np.ndarray:
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
        for _, batch in batches(images, self.config.batch_size, "scoring"):
            feats = self.patch_features(batch)[: len(batch)]
            n, h, w, c = feats.shape
            if c != self.memory_bank.shape[1]:
                raise OddspotError(f"backbone {cfg.backbone} layers {list(cfg.layers)} give {c} features per patch, but "
                                   f"the memory bank holds {self.memory_bank.shape[1]}; use the backbone the model was fitted with")
            queries = np.ascontiguousarray(feats.reshape(-1, c), dtype=np.float32)
            dist, idx = index.search(queries, cfg.num_neighbors)
            patch = dist.mean(axis=1).reshape(n, h * w)
            scores.append(self.image_scores(patch, queries.reshape(n, h * w, c), idx[:, 0].reshape(n, h * w)))
            if out_maps is not None:
                out_maps.extend(anomaly_maps(patch.reshape(n, h, w), cfg.image_size, cfg.blur_sigma,
                                             [img.shape[:2] for img in batch]))
        return finish(Prediction(np.concatenate(scores).astype(np.float64), out_maps), self.postprocess)

    def to_record(self) -> Record:
        """Config, fitted statistics, calibration and the memory bank, for the run contract."""
        if self.memory_bank is None:
            raise OddspotError("cannot save an unfitted PatchCore; call fit() first")
        return Record(TASK, self.kind, asdict(self.config), dict(self.state),
                      self.postprocess.to_dict() if self.postprocess is not None else None,
                      {"memory_bank": np.ascontiguousarray(self.memory_bank, dtype=np.float32)})

    @staticmethod
    def read_record(record: Record) -> tuple[PatchCoreConfig, np.ndarray, dict[str, Any], Calibration | None]:
        """Config, memory bank, state and calibration of a saved PatchCore; the bank must agree with the state."""
        config = from_mapping(PatchCoreConfig, record.config, f"{where(record)}: config", complete=True)
        bank = record.tensor("memory_bank", ndim=2, dtype=np.float32)
        state = display_state(record.state, record)
        rows, dim = state_int(record, state, "memory_bank_size"), state_int(record, state, "feature_dim")
        check_shape(record, "memory_bank", bank, (rows, dim), "state.memory_bank_size x state.feature_dim")
        if rows == 0:
            raise OddspotError(f"{record.source}: the memory bank is empty; refit the model")
        return config, np.ascontiguousarray(bank), dict(state), record_postprocess(record)

    def set_fitted(self, bank: np.ndarray, state: dict[str, Any], postprocess: Calibration | None) -> None:
        """Install a fitted memory bank, its state and calibration (resets the search index)."""
        self.memory_bank = bank
        self.state = state
        self.postprocess = postprocess
        self._index = None


__all__ = ["SCORINGS", "PatchCoreConfig", "PatchCoreHead"]
