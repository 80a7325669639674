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
from typing import Any

import numpy as np

from oddspot.calibration import Calibration
from oddspot.configs import check_range, finite_number
from oddspot.detectors.base import (
    TASK, ImageLike, Prediction, display_state, finish, images_of, record_config, record_postprocess, where,
)
from oddspot.errors import OddspotError
from oddspot.runs.contract import Record

LOCALIZER_KINDS = ("patchcore", "padim")
PARTS = ("gate", "localizer")
THRESHOLD_KEYS = ("low", "high", "localizer_min", "localizer_max", "map_scale", "validation_call_rate", "n_validation")


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
        if self.localizer not in LOCALIZER_KINDS:
            raise OddspotError(f"cascade localizer {self.localizer!r} unknown; use one of {', '.join(LOCALIZER_KINDS)}")
        if not self.backbone:
            raise OddspotError("backbone must name a backbone, e.g. efficientnet_lite0")
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

    @staticmethod
    def read_record(record: Record) -> tuple[CascadeConfig, dict[str, Any], Calibration | None, dict[str, Record]]:
        """Config, state, calibration and the two sub-records (`gate`, `localizer`, without graphs) of a saved cascade."""
        config = record_config(CascadeConfig, record)
        state = display_state(record.state, record)
        for part in PARTS:
            if not isinstance(state.get(part), dict):
                raise OddspotError(f"{where(record)}: state.{part} must be an object; the file is damaged, refit the model")
        thresholds = state.get("thresholds")
        if thresholds is not None:
            check_thresholds(thresholds, record)
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


__all__ = ["LOCALIZER_KINDS", "PARTS", "THRESHOLD_KEYS", "CascadeConfig", "CascadeHead", "build_part", "check_thresholds"]
