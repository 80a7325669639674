"""What every inspect detector promises, and the parts they share.

A detector fits on normal images, predicts scores and maps, and saves and loads through the run
contract (`oddspot.runs`): `model.json` + `model.safetensors`. Its post-processor, a
`Calibration` fitted on validation data, travels inside `model.json["postprocess"]`, so
`predict` returns normalized scores, decisions and defect masks whenever the model has one.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np

from oddspot.calibration import Calibration
from oddspot.configs import finite_number, from_mapping
from oddspot.data.sample import Sample
from oddspot.errors import OddspotError
from oddspot.progress import track
from oddspot.runs.contract import MODEL_FILE, Record
from oddspot.runs.prediction import Prediction, finite_scores

TASK = "inspect"
C = TypeVar("C")
ImageLike = np.ndarray | Sample


@runtime_checkable
class Detector(Protocol):
    """The inspect detector contract (parameters visible in `config`, fitted state explicit)."""

    task: ClassVar[str]
    kind: ClassVar[str]
    config: Any
    state: dict[str, Any]
    postprocess: Calibration | None

    def fit(self, images: Sequence[ImageLike]) -> Detector: ...

    def predict(self, images: Sequence[ImageLike], maps: bool = True) -> Prediction: ...

    def save(self, folder: str | Path) -> Path: ...

    def to_record(self) -> Record: ...


def images_of(items: Sequence[ImageLike]) -> list[np.ndarray]:
    """H x W x 3 uint8 arrays from arrays or `Sample`s (anything else is a one-line error)."""
    out = []
    for i, item in enumerate(items):
        image = item.image if isinstance(item, Sample) else item
        if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            got = f"{image.shape} {image.dtype}" if isinstance(image, np.ndarray) else type(image).__name__
            raise OddspotError(f"image {i}: expected an H x W x 3 uint8 array or a Sample, got {got}")
        out.append(image)
    return out


def batches(images: list[np.ndarray], size: int, description: str) -> Iterator[tuple[int, list[np.ndarray]]]:
    """(start, images) in chunks of `size`, with a progress bar named `description`."""
    starts = range(0, len(images), size)
    for lo in track(starts, description, total=len(starts)):
        yield lo, images[lo:lo + size]


def make_config(cls: type[C], config: C | None, options: dict[str, Any], name: str) -> C:
    """The detector's config: the one given, or one built strictly from keyword options."""
    if config is not None and options:
        raise OddspotError(f"pass either a {cls.__name__} or keyword options, not both")
    if config is not None:
        if not isinstance(config, cls):
            raise OddspotError(f"{name}: config must be a {cls.__name__}, got {type(config).__name__}")
        return config
    return from_mapping(cls, options, name)


def finish(pred: Prediction, postprocess: Calibration | None) -> Prediction:
    """Fill normalized scores, decisions and (with maps and a pixel threshold) masks from `postprocess`;
    non-finite scores are an error (`runs.prediction.finite_scores`)."""
    finite_scores(pred.scores)
    if postprocess is None:
        return pred
    pred.normalized = postprocess.image(pred.scores)
    pred.decisions = postprocess.decide(pred.scores)
    if pred.maps is not None and postprocess.pixel is not None:
        pred.masks = [postprocess.defect_mask(m) for m in pred.maps]
    return pred


def where(record: Record) -> str:
    """`<folder>/model.json`, for error messages about a record's JSON parts."""
    return f"{record.source}/{MODEL_FILE}"


def record_config(cls: type[C], record: Record) -> C:
    """The config stored in `record`, read strictly (every field present)."""
    return from_mapping(cls, record.config, f"{where(record)}: config", complete=True)


def record_postprocess(record: Record) -> Calibration | None:
    """The calibration stored in `record`, or None."""
    if record.postprocess is None:
        return None
    return Calibration.from_dict(record.postprocess, f"{where(record)}: postprocess")


def state_int(record: Record, state: dict[str, Any], key: str, required: bool = True) -> int | None:
    """An integer field of the stored state (a one-line error when it has another type)."""
    if key not in state:
        if required:
            raise OddspotError(f"{where(record)}: state.{key} missing; the file is damaged, refit the model")
        return None
    v = state[key]
    if isinstance(v, bool) or not isinstance(v, int):
        raise OddspotError(f"{where(record)}: state.{key} must be an integer, got {v!r:.40}")
    return v


def check_shape(record: Record, name: str, tensor: np.ndarray, expected: tuple[int, ...], why: str) -> None:
    """A one-line error when `tensor` does not have the shape the model's config and state imply."""
    if tuple(tensor.shape) != tuple(expected):
        raise OddspotError(f"{record.source}: tensor {name!r} has shape {tuple(tensor.shape)}, but {why} implies "
                           f"{tuple(expected)}; the folder mixes parts of different models, refit it")


def display_state(state: dict[str, Any], record: Record) -> dict[str, Any]:
    """The heatmap colour scale of the stored state, checked (positive finite number, or absent)."""
    v = state.get("map_display_max")
    if v is not None and (not finite_number(v) or v < 0):
        raise OddspotError(f"{where(record)}: state.map_display_max must be a finite number >= 0, got {v!r:.40}")
    return state


__all__ = ["Detector", "ImageLike", "Prediction", "TASK", "images_of", "make_config", "finish"]
