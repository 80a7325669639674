"""The road model's network as one exported graph: pixels at the network's input size -> logits and features.

The graph `network` takes 1 x h x w x 3 pixels (0..255), scales them as the backbone expects and
runs DeepLabV3+ in eval mode: the auxiliary head never runs, so tracing records none of it. It
returns the logits at the input size (1 x K x h x w) and the decoder feature map the Mahalanobis
score uses (1 x D x h/4 x w/4). Every score, the resizing to the image's size, the blur and the
decisions stay in numpy (`oddspot.road.head`), shared with the torch model.

The input size is `train.eval_size` when the model has one (torch resizes every image to it
too); otherwise the network runs images at their own size in torch, and the graph takes the size
most training images have (`state.image_size`, or read from the training data of older runs).
`oddspot.export.graphs` lists `road_graphs` in `GRAPH_BUILDERS` (and so is imported here only
when a builder runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from oddspot.data.streethazards import load_split
from oddspot.errors import OddspotError
from oddspot.features.backbone import scale_pixels
from oddspot.files import read_json
from oddspot.imaging import resize_pixels
from oddspot.runs.contract import MODEL_FILE

if TYPE_CHECKING:
    from oddspot.export.graphs import TorchGraph
    from oddspot.road.estimator import RoadModel


class _RoadNetwork(torch.nn.Module):
    """1 x h x w x 3 pixels (0..255) -> (1 x K x h x w logits, 1 x D x h/4 x w/4 features)."""

    def __init__(self, model: RoadModel) -> None:
        super().__init__()
        self.network, _ = model._fitted()
        self.features = model.config.scores.features

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.network(scale_pixels(pixels.permute(0, 3, 1, 2), "lite"), features=self.features)
        return out["logits"], out["features"]


def _training_data(state: dict[str, Any], where: str) -> str:
    data = state.get("data") if isinstance(state, dict) else None
    if not isinstance(data, str) or not data:
        raise OddspotError(f"{where}: holds no record of its training data; pass --calibration DIR (street images)")
    return data


def network_input_size(model: RoadModel) -> tuple[int, int]:
    """(h, w) of the exported graph's input: `train.eval_size`, else the training images' common size."""
    if model.config.train.eval_size is not None:
        return tuple(model.config.train.eval_size)
    size = model.state.get("image_size")
    if size is None:  # a run fitted before state.image_size was recorded
        from oddspot.road.estimator import common_image_size

        data = _training_data(model.state, "the road model")
        try:
            size = common_image_size(load_split(data, "training"))
        except OddspotError as exc:
            size, why = None, str(exc)
        else:
            why = f"{data}: no readable training image"
        if size is None:
            raise OddspotError(f"{why}; the model has no train.eval_size, so export needs the training images' size: "
                               "restore the data, or refit with --eval-size")
    if (not isinstance(size, list) or len(size) != 2
            or not all(isinstance(v, int) and not isinstance(v, bool) and 8 <= v <= 8192 for v in size)):
        raise OddspotError(f"state.image_size {size!r:.60} is not [height, width] of 8 to 8192 pixels; refit the model")
    return int(size[0]), int(size[1])


def road_graphs(model: RoadModel) -> dict[str, TorchGraph]:
    """{"network": 1 x h x w x 3 pixels (0..255) -> (logits, features)} at `network_input_size(model)`."""
    from oddspot.export.graphs import TorchGraph

    size = network_input_size(model)

    def prepare(image: np.ndarray) -> np.ndarray:
        return resize_pixels(image, size)[None]

    example = torch.zeros(1, *size, 3, device=model.device)
    return {"network": TorchGraph(_RoadNetwork(model).eval(), example, prepare, ("logits", "features"))}


def road_training_images(run: Path) -> list[Path]:
    """The training images of a road run (the data named in its model.json must still be there)."""
    meta = read_json(Path(run) / MODEL_FILE, "refit the model")
    data = _training_data(meta.get("state"), f"{run}")
    return list(load_split(data, "training").image_paths)
