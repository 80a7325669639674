"""Running the segmentation network on batches of scenes."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

import numpy as np
import torch
import torch.nn.functional as F

from oddspot.road.model import DeepLabV3Plus, preprocess

T = TypeVar("T")


def same_size_batches(samples: Iterable[T], batch_size: int) -> Iterator[list[T]]:
    """Group consecutive samples (anything with `.image`) into batches of one image size."""
    batch: list[T] = []
    for s in samples:
        if batch and (len(batch) == batch_size or batch[0].image.shape != s.image.shape):  # type: ignore[attr-defined]
            yield batch
            batch = []
        batch.append(s)
    if batch:
        yield batch


@torch.inference_mode()
def run_model(model: DeepLabV3Plus, images: np.ndarray, size: tuple[int, int] | None = None,
              features: str | None = None) -> dict[str, torch.Tensor]:
    """uint8 N x H x W x 3 -> {'logits': N x K x H x W float32} and, with `features` (a name in
    model.FEATURE_SOURCES), 'features': N x D x h x w.

    With `size` the network sees the images resized to (h, w); logits are resized back to H x W.
    """
    device = next(model.parameters()).device
    x = preprocess(torch.from_numpy(np.array(images, dtype=np.uint8)).to(device))
    hw = tuple(images.shape[1:3])
    if size is not None and tuple(size) != hw:
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    out = model(x, features=features)
    if tuple(out["logits"].shape[-2:]) != hw:
        out["logits"] = F.interpolate(out["logits"], size=hw, mode="bilinear", align_corners=False)
    out["logits"] = out["logits"].float()
    return out


@torch.inference_mode()
def network_outputs_at(model: DeepLabV3Plus, image: np.ndarray, size: tuple[int, int],
                       features: str) -> tuple[np.ndarray, np.ndarray]:
    """One uint8 H x W x 3 image through the network at input size `size` (h, w) -> (float32 K x h x w
    logits, float32 D x h/4 x w/4 features of `features`): `RoadModel.network_outputs` at a chosen size,
    for test-time augmentation (`oddspot.road.tta`)."""
    device = next(model.parameters()).device
    x = preprocess(torch.from_numpy(np.array(image[None], dtype=np.uint8)).to(device))
    if tuple(size) != tuple(image.shape[:2]):
        x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    out = model(x, features=features)
    return out["logits"][0].float().cpu().numpy(), out["features"][0].float().cpu().numpy()
