"""PatchCore (Roth et al., 2022): a coreset memory bank of normal patch features, scored by kNN distance.

Patch features come from two backbone layers (stride 8 and 16), locally averaged over 3 x 3
neighbourhoods, brought to the stride-8 grid and concatenated. A greedy k-center coreset keeps a
fraction of the training patches. A test patch's score is its distance to the nearest memory
entries; the image score is the maximum patch score, optionally reweighted as in the paper.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file, save_file

from oddspot.imaging import resize_map, upsample_and_blur
from oddspot.detectors.base import Prediction, config_from_dict, model_json, read_model_json
from oddspot.detectors.memory_bank import KNNIndex, greedy_coreset
from oddspot.errors import OddspotError
from oddspot.features import Backbone, FeatureExtractor, build_backbone
from oddspot.files import write_json
from oddspot.progress import track

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
        if len(self.layers) != 2:
            raise OddspotError(f"layers must name two backbone layers (stride 8 and 16), got {list(self.layers)}")
        for name, value in (("image_size", self.image_size), ("num_neighbors", self.num_neighbors),
                            ("batch_size", self.batch_size), ("pool", self.pool), ("topk", self.topk)):
            if int(value) < 1:
                raise OddspotError(f"{name} must be >= 1, got {value}")


class PatchCore:
    """PatchCore detector: `fit(images)`, `predict(images)`, `save(folder)`, `PatchCore.load(folder)`."""

    name = "patchcore"

    def __init__(self, config: PatchCoreConfig | None = None, backbone: Backbone | None = None, **options: Any) -> None:
        if config is not None and options:
            raise OddspotError("pass either a PatchCoreConfig or keyword options, not both")
        self.config = config if config is not None else config_from_dict(PatchCoreConfig, options, "PatchCore")
        self.backbone = backbone if backbone is not None else build_backbone(self.config.backbone)
        self.extractor = FeatureExtractor(self.backbone, self.config.layers)
        self.memory_bank: np.ndarray | None = None
        self.state: dict[str, Any] = {}
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
    def fit(self, images: list[np.ndarray]) -> "PatchCore":
        """Build the memory bank from normal images (H x W x 3 uint8 each)."""
        if len(images) == 0:
            raise OddspotError("PatchCore.fit needs at least one normal image")
        t0 = time.perf_counter()
        chunks = []
        for lo, batch in self._batches(images, "features"):
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
        shift = dist.min(axis=1, keepdims=True)  # for numerical stability; cancels in the ratio
        weights = 1.0 - np.exp(s_star[:, None] - shift)[:, 0] / np.exp(dist - shift).sum(axis=1)
        return weights * s_star

    def predict(self, images: list[np.ndarray], maps: bool = True) -> Prediction:
        """Score images; maps are at each image's own resolution (bilinear + Gaussian blur sigma)."""
        index = self.index
        cfg = self.config
        scores: list[np.ndarray] = []
        out_maps: list[np.ndarray] | None = [] if maps else None
        for _, batch in self._batches(images, "scoring"):
            feats = self.patch_features(self._preprocess(batch))
            n, h, w, c = feats.shape
            queries = feats.reshape(-1, c).cpu().numpy()
            dist, idx = index.search(queries, cfg.num_neighbors)
            patch = dist.mean(axis=1).reshape(n, h * w)
            scores.append(self._image_scores(patch, queries.reshape(n, h * w, c), idx[:, 0].reshape(n, h * w))[: len(batch)])
            if out_maps is not None:
                grid = torch.from_numpy(patch.reshape(n, h, w).astype(np.float32))
                full = upsample_and_blur(grid, (cfg.image_size, cfg.image_size), cfg.blur_sigma).numpy()
                out_maps.extend(resize_map(full[i], img.shape[:2]) for i, img in enumerate(batch))
        return Prediction(np.concatenate(scores).astype(np.float64), out_maps)

    # persistence ------------------------------------------------------------------------------
    def save(self, folder: str | Path) -> None:
        """Write model.json (config + fitted statistics) and memory_bank.safetensors; no pickle."""
        if self.memory_bank is None:
            raise OddspotError("cannot save an unfitted PatchCore; call fit() first")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".memory_bank.safetensors.tmp"
        save_file({"memory_bank": self.memory_bank}, str(tmp))
        tmp.replace(folder / "memory_bank.safetensors")
        write_json(folder / "model.json", model_json(self.name, asdict(self.config), self.state))

    @classmethod
    def load(cls, folder: str | Path, backbone: Backbone | None = None) -> "PatchCore":
        """Load a model saved by `save` (tensors from safetensors, everything else from JSON)."""
        folder = Path(folder)
        meta = read_model_json(folder, cls.name)
        model = cls(config_from_dict(PatchCoreConfig, meta["config"], str(folder / "model.json")), backbone=backbone)
        bank_path = folder / "memory_bank.safetensors"
        if not bank_path.exists():
            raise OddspotError(f"{bank_path}: missing; the model folder is incomplete, re-run `oddspot fit`")
        model.memory_bank = np.ascontiguousarray(load_file(str(bank_path))["memory_bank"])
        model.state = meta.get("state", {})
        return model


__all__ = ["PatchCore", "PatchCoreConfig"]
