"""StreetHazards reader: street scenes with 13 known classes and an unseen-object class at test time.

Layout: `train/images/training/<town>/*.png`, `train/images/validation/...`,
`test/images/test/<town>/*.png`; annotations at the same paths with `images` replaced by
`annotations`. Label PNG values are 1-indexed: stored value v means class v - 1. Classes 0..12 are
the known classes (0 = unlabeled, counted as a normal class), 13 is the anomaly class (test only).
A stored 0 has no class: it becomes IGNORE_INDEX.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from oddspot.data.image_io import list_images, open_image, read_image
from oddspot.data.sample import Sample, iter_readable
from oddspot.errors import OddspotError

CLASS_NAMES: tuple[str, ...] = (
    "unlabeled",
    "building",
    "fence",
    "other",
    "pedestrian",
    "pole",
    "road line",
    "road",
    "sidewalk",
    "vegetation",
    "car",
    "wall",
    "traffic sign",
)
NUM_KNOWN_CLASSES = len(CLASS_NAMES)
ANOMALY_CLASS = 13
IGNORE_INDEX = 255

SPLITS: dict[str, tuple[str, str]] = {
    "training": ("train", "training"),
    "validation": ("train", "validation"),
    "test": ("test", "test"),
}


@dataclass
class SceneSample:
    """One street scene: `image` H x W x 3 uint8 RGB, `labels` H x W uint8 (0-indexed classes,
    ANOMALY_CLASS for unseen objects, IGNORE_INDEX for unannotated pixels), `meta` (path, town, split)."""

    image: np.ndarray
    labels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def anomaly_mask(self) -> np.ndarray:
        """H x W bool, True on pixels of the anomaly class."""
        return self.labels == ANOMALY_CLASS

    @property
    def valid(self) -> np.ndarray:
        """H x W bool, False on pixels without annotation."""
        return self.labels != IGNORE_INDEX

    def to_sample(self) -> Sample:
        """The generic Sample view: mask = anomaly pixels, label = 1 when the scene holds any."""
        mask = self.anomaly_mask
        return Sample(self.image, mask=mask, label=int(mask.any()), meta=dict(self.meta))


def decode_labels(stored: np.ndarray) -> np.ndarray:
    """1-indexed stored label values -> 0-indexed classes; stored 0 -> IGNORE_INDEX."""
    stored = np.asarray(stored)
    if stored.ndim == 3:
        stored = stored[..., 0]
    top = int(stored.max(initial=0))
    if top > ANOMALY_CLASS + 1:
        raise ValueError(f"stored label value {top} is outside 0..{ANOMALY_CLASS + 1}")
    out = stored.astype(np.int32) - 1
    out[stored == 0] = IGNORE_INDEX
    return out.astype(np.uint8)


def encode_labels(labels: np.ndarray) -> np.ndarray:
    """0-indexed classes -> 1-indexed stored values (IGNORE_INDEX -> 0), as uint8."""
    labels = np.asarray(labels)
    out = labels.astype(np.int32) + 1
    out[labels == IGNORE_INDEX] = 0
    return out.astype(np.uint8)


def read_labels(path: str | os.PathLike[str], shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a StreetHazards annotation PNG as H x W uint8 0-indexed classes (see `decode_labels`)."""
    path = Path(path)
    img = open_image(path, "annotation")
    if img.mode not in ("L", "P", "I", "I;16", "RGB"):
        raise OddspotError(f"{path}: annotation mode {img.mode} is not a label image; expected 8-bit class values")
    arr = np.asarray(img)
    if arr.ndim == 3:
        if not ((arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all()):
            raise OddspotError(f"{path}: annotation is colour, not class values; use the official label PNGs")
        arr = arr[..., 0]
    try:
        labels = decode_labels(arr)
    except ValueError as exc:
        raise OddspotError(f"{path}: {exc}; is this a StreetHazards annotation?") from None
    if shape is not None and labels.shape != tuple(shape):
        raise OddspotError(
            f"{path}: annotation is {labels.shape[1]}x{labels.shape[0]} but its image is {shape[1]}x{shape[0]}"
        )
    return labels


class StreetHazardsSplit:
    """One split of a StreetHazards-layout folder, read lazily.

    `split` is 'training', 'validation' or 'test'. Images without an annotation file are an error
    at listing time (naming the first such file); undecodable files are reported by `iter_samples`.
    """

    num_classes = NUM_KNOWN_CLASSES
    class_names = CLASS_NAMES

    def __init__(self, root: str | os.PathLike[str], split: str) -> None:
        if split not in SPLITS:
            raise OddspotError(f"split {split!r} unknown; use one of {', '.join(SPLITS)}")
        self.root = Path(root)
        self.split = split
        top, sub = SPLITS[split]
        self.image_dir = self.root / top / "images" / sub
        self.annotation_dir = self.root / top / "annotations" / sub
        if not self.image_dir.is_dir():
            raise OddspotError(
                f"{self.image_dir}: folder not found; DATA must have the StreetHazards layout "
                f"({top}/images/{sub}/<town>/*.png)"
            )
        self.image_paths = list_images(self.image_dir, recursive=True)
        if not self.image_paths:
            raise OddspotError(f"{self.image_dir}: no images found; check DATA")
        self.annotation_paths = [self.annotation_dir / p.relative_to(self.image_dir) for p in self.image_paths]
        missing = [a for a in self.annotation_paths if not a.exists()]
        if missing:
            raise OddspotError(
                f"{missing[0]}: annotation missing ({len(missing)} of {len(self.image_paths)} in {split}); "
                "every image needs its label PNG at the same path under annotations/"
            )

    def __len__(self) -> int:
        return len(self.image_paths)

    def __getitem__(self, index: int) -> SceneSample:
        path = self.image_paths[index]
        image = read_image(path)
        labels = read_labels(self.annotation_paths[index], shape=image.shape[:2])
        rel = path.relative_to(self.image_dir)
        town = rel.parts[0] if len(rel.parts) > 1 else ""
        meta = {"path": str(path), "annotation": str(self.annotation_paths[index]), "town": town,
                "split": self.split, "name": str(rel.with_suffix(""))}
        return SceneSample(image, labels, meta)

    def iter_samples(self, on_error: Callable[[OddspotError], None] | None = None) -> Iterator[SceneSample]:
        """Yield every readable sample; a bad file is passed to `on_error` (default: raise) and skipped."""
        return iter_readable(self, on_error)


def load_split(root: str | os.PathLike[str], split: str) -> StreetHazardsSplit:
    """Open one split of a StreetHazards-layout folder."""
    return StreetHazardsSplit(root, split)


def write_labels(path: str | os.PathLike[str], labels: np.ndarray) -> None:
    """Write 0-indexed labels as a 1-indexed StreetHazards annotation PNG (atomically)."""
    from oddspot.files import write_png

    write_png(path, encode_labels(labels))

