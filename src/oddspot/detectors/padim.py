"""PaDiM (Defard et al., 2020): one Gaussian per feature-map position, scored by Mahalanobis distance.

Features from three backbone layers are brought to the stride-8 grid and concatenated; a seeded
random subset of channels is kept (the indices are saved). Means and covariances (+ 0.01 I) are
accumulated in float64 over training batches, inverted for all positions at once, and a test
patch's score is its Mahalanobis distance to the Gaussian of its position.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load_file, save_file

from oddspot.imaging import resize_map, upsample_and_blur
from oddspot.detectors.base import Prediction, config_from_dict, model_json, read_model_json
from oddspot.errors import OddspotError
from oddspot.features import Backbone, FeatureExtractor, build_backbone
from oddspot.files import write_json
from oddspot.progress import track


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
        if int(self.n_features) < 1 or int(self.image_size) < 8 or int(self.batch_size) < 1:
            raise OddspotError("n_features and batch_size must be >= 1 and image_size >= 8")
        if self.regularization <= 0:
            raise OddspotError(f"regularization must be > 0, got {self.regularization}")


class PaDiM:
    """PaDiM detector: `fit(images)`, `predict(images)`, `save(folder)`, `PaDiM.load(folder)`."""

    name = "padim"

    def __init__(self, config: PaDiMConfig | None = None, backbone: Backbone | None = None, **options: Any) -> None:
        if config is not None and options:
            raise OddspotError("pass either a PaDiMConfig or keyword options, not both")
        self.config = config if config is not None else config_from_dict(PaDiMConfig, options, "PaDiM")
        self.backbone = backbone if backbone is not None else build_backbone(self.config.backbone)
        self.extractor = FeatureExtractor(self.backbone, self.config.layers)
        self.channels: np.ndarray | None = None
        self.mean: torch.Tensor | None = None
        self.inv_cov: torch.Tensor | None = None
        self.state: dict[str, Any] = {}

    def _preprocess(self, batch: list[np.ndarray]) -> torch.Tensor:
        return self.backbone.preprocess_batch(batch, self.config.image_size, self.config.batch_size)

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
        x = torch.cat(maps, 1)
        if self.channels is None:
            total = x.shape[1]
            if self.config.n_features > total:
                raise OddspotError(f"n_features {self.config.n_features} exceeds the {total} channels of layers {list(self.config.layers)}")
            rng = np.random.default_rng(self.config.seed)
            self.channels = np.sort(rng.choice(total, self.config.n_features, replace=False))
        x = x[:, torch.from_numpy(self.channels)]
        self._grid = tuple(int(g) for g in grid)
        return x.flatten(2).transpose(1, 2).double()

    def fit(self, images: list[np.ndarray]) -> "PaDiM":
        """Fit one Gaussian per position from normal images, streaming sums in float64."""
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
        return self

    def predict(self, images: list[np.ndarray], maps: bool = True) -> Prediction:
        """Mahalanobis map per image (upsampled, blurred), image score = max of the map."""
        if self.mean is None:
            raise OddspotError("PaDiM is not fitted; call fit() or load a saved model")
        cfg = self.config
        scores, out_maps = [], ([] if maps else None)
        for lo in track(range(0, len(images), cfg.batch_size), "scoring", total=-(-len(images) // cfg.batch_size)):
            batch = images[lo:lo + cfg.batch_size]
            diff = self._features(batch).float() - self.mean[None]
            dist = torch.einsum("npi,pij,npj->np", diff, self.inv_cov, diff).clamp_(min=0).sqrt_()
            grid = dist.view(dist.shape[0], *self._grid)
            full = upsample_and_blur(grid, (cfg.image_size, cfg.image_size), cfg.blur_sigma)[: len(batch)]
            scores.append(full.flatten(1).max(1).values.numpy())
            if out_maps is not None:
                out_maps.extend(resize_map(full[i].numpy(), img.shape[:2]) for i, img in enumerate(batch))
        return Prediction(np.concatenate(scores).astype(np.float64), out_maps)

    def save(self, folder: str | Path) -> None:
        """model.json + padim.safetensors (mean, inverse covariances, channel indices); no pickle."""
        if self.mean is None:
            raise OddspotError("cannot save an unfitted PaDiM; call fit() first")
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / ".padim.safetensors.tmp"
        save_file({"mean": self.mean.numpy(), "inv_cov": self.inv_cov.numpy(), "channels": self.channels.astype(np.int64)}, str(tmp))
        tmp.replace(folder / "padim.safetensors")
        write_json(folder / "model.json", model_json(self.name, asdict(self.config), self.state))

    @classmethod
    def load(cls, folder: str | Path, backbone: Backbone | None = None) -> "PaDiM":
        folder = Path(folder)
        meta = read_model_json(folder, cls.name)
        model = cls(config_from_dict(PaDiMConfig, meta["config"], str(folder / "model.json")), backbone=backbone)
        path = folder / "padim.safetensors"
        if not path.exists():
            raise OddspotError(f"{path}: missing; the model folder is incomplete, re-run `oddspot fit`")
        t = load_file(str(path))
        model.mean, model.inv_cov = torch.from_numpy(t["mean"]), torch.from_numpy(t["inv_cov"])
        model.channels = t["channels"]
        model.state = meta.get("state", {})
        model._grid = tuple(model.state["grid"])
        return model
