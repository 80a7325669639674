"""A backbone is a network plus how to feed it: its input scaling and the names of its feature layers."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oddspot.choices import BACKBONES
from oddspot.errors import OddspotError
from oddspot.features.efficientnet_lite import VARIANTS, efficientnet_lite
from oddspot.features.resnet import LAYERS, SPECS, resnet
from oddspot.features.weights import read_state_dict, resolve_weights

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
    `weights` / `weights_sha256` say which weights file it was built from, when not its own.
    """

    name: str
    model: nn.Module
    scaling: str = "lite"
    aliases: dict[str, str] = field(default_factory=dict)
    weights: str | None = None  # the weights file or URL as given (None: the backbone's own)
    weights_sha256: str | None = None

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


def build_backbone(name: str = "efficientnet_lite0", device: str | torch.device | None = None,
                   weights: str | None = None, weights_sha256: str | None = None,
                   layers: Sequence[str] | None = None) -> Backbone:
    """Build a named backbone (`oddspot.choices.BACKBONES`, or 'torchvision:<arch>' when installed).

    EfficientNet-Lites carry their offline ImageNet weights unless `weights` (a file or URL) is given;
    ResNets need `weights`. With `weights_sha256` (from a saved model) the file must still have that
    digest. `layers`, when given, lets a ResNet be built only up to the deepest of them.
    """
    dev = torch.device(device) if device is not None else default_device()
    path, sha = resolve_weights(weights, weights_sha256) if weights is not None else (None, None)
    if name in VARIANTS:
        model = efficientnet_lite(name, pretrained=True, weights=path)
        bb = Backbone(name, model, scaling="lite", aliases={k: v[0] for k, v in model.layers.items()})
    elif name in SPECS:
        if path is None:
            raise OddspotError(f"backbone {name} has no offline weights; pass --weights FILE or URL "
                               f"(a torchvision {name} state dict, .pth/.pt/.safetensors)")
        deepest = max((LAYERS.index(x) + 1 for x in (layers or LAYERS) if x in LAYERS), default=len(LAYERS))
        model = resnet(name, deepest, read_state_dict(path), str(path))
        bb = Backbone(name, model, scaling="imagenet", aliases={x: x for x in LAYERS[:deepest]})
    elif name.startswith("torchvision:"):
        if path is not None:
            raise OddspotError(f"backbone {name}: --weights works with {', '.join(SPECS)}; use one of those names")
        bb = _torchvision_backbone(name)
    else:
        raise OddspotError(f"unknown backbone {name!r}; use one of {', '.join(BACKBONES)} or 'torchvision:<arch>'")
    bb.weights, bb.weights_sha256 = weights, sha
    bb.model.to(dev).to(memory_format=torch.channels_last)
    return bb


def _torchvision_backbone(name: str) -> Backbone:
    arch = name.split(":", 1)[1]
    try:
        import torchvision
    except Exception as exc:  # torchvision can be installed yet fail to import its compiled ops
        raise OddspotError(f"backbone {name}: torchvision is not usable here ({exc}); use efficientnet_lite0") from None
    try:
        model = torchvision.models.get_model(arch, weights="DEFAULT")
    except Exception as exc:
        raise OddspotError(f"backbone {name}: cannot build it ({exc}); weights must already be cached offline") from None
    return Backbone(name, model, scaling="imagenet", aliases={x: x for x in LAYERS})


def default_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
