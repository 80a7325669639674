"""Test-time augmentation views for frame models: identity, horizontal flip, vertical flip, 180 degree rotation.

Each view is its own inverse, so a map computed on a transformed frame is brought back to the
frame's orientation by applying the same view again (`invert_view`). Views work on numpy arrays
and torch tensors alike; this module never imports torch (the torch-free runtime reads the views).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Union

import numpy as np

from oddspot.errors import OddspotError

if TYPE_CHECKING:
    import torch

VIEWS: tuple[str, ...] = ("identity", "hflip", "vflip", "rot180")
# `--tta` at video predict/evaluate (names in `oddspot.choices.VIDEO_TTA`) -> the views averaged;
# "model" (not here) keeps the views the model was fitted with.
TTA_VIEWS: dict[str, tuple[str, ...]] = {
    "none": ("identity",),
    "hflip": ("identity", "hflip"),
    "flips": ("identity", "hflip", "vflip"),
    "all": VIEWS,
}

Array = Union[np.ndarray, "torch.Tensor"]


def check_views(views: Sequence[str]) -> tuple[str, ...]:
    """Validate view names; raise OddspotError naming the bad one."""
    views = tuple(views)
    if not views:
        raise OddspotError("tta views: at least one view is needed; use 'identity' for none")
    for v in views:
        if v not in VIEWS:
            raise OddspotError(f"tta view {v!r} unknown; choose from {', '.join(VIEWS)}")
    return views


def _flip(x: Array, dims: tuple[int, ...]) -> Array:
    if isinstance(x, np.ndarray):
        return np.ascontiguousarray(np.flip(x, axis=dims))
    return x.flip(dims)  # a torch tensor


def apply_view(x: Array, view: str, spatial: tuple[int, int] = (-2, -1)) -> Array:
    """Transform `x` whose height and width are the axes `spatial` (default: the last two, as in N x C x H x W)."""
    h_axis, w_axis = spatial
    if view == "identity":
        return x
    if view == "hflip":
        return _flip(x, (w_axis,))
    if view == "vflip":
        return _flip(x, (h_axis,))
    if view == "rot180":
        return _flip(x, (h_axis, w_axis))
    raise OddspotError(f"tta view {view!r} unknown; choose from {', '.join(VIEWS)}")


def invert_view(x: Array, view: str, spatial: tuple[int, int] = (-2, -1)) -> Array:
    """Bring a map computed on `apply_view(frame, view)` back to the frame's orientation."""
    return apply_view(x, view, spatial)


def tta_views(x: Array, views: Sequence[str] = VIEWS, spatial: tuple[int, int] = (-2, -1)) -> list[Array]:
    """The transformed copies of `x`, one per view, in the order given."""
    return [apply_view(x, v, spatial) for v in check_views(views)]


def tta_by_name(name: str) -> tuple[str, ...] | None:
    """The views of a `--tta` name; None for 'model' (the views the model was fitted with)."""
    if name == "model":
        return None
    if name not in TTA_VIEWS:
        raise OddspotError(f"--tta {name!r} unknown; use model or one of {', '.join(TTA_VIEWS)}")
    return TTA_VIEWS[name]
