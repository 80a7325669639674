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
Prediction and the record are `CascadeHead`'s, shared with the exported runtime.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from oddspot.detectors.base import ImageLike, images_of, make_config
from oddspot.detectors.cascade_head import THRESHOLD_KEYS, CascadeConfig, CascadeHead, build_part
from oddspot.detectors.padim import PaDiM
from oddspot.detectors.patchcore import PatchCore
from oddspot.errors import OddspotError
from oddspot.features import Backbone, build_backbone
from oddspot.runs.contract import Record
from oddspot.runs.model import RunModel

LOCALIZERS: dict[str, type[PatchCore] | type[PaDiM]] = {"patchcore": PatchCore, "padim": PaDiM}


class GateCollapseWarning(UserWarning):
    """The gate put every validation image on one side of both thresholds."""


class Cascade(CascadeHead, RunModel):
    """Gate + localizer with the Detector interface, plus `fit_gate(images, labels)` on validation data.

    `postprocess` is the calibration of the cascade's own scores (None until one is fitted).
    """

    def __init__(self, config: CascadeConfig | None = None, backbone: Backbone | None = None,
                 device: str | None = None, **options: Any) -> None:
        self.config = make_config(CascadeConfig, config, options, "Cascade")
        self.backbone = backbone if backbone is not None else build_backbone(self.config.backbone, device=device)
        seed = {"seed": self.config.seed}
        self.set_fitted(PatchCore(backbone=self.backbone, **{**seed, **self.config.gate_options}),
                        LOCALIZERS[self.config.localizer](backbone=self.backbone, **{**seed, **self.config.localizer_options}),
                        {}, None)

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

    @classmethod
    def from_record(cls, record: Record, backbone: Backbone | None = None, device: str | None = None) -> Cascade:
        """Rebuild a saved cascade: gate and localizer from their nested parts, on one shared backbone."""
        config, state, postprocess, subs = cls.read_record(record)
        model = cls.__new__(cls)
        model.config = config
        model.backbone = backbone if backbone is not None else build_backbone(config.backbone, device=device)
        gate = build_part("gate", PatchCore, subs["gate"], backbone=model.backbone)
        localizer = build_part("localizer", LOCALIZERS[config.localizer], subs["localizer"], backbone=model.backbone)
        model.set_fitted(gate, localizer, state, postprocess)
        return model


__all__ = ["LOCALIZERS", "THRESHOLD_KEYS", "Cascade", "CascadeConfig", "GateCollapseWarning"]
