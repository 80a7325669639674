"""The unit of data that flows through oddspot."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from oddspot.errors import OddspotError

T = TypeVar("T")


@dataclass
class Sample:
    """One image with optional ground truth.

    `image` is H x W x 3 uint8 RGB; `mask` is H x W bool (True = anomalous pixel) or None;
    `label` is 0 normal, 1 anomalous, None unknown; `meta` carries path, category, defect type,
    video id, frame index and whatever a reader knows.
    """

    image: np.ndarray
    mask: np.ndarray | None = None
    label: int | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image.ndim != 3 or self.image.shape[2] != 3 or self.image.dtype != np.uint8:
            raise ValueError(f"Sample.image must be HxWx3 uint8, got {self.image.shape} {self.image.dtype}")
        if self.mask is not None and self.mask.shape != self.image.shape[:2]:
            raise ValueError(f"Sample.mask shape {self.mask.shape} differs from image {self.image.shape[:2]}")

    @property
    def path(self) -> Path | None:
        """Where the image came from, when known."""
        p = self.meta.get("path")
        return Path(p) if p is not None else None


def iter_readable(dataset: Sequence[T], on_error: Callable[[OddspotError], None] | None = None) -> Iterator[T]:
    """Yield every item of a lazily read dataset (`dataset[i]` decodes); an item whose file is bad
    (OddspotError) is passed to `on_error` (default: raise) and skipped, the others still come."""
    for i in range(len(dataset)):
        try:
            yield dataset[i]
        except OddspotError as exc:
            if on_error is None:
                raise
            on_error(exc)
