"""A fast gate in front of a localizing detector: the heatmap model runs only where the gate is unsure.

The gate is a cheap image-level detector: PatchCore at low resolution with a small coreset and
no maps. Two gate thresholds are fitted on validation data (normal and anomalous, real or
synthetic): below `low` an image is normal, above `high` anomalous, in between the localizer
decides. `low` sits below the lowest gate score of any validation anomaly (by `low_margin` of the
validation score range), so the gate alone never turns a validation defect into "normal" (no
loss of validation recall); `high` sits above every normal validation image (by `high_margin`). Scores stay on the localizer's scale: gate-decided images are placed
below (or above) every localizer score seen on validation, ordered by their gate score, so
rankings, thresholds and calibration all keep working.

Saved as one run folder: the cascade's config holds the gate's and the localizer's full configs
(`gate_options`, `localizer_options`), its state their states (`gate`, `localizer`) and the gate
thresholds, and model.safetensors their tensors as `gate.<name>` and `localizer.<name>`.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from oddspot.calibration import Calibration
from oddspot.configs import check_range, finite_number
from oddspot.detectors.base import (
    TASK, ImageLike, Prediction, display_state, finish, images_of, make_config, record_config, record_postprocess, where,
)
from oddspot.detectors.padim import PaDiM
from oddspot.detectors.patchcore import PatchCore
from oddspot.errors import OddspotError
from oddspot.features import Backbone, build_backbone
from oddspot.runs.contract import Record
from oddspot.runs.model import RunModel

LOCALIZERS: dict[str, type[PatchCore] | type[PaDiM]] = {"patchcore": PatchCore, "padim": PaDiM}
THRESHOLD_KEYS = ("low", "high", "localizer_min", "localizer_max", "map_scale", "validation_call_rate", "n_validation")


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

    def __post_init__(self) -> None:
        if self.localizer not in LOCALIZERS:
            raise OddspotError(f"cascade localizer {self.localizer!r} unknown; use one of {', '.join(LOCALIZERS)}")
        if not self.backbone:
            raise OddspotError("backbone must name a backbone, e.g. efficientnet_lite0")
        check_range("low_margin", self.low_margin, 0.0, 1.0)
        check_range("high_margin", self.high_margin, 0.0, 1.0)
        check_range("seed", self.seed, 0, 2**32 - 1)


class Cascade(RunModel):
    """Gate + localizer with the Detector interface, plus `fit_gate(images, labels)` on validation data.

    `postprocess` is the calibration of the cascade's own scores (None until one is fitted).
    """

    task = TASK
    kind = "cascade"
    config_class = CascadeConfig

    def __init__(self, config: CascadeConfig | None = None, backbone: Backbone | None = None,
                 device: str | None = None, **options: Any) -> None:
        self.config = make_config(CascadeConfig, config, options, "Cascade")
        self.backbone = backbone if backbone is not None else build_backbone(self.config.backbone, device=device)
        seed = {"seed": self.config.seed}
        self.gate = PatchCore(backbone=self.backbone, **{**seed, **self.config.gate_options})
        self.localizer = LOCALIZERS[self.config.localizer](backbone=self.backbone, **{**seed, **self.config.localizer_options})
        self.state: dict[str, Any] = {}
        self.postprocess: Calibration | None = None
        self.last_call: dict[str, Any] = {}

    def fit(self, images: Sequence[ImageLike]) -> Cascade:
        """Fit gate and localizer on the same normal images (the gate thresholds need `fit_gate`)."""
        images = images_of(images)
        self.gate.fit(images)
        self.localizer.fit(images)
        self.state = {"gate": dict(self.gate.state), "localizer": dict(self.localizer.state)}
        self.postprocess = None
        return self

    def fit_gate(self, images: Sequence[ImageLike], labels: np.ndarray) -> dict[str, Any]:
        """Fit the two gate thresholds and the score placement on validation images (0 normal / 1 anomalous)."""
        images = images_of(images)
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

    def predict(self, images: Sequence[ImageLike], maps: bool = True) -> Prediction:
        """Gate every image; run the localizer only on images between the gate thresholds.

        With a calibration (`postprocess`), also normalized scores, decisions and (with maps) masks.
        """
        images = images_of(images)
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
        return finish(Prediction(scores, out_maps), self.postprocess)

    def to_record(self) -> Record:
        """One record: the sub-models' configs and states nested, their tensors prefixed `gate.` / `localizer.`."""
        if self.gate.memory_bank is None:
            raise OddspotError("cannot save an unfitted Cascade; call fit() first")
        gate, localizer = self.gate.to_record(), self.localizer.to_record()
        config = {**asdict(self.config), "gate_options": gate.config, "localizer_options": localizer.config}
        state = {**self.state, "gate": gate.state, "localizer": localizer.state}
        tensors = {**{f"gate.{k}": v for k, v in gate.tensors.items()},
                   **{f"localizer.{k}": v for k, v in localizer.tensors.items()}}
        return Record(TASK, self.kind, config, state,
                      self.postprocess.to_dict() if self.postprocess is not None else None, tensors)

    @classmethod
    def from_record(cls, record: Record, backbone: Backbone | None = None, device: str | None = None) -> Cascade:
        """Rebuild a saved cascade: gate and localizer from their nested parts, on one shared backbone."""
        config = record_config(CascadeConfig, record)
        state = display_state(record.state, record)
        for part in ("gate", "localizer"):
            if not isinstance(state.get(part), dict):
                raise OddspotError(f"{where(record)}: state.{part} must be an object; the file is damaged, refit the model")
        thresholds = state.get("thresholds")
        if thresholds is not None:
            _check_thresholds(thresholds, record)
        postprocess = record_postprocess(record)
        model = cls.__new__(cls)
        model.config = config
        model.backbone = backbone if backbone is not None else build_backbone(config.backbone, device=device)
        parts = {}
        for part, part_cls, options in (("gate", PatchCore, config.gate_options),
                                        ("localizer", LOCALIZERS[config.localizer], config.localizer_options)):
            sub = Record(TASK, part_cls.kind, options, state[part], None, record.prefixed(part), record.oddspot_version,
                         record.source)
            try:
                parts[part] = part_cls.from_record(sub, backbone=model.backbone)
            except OddspotError as exc:
                raise OddspotError(f"{exc} (in the cascade's {part})") from None
        model.gate, model.localizer = parts["gate"], parts["localizer"]
        model.state = dict(state)
        model.postprocess = postprocess
        model.last_call = {}
        return model


def _check_thresholds(th: Any, record: Record) -> None:
    """The stored gate thresholds: an object of finite numbers with low <= high."""
    if not isinstance(th, dict) or set(th) != set(THRESHOLD_KEYS):
        raise OddspotError(f"{where(record)}: state.thresholds must hold {', '.join(THRESHOLD_KEYS)}; refit the model")
    for key in THRESHOLD_KEYS:
        v = th[key]
        if not finite_number(v):
            raise OddspotError(f"{where(record)}: state.thresholds.{key} must be a finite number, got {v!r:.40}")
    if th["low"] > th["high"]:
        raise OddspotError(f"{where(record)}: state.thresholds.low exceeds high; the file is damaged, refit the model")
