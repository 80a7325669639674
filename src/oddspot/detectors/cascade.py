"""A fast gate in front of a localizing detector: the heatmap model runs only where the gate is unsure.

The gate is a cheap image-level detector: PatchCore at low resolution with a small coreset.
With `gate: unsupervised` (default) its image score is the gate value; with `gate: supervised` the
gate value is the log-odds of a logistic regression (numpy, L2, stored in the state as
`classifier`) on pooled gate outputs (`cascade_head.GATE_FEATURES`), trained at `fit` on the normal
training images and one seeded synthetic anomaly made from each (never on normals only), each
half of them scored by a gate fitted on the other half. Two gate thresholds are fitted on
validation data (normal and anomalous, real or synthetic), on the gate value's scale: below `low` an image is normal, above `high` anomalous, in between the localizer
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

from oddspot.detectors.backbones import backbone_options, config_backbone, on_backbone
from oddspot.detectors.base import ImageLike, images_of, make_config
from oddspot.data.synthetic import synthesize_anomaly
from oddspot.detectors.cascade_head import (
    GATE_FEATURES, THRESHOLD_KEYS, CascadeConfig, CascadeHead, build_part, gate_features,
)
from oddspot.detectors.padim import PaDiM
from oddspot.detectors.patchcore import PatchCore
from oddspot.errors import OddspotError
from oddspot.features import Backbone
from oddspot.runs.contract import Record
from oddspot.runs.model import RunModel

LOCALIZERS: dict[str, type[PatchCore] | type[PaDiM]] = {"patchcore": PatchCore, "padim": PaDiM}
CLASSIFIER_L2 = 1.0
"""L2 penalty of the supervised gate's logistic regression (features standardized)."""


class GateCollapseWarning(UserWarning):
    """The gate put every validation image on one side of both thresholds."""


class Cascade(CascadeHead, RunModel):
    """Gate + localizer with the Detector interface, plus `fit_gate(images, labels)` on validation data.

    `postprocess` is the calibration of the cascade's own scores (None until one is fitted).
    """

    def __init__(self, config: CascadeConfig | None = None, backbone: Backbone | None = None,
                 device: str | None = None, **options: Any) -> None:
        self.config = make_config(CascadeConfig, config, options, "Cascade")
        self.config, self.backbone = config_backbone(self.config, backbone, device)
        seed = {"seed": self.config.seed, **backbone_options(self.config)}
        self.set_fitted(on_backbone(PatchCore, {**seed, **self.config.gate_options}, self.backbone, "Cascade gate"),
                        on_backbone(LOCALIZERS[self.config.localizer], {**seed, **self.config.localizer_options},
                                    self.backbone, "Cascade localizer"),
                        {}, None)

    def fit(self, images: Sequence[ImageLike]) -> Cascade:
        """Fit gate and localizer on the same normal images (the gate thresholds need `fit_gate`)."""
        images = images_of(images)
        self.gate.fit(images)
        self.localizer.fit(images)
        self.state = {"gate": dict(self.gate.state), "localizer": dict(self.localizer.state)}
        if self.config.gate == "supervised":
            self.state["classifier"] = self._fit_classifier(images)
        self.postprocess = None
        return self

    def _fit_classifier(self, images: list[np.ndarray]) -> dict[str, Any]:
        """The supervised gate: logistic regression on `GATE_FEATURES` of the normal training images
        (label 0) and one synthetic anomaly made from each of them (label 1, seeded by config.seed).

        Features are cross-fitted: the images are split in two halves (even / odd positions) and each
        half, with its synthetic anomalies, is scored by a gate fitted on the other half only, so the
        classifier sees gate outputs of images outside the gate's memory bank, as at test time.
        """
        rng = np.random.default_rng(self.config.seed)
        made: list[np.ndarray | None] = []
        for image in images:
            try:
                made.append(synthesize_anomaly(image, rng)[0])
            except (ValueError, IndexError):  # too small an image for a defect blob
                made.append(None)
        n_made = sum(m is not None for m in made)
        if n_made == 0 or len(images) < 2:
            raise OddspotError("cascade gate 'supervised': no synthetic anomalies could be made from the "
                               f"{len(images)} training image(s) (it never trains on normals only); use larger or more "
                               "images, or gate: unsupervised")
        features, labels = [], []
        for fit_half, held_half in ((1, 0), (0, 1)):
            gate = PatchCore(config=self.gate.config, backbone=self.backbone).fit(images[fit_half::2])
            normal = images[held_half::2]
            anomalous = [m for m in made[held_half::2] if m is not None]
            pred = gate.predict(normal + anomalous, maps=True)
            features.append(gate_features(pred.scores, pred.maps))
            labels.append(np.r_[np.zeros(len(normal)), np.ones(len(anomalous))])
        fitted = fit_logistic(np.concatenate(features), np.concatenate(labels), CLASSIFIER_L2)
        return {"features": list(GATE_FEATURES), **fitted, "l2": CLASSIFIER_L2, "n_normal": len(images),
                "n_synthetic": n_made}

    def fit_gate(self, images: Sequence[ImageLike], labels: np.ndarray) -> dict[str, Any]:
        """Fit the two gate thresholds and the score placement on validation images (0 normal / 1 anomalous)."""
        images = images_of(images)
        labels = np.asarray(labels).astype(bool)
        if labels.all() or not labels.any():
            raise OddspotError("the cascade gate needs normal and anomalous validation images (real or synthetic)")
        gate_pred, g = self.gate_pass(images, maps=False)
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
            "map_scale": float(np.median(gate_max) / max(np.median(gate_pred.scores), 1e-12)),
            "validation_call_rate": float(between.mean()),
            "n_validation": int(labels.size),
        }
        return self.state["thresholds"]

    @classmethod
    def from_record(cls, record: Record, backbone: Backbone | None = None, device: str | None = None) -> Cascade:
        """Rebuild a saved cascade: gate and localizer from their nested parts, on one shared backbone."""
        config, state, postprocess, subs = cls.read_record(record)
        model = cls.__new__(cls)
        model.config, model.backbone = config_backbone(config, backbone, device)
        gate = build_part("gate", PatchCore, subs["gate"], backbone=model.backbone)
        localizer = build_part("localizer", LOCALIZERS[config.localizer], subs["localizer"], backbone=model.backbone)
        model.set_fitted(gate, localizer, state, postprocess)
        return model


def fit_logistic(x: np.ndarray, y: np.ndarray, l2: float, max_iter: int = 100) -> dict[str, Any]:
    """L2-regularized logistic regression (intercept not penalized) on standardized features, by
    Newton's method: {"mean", "scale", "coef", "intercept"} as plain lists and floats."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[~(scale > 1e-12)] = 1.0
    z = np.c_[(x - mean) / scale, np.ones(len(x))]
    penalty = np.full(z.shape[1], float(l2))
    penalty[-1] = 0.0
    w = np.zeros(z.shape[1])
    for _ in range(max_iter):
        p = 1.0 / (1.0 + np.exp(-np.clip(z @ w, -500, 500)))
        grad = z.T @ (p - y) + penalty * w
        hess = (z * (p * (1 - p))[:, None]).T @ z + np.diag(penalty) + 1e-9 * np.eye(z.shape[1])
        step = np.linalg.solve(hess, grad)
        w -= step
        if np.max(np.abs(step)) < 1e-10:
            break
    return {"mean": [float(v) for v in mean], "scale": [float(v) for v in scale],
            "coef": [float(v) for v in w[:-1]], "intercept": float(w[-1])}


__all__ = ["LOCALIZERS", "THRESHOLD_KEYS", "Cascade", "CascadeConfig", "GateCollapseWarning"]
