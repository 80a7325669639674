"""The networks of each fitted model, as torch modules ready to export, with static example inputs.

`GRAPH_BUILDERS[(task, kind)](model)` returns the graphs of that kind, by name. Each graph is the
network only up to the deepest layer the model uses (feature extraction stops its forward pass
there, so tracing records nothing deeper); nearest-neighbour search, scoring and maps stay outside
the graph, in numpy, shared with the torch model (never a pairwise-distance matrix in a graph).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from oddspot.export.graphs_inspect import cascade_graphs, padim_graphs
from oddspot.export.graphs_road import road_graphs
from oddspot.export.graphs_video import autoencoder_graphs, motion_graphs
from oddspot.features.backbone import scale_pixels
from oddspot.imaging import resize_image


@dataclass
class TorchGraph:
    """A module to export: `module(example)` is what the runtime computes for one input.

    `prepare(image)` turns one H x W x 3 uint8 image into the graph's numpy input (int8 calibration
    feeds training images through it).
    """

    module: torch.nn.Module
    example: torch.Tensor
    prepare: Callable[[np.ndarray], np.ndarray]
    output_names: tuple[str, ...] = ("features",)


class _PatchCoreTrunk(torch.nn.Module):
    """1 x S x S x 3 pixels (0..255) -> 1 x h x w x C PatchCore patch features."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model
        self.backbone_model = model.backbone.model  # registered, so the exporter sees its weights

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = scale_pixels(pixels.permute(0, 3, 1, 2), self.model.backbone.scaling)
        return self.model.trunk_features(x)


def patchcore_graphs(model: Any) -> dict[str, TorchGraph]:
    size = model.config.image_size
    device = model.backbone.device
    return {"trunk": TorchGraph(_PatchCoreTrunk(model).eval(), torch.zeros(1, size, size, 3, device=device),
                                lambda image: resize_image(image, size)[None])}


GRAPH_BUILDERS: dict[tuple[str, str], Callable[[Any], dict[str, TorchGraph]]] = {
    ("inspect", "patchcore"): patchcore_graphs,
    ("inspect", "padim"): padim_graphs,
    ("inspect", "cascade"): cascade_graphs,
    ("road", "deeplabv3plus"): road_graphs,
    ("video", "motion"): motion_graphs,
    ("video", "autoencoder"): autoencoder_graphs,
}
