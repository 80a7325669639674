"""ResNet-18, ResNet-50 and Wide ResNet-50-2 (He et al., 2016; Zagoruyko & Komodakis, 2016) as feature networks.

Parameter names and shapes are torchvision's, so a torchvision state dict loads as is; no ImageNet
weights ship offline, so they come from a file or URL the user gives (`oddspot.features.weights`).
The network is built only up to the deepest layer a model uses (`depth`) and has no classifier:
tensors of deeper layers and of `fc` in a weights file are checked to be known names with the
right shapes, then ignored. `dilate_last` turns layer4's stride into dilation (output stride 16),
as DeepLabV3+ does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from oddspot.errors import OddspotError

LAYERS = ("layer1", "layer2", "layer3", "layer4")
STRIDES = {"layer1": 4, "layer2": 8, "layer3": 16, "layer4": 32}


@dataclass(frozen=True)
class ResNetSpec:
    """Block type, blocks per layer and bottleneck width factor (Wide ResNet doubles it)."""

    bottleneck: bool
    blocks: tuple[int, int, int, int]
    width_per_group: int = 64

    @property
    def expansion(self) -> int:
        return 4 if self.bottleneck else 1

    def channels(self, layer: str) -> int:
        """Output channels of `layer1`..`layer4`."""
        return 64 * 2 ** LAYERS.index(layer) * self.expansion


SPECS: dict[str, ResNetSpec] = {
    "resnet18": ResNetSpec(False, (2, 2, 2, 2)),
    "resnet50": ResNetSpec(True, (3, 4, 6, 3)),
    "wide_resnet50_2": ResNetSpec(True, (3, 4, 6, 3), 128),
}


def _conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=dilation, dilation=dilation, bias=False)


def _downsample(cin: int, cout: int, stride: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=False), nn.BatchNorm2d(cout))


class BasicBlock(nn.Module):
    """Two 3 x 3 convolutions with an identity (or 1 x 1 projected) skip."""

    def __init__(self, cin: int, planes: int, stride: int, dilation: int, width_per_group: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, planes, stride, dilation)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = _conv3x3(planes, planes, 1, dilation)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, planes, stride) if stride != 1 or cin != planes else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        h = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(h)) + skip)


class Bottleneck(nn.Module):
    """1 x 1 reduce, 3 x 3 (strided, as torchvision's "ResNet v1.5"), 1 x 1 expand, with a skip."""

    def __init__(self, cin: int, planes: int, stride: int, dilation: int, width_per_group: int) -> None:
        super().__init__()
        width = planes * width_per_group // 64
        cout = planes * 4
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = _conv3x3(width, width, stride, dilation)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = _downsample(cin, cout, stride) if stride != 1 or cin != cout else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skip = x if self.downsample is None else self.downsample(x)
        h = self.relu(self.bn1(self.conv1(x)))
        h = self.relu(self.bn2(self.conv2(h)))
        return self.relu(self.bn3(self.conv3(h)) + skip)


class ResNetTrunk(nn.Module):
    """The stem and the first `depth` layers of a ResNet (no pooling head, no classifier)."""

    def __init__(self, spec: ResNetSpec, depth: int = 4, dilate_last: bool = False) -> None:
        super().__init__()
        if not 1 <= depth <= 4:
            raise OddspotError(f"ResNet depth {depth} out of range; use 1 to 4 layers")
        self.spec = spec
        self.conv1 = nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        block = Bottleneck if spec.bottleneck else BasicBlock
        cin, dilation = 64, 1
        for i in range(depth):
            planes, stride = 64 * 2 ** i, 1 if i == 0 else 2
            first_dilation = dilation
            if dilate_last and i == 3:
                dilation, stride = dilation * stride, 1
                first_dilation = 1
            blocks = []
            for b in range(spec.blocks[i]):
                blocks.append(block(cin, planes, stride if b == 0 else 1, first_dilation if b == 0 else dilation,
                                    spec.width_per_group))
                cin = planes * spec.expansion
            self.add_module(LAYERS[i], nn.Sequential(*blocks))
        self.depth = depth

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        for name in LAYERS[: self.depth]:
            x = getattr(self, name)(x)
        return x


def reference_shapes(name: str) -> dict[str, tuple[int, ...]]:
    """Names and shapes of every tensor of the full torchvision model `name` (classifier included)."""
    spec = SPECS[name]
    with torch.device("meta"):
        full = ResNetTrunk(spec, 4)
    shapes = {k: tuple(v.shape) for k, v in full.state_dict().items()}
    shapes["fc.weight"] = (1000, spec.channels("layer4"))
    shapes["fc.bias"] = (1000,)
    return shapes


def load_resnet_state(model: ResNetTrunk, name: str, state: dict[str, torch.Tensor], source: str) -> None:
    """Load the tensors of `model` from a torchvision-format `state`, every tensor checked.

    Each name in `state` must be a tensor of the full model with its shape; every tensor the
    (possibly truncated) `model` holds must be present (BatchNorm's `num_batches_tracked`, absent
    from old torchvision files, excepted). The first bad tensor is named in a one-line error.
    The tensors are assigned (as float32 when stored otherwise), so `model` may live on the meta device.
    """
    known = reference_shapes(name)
    own = model.state_dict()
    fix = f"pass torchvision {name} weights (a state dict with its parameter names)"
    for key, tensor in state.items():
        if key not in known:
            raise OddspotError(f"{source}: tensor {key!r} is not a {name} tensor; {fix}")
        if tuple(tensor.shape) != known[key]:
            raise OddspotError(f"{source}: tensor {key!r} has shape {tuple(tensor.shape)}, {name} has {known[key]}; {fix}")
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        raise OddspotError(f"{source}: tensor {missing[0]!r} missing ({len(missing)} missing in all); {fix}")
    model.load_state_dict({k: state[k].to(own[k].dtype).contiguous() if k in state else torch.zeros((), dtype=own[k].dtype)
                           for k in own}, strict=True, assign=True)


def resnet(name: str, depth: int = 4, state: dict[str, torch.Tensor] | None = None, source: str = "weights",
           dilate_last: bool = False) -> ResNetTrunk:
    """Build the ResNet `name` up to layer `depth` in eval mode, loading `state` (checked) when given."""
    if name not in SPECS:
        raise OddspotError(f"unknown ResNet {name!r}; use one of {', '.join(SPECS)}")
    if state is None:
        return ResNetTrunk(SPECS[name], depth, dilate_last).eval()
    with torch.device("meta"):  # no random initialization of tensors the state replaces
        model = ResNetTrunk(SPECS[name], depth, dilate_last)
    load_resnet_state(model, name, state, source)
    return model.eval()
