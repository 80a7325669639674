"""What every detector promises: fit on normal samples, predict scores and maps, save, load."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from oddspot import __version__
from oddspot.errors import OddspotError
from oddspot.runs.prediction import Prediction

FORMAT_VERSION = 1


class Detector(Protocol):
    """The detector contract (scikit-learn-like: parameters visible, fitted state explicit)."""

    def fit(self, images: list[np.ndarray]) -> "Detector": ...

    def predict(self, images: list[np.ndarray], maps: bool = True) -> Prediction: ...

    def save(self, folder: str | Path) -> None: ...


C = TypeVar("C")


def config_from_dict(cls: type[C], values: dict[str, Any], source: str) -> C:
    """Build a config dataclass, failing loudly on unknown keys (no silently ignored settings)."""
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise OddspotError(f"{source}: unknown option(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    converted = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in values:
            v = values[f.name]
            converted[f.name] = tuple(v) if isinstance(v, list) else v
    return cls(**converted)


def read_model_meta(folder: str | Path) -> dict[str, Any]:
    """Read a model folder's model.json and check its format version (any detector kind)."""
    folder = Path(folder)
    path = folder / "model.json"
    if not path.exists():
        raise OddspotError(f"{folder}: not a saved oddspot model (model.json missing); pass a run folder from `oddspot fit`")
    try:
        meta = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise OddspotError(f"{path}: corrupt JSON ({exc}); re-run `oddspot fit`") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise OddspotError(f"{path}: format version {meta.get('format_version')} unsupported (this oddspot reads {FORMAT_VERSION})")
    return meta


def read_model_json(folder: Path, detector: str) -> dict[str, Any]:
    """Read and check a model folder's model.json (format version, detector kind)."""
    meta = read_model_meta(folder)
    if meta.get("detector") != detector:
        raise OddspotError(f"{Path(folder) / 'model.json'}: holds a {meta.get('detector')!r} model, not {detector!r}")
    return meta


def model_json(detector: str, config: dict[str, Any], state: dict[str, Any]) -> dict[str, Any]:
    """The JSON half of a saved model: versions, configuration and fitted statistics."""
    return {
        "format_version": FORMAT_VERSION,
        "oddspot_version": __version__,
        "detector": detector,
        "config": config,
        "state": state,
    }
