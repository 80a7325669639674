"""The video models' networks as exported graphs: one temporal stack or one frame in, at the model's size.

- motion, graph `trunk`: 1 x H x W x 3 grey levels (0..255; the temporal stack t - 2 gap, t - gap,
  t as channels) -> 1 x h x w x C deep features, `MotionDetector.trunk_features`: the backbone up
  to the deepest layer used, local averaging, every layer brought to the deepest one's grid. The
  block-matching flow stays in numpy (`video.motion_head.block_flow`), shared with the torch
  model: it gathers each frame's foreground pixels (a set that depends on the frame), and its
  sums are exact there, so both give the same flow to the bit. Patch rows, the kNN search
  (never in a graph) and the maps are numpy too.
- autoencoder, graph `network`: 1 x H x W x 3 pixels (0..255) -> 1 x K x H x W error maps (pixel,
  then each feature layer, averaged over the TTA views), `FrameAutoencoder.error_maps`: encoder,
  decoder and the second encoder pass on the reconstruction, up to the deepest layer used. The
  power transforms and weights that make a frame's score stay in numpy (`video.autoencoder_head`).

int8 calibration feeds single images through `prepare` (resized as video frames are): for motion,
an image becomes the temporal stack of a still scene (its grey levels in all three channels).
`oddspot.export.graphs` lists these builders in `GRAPH_BUILDERS`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from oddspot.data.avenue import resize_frame
from oddspot.features.backbone import scale_pixels
from oddspot.video.motion_head import to_grey

if TYPE_CHECKING:
    from oddspot.export.graphs import TorchGraph
    from oddspot.video.autoencoder import FrameAutoencoder
    from oddspot.video.motion import MotionDetector


class _MotionTrunk(torch.nn.Module):
    """1 x H x W x 3 grey levels of a temporal stack -> 1 x h x w x C deep features."""

    def __init__(self, model: MotionDetector) -> None:
        super().__init__()
        self.model = model
        self.backbone_model = model.backbone.model  # registered, so the exporter sees its weights

    def forward(self, stacks: torch.Tensor) -> torch.Tensor:
        return self.model.trunk_features(scale_pixels(stacks.permute(0, 3, 1, 2), self.model.backbone.scaling))


class _AutoencoderNetwork(torch.nn.Module):
    """1 x H x W x 3 pixels -> 1 x K x H x W error maps, one per score component."""

    def __init__(self, model: FrameAutoencoder) -> None:
        super().__init__()
        self.model = model
        self.decoder = model.decoder
        if model.encoder is not None:
            self.encoder = model.encoder
        else:
            self.backbone_model = model.backbone.model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        scaling = self.model.backbone.scaling if self.model.backbone is not None else "lite"
        return self.model.error_maps(scale_pixels(pixels.permute(0, 3, 1, 2), scaling).contiguous())


def _still_stack(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    grey = to_grey(resize_frame(image, size)[None])[0].astype(np.float32)
    return np.repeat(grey[None, :, :, None], 3, axis=-1)


def motion_graphs(model: MotionDetector) -> dict[str, TorchGraph]:
    from oddspot.export.graphs import TorchGraph

    size = tuple(model.config.size)
    example = torch.zeros(1, *size, 3, device=model.backbone.device)
    return {"trunk": TorchGraph(_MotionTrunk(model).eval(), example, lambda image: _still_stack(image, size))}


def autoencoder_graphs(model: FrameAutoencoder) -> dict[str, TorchGraph]:
    from oddspot.export.graphs import TorchGraph

    size = tuple(model.config.size)
    example = torch.zeros(1, *size, 3, device=model.device)
    return {"network": TorchGraph(_AutoencoderNetwork(model).eval(), example,
                                  lambda image: resize_frame(image, size)[None].astype(np.float32), ("maps",))}
