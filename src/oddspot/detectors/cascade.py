"""A fast gate in front of a localizing detector: the heatmap model runs only where the gate is unsure.

The gate is a cheap image-level detector: PatchCore at low resolution with a small coreset and
no maps. Two gate thresholds are fitted on validation data (normal and anomalous, real or
synthetic): below `low` an image is normal, above `high` anomalous, in between the localizer
decides. `low` sits below the lowest gate score of any validation anomaly (by `low_margin` of the
validation score range), so the gate alone never turns a validation defect into "normal" (no
loss of validation recall); `high` sits above every normal validation image (by `high_margin`). Scores stay on the localizer's scale: gate-decided images are placed
below (or above) every localizer score seen on validation, ordered by their gate score, so
rankings, thresholds and calibration all keep working.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from oddspot.detectors.base import Prediction, config_from_dict, model_json, read_model_json
from oddspot.errors import OddspotError
from oddspot.features import Backbone, build_backbone
from oddspot.files import write_json


class GateCollapseWarning(UserWarning):
    """The gate put every validation image on one side of both thresholds."""


@dataclass
class CascadeConfig:
    """Settings of a cascade; every field is saved with the model."""

    localizer: str = "patchcore"
    localizer_options: dict[str, Any] = field(default_factory=dict)
    gate_options: dict[str, Any] = field(default_factory=lambda: {"image_size": 112, "coreset_ratio": 0.05, "blur_sigma": 0.0})
    low_margin: float = 0.05
    high_margin: float = 0.02
    backbone: str = "efficientnet_lite0"
    seed: int = 0


def _detector_classes() -> dict[str, Any]:
    from oddspot.detectors.padim import PaDiM
    from oddspot.detectors.patchcore import PatchCore

    return {"patchcore": PatchCore, "padim": PaDiM}


class Cascade:
    """Gate + localizer with the Detector interface, plus `fit_gate(images, labels)` on validation data."""

    name = "cascade"

    def __init__(self, config: CascadeConfig | None = None, backbone: Backbone | None = None, **options: Any) -> None:
        if config is not None and options:
            raise OddspotError("pass either a CascadeConfig or keyword options, not both")
        self.config = config if config is not None else config_from_dict(CascadeConfig, options, "Cascade")
        classes = _detector_classes()
        if self.config.localizer not in classes:
            raise OddspotError(f"cascade localizer {self.config.localizer!r} unknown; use one of {', '.join(classes)}")
        from oddspot.detectors.patchcore import PatchCore

        self.backbone = backbone if backbone is not None else build_backbone(self.config.backbone)
        seed = {"seed": self.config.seed}
        self.gate = PatchCore(backbone=self.backbone, **{**seed, **self.config.gate_options})
        self.localizer = classes[self.config.localizer](backbone=self.backbone, **{**seed, **self.config.localizer_options})
        self.state: dict[str, Any] = {}
        self.last_call: dict[str, Any] = {}

    def fit(self, images: list[np.ndarray]) -> "Cascade":
        """Fit gate and localizer on the same normal images."""
        self.gate.fit(images)
        self.localizer.fit(images)
        self.state = {"gate": dict(self.gate.state), "localizer": dict(self.localizer.state)}
        return self

    def fit_gate(self, images: list[np.ndarray], labels: np.ndarray) -> dict[str, Any]:
        """Fit the two gate thresholds and the score placement on validation images (0 normal / 1 anomalous)."""
        labels = np.asarray(labels).astype(bool)
        if labels.all() or not labels.any():
            raise OddspotError("the cascade gate needs normal and anomalous validation images (real or synthetic)")
        g = self.gate.predict(images, maps=False).scores
        loc = self.localizer.predict(images, maps=True)
        span = float(g.max() - g.min()) or 1.0
        low = float(g[labels].min()) - self.config.low_margin * span
        high = float(g[~labels].max()) + self.config.high_margin * span
        if low > high:  # the gate separates validation perfectly: still call the localizer between them
            low = high = (low + high) / 2
        between = (g >= low) & (g <= high)
        if np.all(g < low) or np.all(g > high) or between.all():
            warnings.warn("cascade gate collapsed: on validation it decides no image by itself (every score on one "
                          "side of both thresholds, or between them); the gate only adds latency",
                          GateCollapseWarning, stacklevel=2)
        gate_max = np.array([m.max() for m in loc.maps])
        self.state["thresholds"] = {
            "low": low, "high": high,
            "localizer_min": float(loc.scores.min()), "localizer_max": float(loc.scores.max()),
            "map_scale": float(np.median(gate_max) / max(np.median(g), 1e-12)),
            "validation_call_rate": float(between.mean()),
            "n_validation": int(labels.size),
        }
        return self.state["thresholds"]

    def predict(self, images: list[np.ndarray], maps: bool = True) -> Prediction:
        """Gate every image; run the localizer only on images between the gate thresholds."""
        th = self.state.get("thresholds")
        if th is None:
            raise OddspotError("the cascade gate has no thresholds; fit it with validation data (oddspot fit --split validation)")
        t0 = time.perf_counter()
        gate_pred = self.gate.predict(images, maps=maps)
        g = gate_pred.scores
        call = (g >= th["low"]) & (g <= th["high"])
        t1 = time.perf_counter()
        scores = np.where(g < th["low"], th["localizer_min"] - (th["low"] - g),
                          th["localizer_max"] + (g - th["high"])).astype(np.float64)
        out_maps = [m * np.float32(th["map_scale"]) for m in gate_pred.maps] if maps else None
        idx = np.flatnonzero(call)
        if idx.size:
            loc = self.localizer.predict([images[i] for i in idx], maps=maps)
            scores[idx] = loc.scores
            if out_maps is not None:
                for j, i in enumerate(idx):
                    out_maps[i] = loc.maps[j]
        self.last_call = {"n_images": len(images), "n_localizer": int(idx.size),
                          "gate_seconds": t1 - t0, "localizer_seconds": time.perf_counter() - t1}
        return Prediction(scores, out_maps)

    def save(self, folder: str | Path) -> None:
        """model.json for the cascade, gate/ and localizer/ sub-folders for the two detectors."""
        folder = Path(folder)
        self.gate.save(folder / "gate")
        self.localizer.save(folder / "localizer")
        write_json(folder / "model.json", model_json(self.name, asdict(self.config), self.state))

    @classmethod
    def load(cls, folder: str | Path, backbone: Backbone | None = None) -> "Cascade":
        folder = Path(folder)
        meta = read_model_json(folder, cls.name)
        config = config_from_dict(CascadeConfig, meta["config"], str(folder / "model.json"))
        model = cls.__new__(cls)
        model.config = config
        model.backbone = backbone if backbone is not None else build_backbone(config.backbone)
        from oddspot.detectors.patchcore import PatchCore

        model.gate = PatchCore.load(folder / "gate", backbone=model.backbone)
        model.localizer = _detector_classes()[config.localizer].load(folder / "localizer", backbone=model.backbone)
        model.state = meta.get("state", {})
        model.last_call = {}
        return model
