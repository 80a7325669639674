"""The cascade without its networks: gate thresholds, score placement, and the nested record (no torch).

`CascadeHead.predict` composes two fitted heads, `gate` (a PatchCore) and `localizer` (a
PatchCore or a PaDiM), whatever runs their networks: `detectors.cascade.Cascade` builds them in
torch on one shared backbone, the exported runtime (`oddspot.runtime.cascade`) from two exported
graphs. See `detectors.cascade` for what the gate decides and how scores are placed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

import numpy as np

from oddspot.calibration import Calibration
from oddspot.configs import check_range, finite_number, from_mapping
from oddspot.detectors.backbone_choice import BACKBONE_ADDED_FIELDS, backbone_family, check_weights_fields
from oddspot.detectors.base import (
    TASK, ImageLike, Prediction, display_state, finish, images_of, record_postprocess, where,
)
from oddspot.errors import OddspotError
from oddspot.runs.contract import Record

LOCALIZER_KINDS = ("patchcore", "padim")
GATE_KINDS = ("unsupervised", "supervised")
GATE_FEATURES = ("gate_score", "map_max", "map_mean", "map_std", "map_top1_mean")
"""What the supervised gate pools from the gate's PatchCore output per image: its image score and the
max, mean, standard deviation and top-1% mean of its anomaly map."""
CLASSIFIER_KEYS = ("features", "mean", "scale", "coef", "intercept", "l2", "n_normal", "n_synthetic")
PARTS = ("gate", "localizer")
THRESHOLD_KEYS = ("low", "high", "localizer_min", "localizer_max", "map_scale", "validation_call_rate", "n_validation")


@dataclass
class CascadeConfig:
    """Settings of a cascade; every field is saved with the model."""

    ADDED_FIELDS: ClassVar[dict[str, Any]] = {**BACKBONE_ADDED_FIELDS, "gate": "unsupervised"}

    localizer: str = "patchcore"
    localizer_options: dict[str, Any] = field(default_factory=dict)
    gate_options: dict[str, Any] = field(default_factory=lambda: {"image_size": 112, "coreset_ratio": 0.05, "blur_sigma": 0.0})
    low_margin: float = 0.05
    high_margin: float = 0.02
    gate: str = "unsupervised"  # or "supervised": logistic regression on pooled gate outputs (see detectors.cascade)
    backbone: str = "efficientnet_lite0"
    weights: str | None = None  # the shared backbone's weights file or URL (None: its own offline weights)
    weights_sha256: str | None = None  # recorded when the model is built on `weights`
    seed: int = 0

    def __post_init__(self) -> None:
        if self.localizer not in LOCALIZER_KINDS:
            raise OddspotError(f"cascade localizer {self.localizer!r} unknown; use one of {', '.join(LOCALIZER_KINDS)}")
        if not self.backbone:
            raise OddspotError("backbone must name a backbone, e.g. efficientnet_lite0")
        backbone_family(self.backbone)
        check_weights_fields(self)
        if self.gate not in GATE_KINDS:
            raise OddspotError(f"cascade gate {self.gate!r} unknown; use one of {', '.join(GATE_KINDS)}")
        check_range("low_margin", self.low_margin, 0.0, 1.0)
        check_range("high_margin", self.high_margin, 0.0, 1.0)
        check_range("seed", self.seed, 0, 2**32 - 1)


class CascadeHead:
    """Gate every image, call the localizer between the gate thresholds; `gate` / `localizer` are the subclass's."""

    task = TASK
    kind = "cascade"
    config_class = CascadeConfig

    config: CascadeConfig
    gate: Any
    localizer: Any
    state: dict[str, Any]
    postprocess: Calibration | None
    last_call: dict[str, Any]

    def predict(self, images: Sequence[ImageLike], maps: bool = True) -> Prediction:
        """Gate every image; run the localizer only on images between the gate thresholds.

        With a calibration (`postprocess`), also normalized scores, decisions and (with maps) masks.
        """
        images = images_of(images)
        th = self.state.get("thresholds")
        if th is None:
            raise OddspotError("the cascade gate has no thresholds; fit it with validation data (oddspot fit --split validation)")
        t0 = time.perf_counter()
        gate_pred, g = self.gate_pass(images, maps)
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

    def gate_pass(self, images: Sequence[Any], maps: bool) -> tuple[Prediction, np.ndarray]:
        """The gate's prediction (with maps when asked or when the supervised gate needs them) and the
        gate value the thresholds apply to: the gate score, or the supervised gate's logit."""
        supervised = self.config.gate == "supervised"
        pred = self.gate.predict(images, maps=maps or supervised)
        if not supervised:
            return pred, pred.scores
        classifier = self.state.get("classifier")
        if classifier is None:
            raise OddspotError("the supervised cascade gate has no classifier; fit the model again")
        return pred, classifier_logit(classifier, gate_features(pred.scores, pred.maps))

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

    @staticmethod
    def read_record(record: Record) -> tuple[CascadeConfig, dict[str, Any], Calibration | None, dict[str, Record]]:
        """Config, state, calibration and the two sub-records (`gate`, `localizer`, without graphs) of a saved cascade."""
        config = from_mapping(CascadeConfig, record.config, f"{where(record)}: config",
                              complete=True)
        state = display_state(record.state, record)
        for part in PARTS:
            if not isinstance(state.get(part), dict):
                raise OddspotError(f"{where(record)}: state.{part} must be an object; the file is damaged, refit the model")
        thresholds = state.get("thresholds")
        if thresholds is not None:
            check_thresholds(thresholds, record)
        if (config.gate == "supervised") != ("classifier" in state):
            raise OddspotError(f"{where(record)}: state.classifier must be present exactly when config.gate is "
                               "supervised; the file is damaged, refit the model")
        if "classifier" in state:
            check_classifier(state["classifier"], record)
        kinds = {"gate": "patchcore", "localizer": config.localizer}
        options = {"gate": config.gate_options, "localizer": config.localizer_options}
        subs = {part: Record(TASK, kinds[part], options[part], state[part], None, record.prefixed(part),
                             record.oddspot_version, record.source) for part in PARTS}
        return config, dict(state), record_postprocess(record), subs

    def set_fitted(self, gate: Any, localizer: Any, state: dict[str, Any], postprocess: Calibration | None) -> None:
        """Install the two fitted parts, the cascade's state (thresholds, parts' states) and calibration."""
        self.gate, self.localizer = gate, localizer
        self.state = state
        self.postprocess = postprocess
        self.last_call = {}


def gate_features(scores: np.ndarray, maps: Sequence[np.ndarray]) -> np.ndarray:
    """Images x `GATE_FEATURES`: each image's gate score and pooled statistics of its gate map."""
    rows = np.zeros((len(maps), len(GATE_FEATURES)))
    for i, m in enumerate(maps):  # one row per image; each map is pooled by vectorized reductions
        v = np.asarray(m, np.float64).ravel()
        k = max(1, v.size // 100)
        rows[i] = (scores[i], v.max(), v.mean(), v.std(), np.partition(v, v.size - k)[v.size - k:].mean())
    return rows


def classifier_logit(classifier: dict[str, Any], features: np.ndarray) -> np.ndarray:
    """The supervised gate's log-odds of "anomalous" for rows of `gate_features`."""
    z = (features - np.asarray(classifier["mean"])) / np.asarray(classifier["scale"])
    return (z @ np.asarray(classifier["coef"]) + float(classifier["intercept"])).astype(np.float64)


def check_classifier(c: Any, record: Record) -> None:
    """The stored supervised-gate classifier: its keys, feature names and finite numbers of the right lengths."""
    src = f"{where(record)}: state.classifier"
    if not isinstance(c, dict) or set(c) != set(CLASSIFIER_KEYS):
        raise OddspotError(f"{src} must hold {', '.join(CLASSIFIER_KEYS)}; refit the model")
    if c["features"] != list(GATE_FEATURES):
        raise OddspotError(f"{src}.features must be {list(GATE_FEATURES)}; refit the model")
    for key in ("mean", "scale", "coef"):
        v = c[key]
        if not isinstance(v, list) or len(v) != len(GATE_FEATURES) or not all(finite_number(x) for x in v):
            raise OddspotError(f"{src}.{key} must be {len(GATE_FEATURES)} finite numbers; refit the model")
    if not all(x > 0 for x in c["scale"]):
        raise OddspotError(f"{src}.scale must be positive; the file is damaged, refit the model")
    for key in ("intercept", "l2", "n_normal", "n_synthetic"):
        if not finite_number(c[key]) or (key != "intercept" and c[key] < 0):
            raise OddspotError(f"{src}.{key} must be a finite number (>= 0 but the intercept); refit the model")


def build_part(part: str, cls: Any, record: Record, **kwargs: Any) -> Any:
    """`cls.from_record(record, **kwargs)` for the cascade's `part`, its errors saying which part failed."""
    try:
        return cls.from_record(record, **kwargs)
    except OddspotError as exc:
        raise OddspotError(f"{exc} (in the cascade's {part})") from None


def check_thresholds(th: Any, record: Record) -> None:
    """The stored gate thresholds: an object of finite numbers with low <= high."""
    if not isinstance(th, dict) or set(th) != set(THRESHOLD_KEYS):
        raise OddspotError(f"{where(record)}: state.thresholds must hold {', '.join(THRESHOLD_KEYS)}; refit the model")
    for key in THRESHOLD_KEYS:
        v = th[key]
        if not finite_number(v):
            raise OddspotError(f"{where(record)}: state.thresholds.{key} must be a finite number, got {v!r:.40}")
    if th["low"] > th["high"]:
        raise OddspotError(f"{where(record)}: state.thresholds.low exceeds high; the file is damaged, refit the model")


__all__ = ["GATE_FEATURES", "GATE_KINDS", "LOCALIZER_KINDS", "PARTS", "THRESHOLD_KEYS", "CascadeConfig", "CascadeHead",
           "build_part", "check_classifier", "check_thresholds", "classifier_logit", "gate_features"]
