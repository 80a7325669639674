"""A backbone is a network plus how to feed it: its input scaling and the names of its feature layers."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oddspot.errors import OddspotError

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


SCALINGS = ("lite", "imagenet")


def scale_pixels(x: torch.Tensor, scaling: str = "lite") -> torch.Tensor:
    """The one input scaling per backbone family: float N x 3 x H x W pixels in 0..255 -> network input.

    "lite": (x - 127) / 128 (EfficientNet-Lite, as its weights were trained); "imagenet": the usual
    mean/std normalization of x / 255. Returned channels-last.
    """
    if scaling == "lite":
        x = (x - 127.0) / 128.0
    elif scaling == "imagenet":
        mean = torch.tensor(IMAGENET_MEAN, device=x.device, dtype=x.dtype).view(1, 3, 1, 1) * 255.0
        std = torch.tensor(IMAGENET_STD, device=x.device, dtype=x.dtype).view(1, 3, 1, 1) * 255.0
        x = (x - mean) / std
    else:
        raise OddspotError(f"backbone scaling {scaling!r} unknown; use one of {', '.join(SCALINGS)}")
    return x.contiguous(memory_format=torch.channels_last)


@dataclass
class Backbone:
    """A frozen feature network.

    `scaling` is "lite" for (x - 127) / 128 on 0..255 pixels (EfficientNet-Lite) or "imagenet" for
    the usual mean/std normalisation of x / 255. `aliases` maps friendly layer names to module names.
    """

    name: str
    model: nn.Module
    scaling: str = "lite"
    aliases: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.scaling not in SCALINGS:
            raise OddspotError(f"backbone scaling {self.scaling!r} unknown; use 'lite' or 'imagenet'")
        self.model.eval()
        for p in self.model.parameters():
            p.requires_grad_(False)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def module_name(self, layer: str) -> str:
        """Resolve a friendly layer name (e.g. 'stage3') or a module path (e.g. '_blocks.4')."""
        name = self.aliases.get(layer, layer)
        names = dict(self.model.named_modules())
        if name not in names or name == "":
            known = ", ".join(list(self.aliases) or [n for n in names if n][:12])
            raise OddspotError(f"layer {layer!r} not found in backbone {self.name}; choose from: {known}")
        return name

    def preprocess(self, images: np.ndarray | torch.Tensor, size: int | tuple[int, int] | None = None) -> torch.Tensor:
        """uint8 N x H x W x 3 (or one H x W x 3) -> float N x 3 x h x w, channels-last, on the device."""
        x = images if isinstance(images, torch.Tensor) else torch.from_numpy(np.array(images, copy=True))
        if x.ndim == 3:
            x = x[None]
        if x.dtype != torch.uint8 or x.shape[-1] != 3:
            raise OddspotError(f"backbone input must be uint8 N x H x W x 3, got {tuple(x.shape)} {x.dtype}")
        x = x.to(self.device).permute(0, 3, 1, 2).float()
        if size is not None:
            hw = (size, size) if isinstance(size, int) else tuple(size)
            if tuple(x.shape[-2:]) != hw:
                x = F.interpolate(x, size=hw, mode="bilinear", align_corners=False, antialias=True)
        return scale_pixels(x, self.scaling)

    def preprocess_batch(self, images: list[np.ndarray], size: int, batch_size: int) -> torch.Tensor:
        """Preprocess up to `batch_size` images, zero-padded to exactly `batch_size`.

        A fixed batch shape makes every image's arithmetic independent of how many images share
        its batch (kernels may change with the batch size), so scores never depend on the batch.
        """
        x = torch.cat([self.preprocess(img, size) for img in images])
        pad = batch_size - x.shape[0]
        if pad > 0:
            x = torch.cat([x, x.new_zeros((pad, *x.shape[1:]))]).contiguous(memory_format=torch.channels_last)
        return x


def build_backbone(name: str = "efficientnet_lite0", device: str | torch.device | None = None) -> Backbone:
    """Build a named backbone: 'efficientnet_lite0' (offline default) or 'torchvision:<arch>' when installed."""
    dev = torch.device(device) if device is not None else default_device()
    if name == "efficientnet_lite0":
        from oddspot.features.efficientnet_lite import EfficientNetLite0, efficientnet_lite0

        model = efficientnet_lite0(pretrained=True)
        aliases = {k: v[0] for k, v in EfficientNetLite0.LAYERS.items()}
        bb = Backbone(name, model, scaling="lite", aliases=aliases)
    elif name.startswith("torchvision:"):
        arch = name.split(":", 1)[1]
        try:
            import torchvision
        except Exception as exc:  # torchvision can be installed yet fail to import its compiled ops
            raise OddspotError(f"backbone {name}: torchvision is not usable here ({exc}); use efficientnet_lite0") from None
        try:
            model = torchvision.models.get_model(arch, weights="DEFAULT")
        except Exception as exc:
            raise OddspotError(f"backbone {name}: cannot build it ({exc}); weights must already be cached offline") from None
        bb = Backbone(name, model, scaling="imagenet", aliases={"layer2": "layer2", "layer3": "layer3"})
    else:
        raise OddspotError(f"unknown backbone {name!r}; use 'efficientnet_lite0' or 'torchvision:<arch>'")
    bb.model.to(dev).to(memory_format=torch.channels_last)
    return bb


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
