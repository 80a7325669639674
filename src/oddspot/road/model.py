"""DeepLabV3+ on EfficientNet-Lite0 or ResNet-50: ASPP on a stride-16 tap, a decoder fused with a
stride-4 tap, and an auxiliary head on an intermediate tap that exists for training only.

On ResNet-50, layer4 runs dilated (output stride 16, as DeepLabV3+ does), the low-level tap is
layer1 and the network starts from the ImageNet weights file of `config.weights`. Both take the
same input, `preprocess`'s (the "lite" scaling); the ResNet encoder converts it to the ImageNet
normalization its weights expect, so inference, export and the runtime are the same for both.

In training mode `forward` returns main and auxiliary logits; in eval mode the auxiliary head
never runs and only the main logits (and, on request, one of the decoder's feature maps used by
the feature-distance scores) come back. The decoder's feature maps, all at stride 4:
  low_level       the 1 x 1 projection of the low-level backbone tap (the decoder's skip input)
  decoder_input   that projection concatenated with the upsampled ASPP output
  decoder_output  the last decoder convolution, right before the classifier
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from oddspot.errors import OddspotError
from oddspot.features.backbone import IMAGENET_MEAN, IMAGENET_STD, scale_pixels
from oddspot.features.efficientnet_lite import EfficientNetLite0, efficientnet_lite0
from oddspot.features.resnet import LAYERS as RESNET_LAYERS
from oddspot.features.resnet import SPECS, resnet
from oddspot.features.weights import read_state_dict, resolve_weights
from oddspot.road.config import FEATURE_SOURCES, STAGES, ModelConfig


def _block_index(layer: str) -> int:
    return int(EfficientNetLite0.LAYERS[layer][0].split(".")[1])


class ConvBNReLU(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int = 1, dilation: int = 1) -> None:
        pad = dilation * (kernel // 2)
        super().__init__(nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SeparableConv(nn.Sequential):
    """Depthwise k x k (optionally dilated) then pointwise 1 x 1, each with BN + ReLU."""

    def __init__(self, cin: int, cout: int, kernel: int = 3, dilation: int = 1) -> None:
        pad = dilation * (kernel // 2)
        super().__init__(
            nn.Conv2d(cin, cin, kernel, padding=pad, dilation=dilation, groups=cin, bias=False),
            nn.BatchNorm2d(cin), nn.ReLU(inplace=True),
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        )


class ASPP(nn.Module):
    """Atrous spatial pyramid pooling: 1x1, separable atrous convs at `rates`, image pooling."""

    def __init__(self, cin: int, cout: int, rates: tuple[int, ...], dropout: float) -> None:
        super().__init__()
        self.branches = nn.ModuleList([ConvBNReLU(cin, cout, 1)] + [SeparableConv(cin, cout, 3, r) for r in rates])
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.ReLU(inplace=True))
        self.project = nn.Sequential(ConvBNReLU(cout * (len(rates) + 2), cout, 1), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        outs = [b(x) for b in self.branches]
        outs.append(self.pool(x).expand(-1, -1, x.shape[2], x.shape[3]))
        return self.project(torch.cat(outs, 1))


class Encoder(nn.Module):
    """The EfficientNet-Lite0 stem and blocks up to the deepest tap; returns the tapped outputs."""

    @staticmethod
    def channels(layer: str) -> int:
        return EfficientNetLite0.LAYERS[layer][2]

    def __init__(self, taps: dict[str, str], pretrained: bool) -> None:
        super().__init__()
        net = efficientnet_lite0(pretrained=pretrained)
        self.tap_index = {key: _block_index(layer) for key, layer in taps.items()}
        last = max(self.tap_index.values())
        self._conv_stem = net._conv_stem
        self._bn0 = net._bn0
        self._blocks = nn.ModuleList(list(net._blocks)[: last + 1])

    def forward(self, x: torch.Tensor, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
        want = {self.tap_index[k]: k for k in keys}
        stop = max(want)
        out: dict[str, torch.Tensor] = {}
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for i, block in enumerate(self._blocks):
            x = block(x)
            if i in want:
                out[want[i]] = x
            if i == stop:
                break
        return out

    def frozen_prefix(self, layer: str | None) -> list[nn.Module]:
        """Stem and blocks up to and including `layer` (none when `layer` is None)."""
        if layer is None:
            return []
        return [self._conv_stem, self._bn0] + list(self._blocks)[: _block_index(layer) + 1]


class ResNetEncoder(nn.Module):
    """ResNet-50 (torchvision names) up to the deepest tap, layer4 dilated; takes "lite"-scaled input.

    The first step maps (p - 127) / 128 to the ImageNet normalization (p / 255 - mean) / std
    (a fixed per-channel affine, not saved with the weights).
    """

    NAME = "resnet50"

    def __init__(self, taps: dict[str, str], weights: str | None, weights_sha256: str | None, pretrained: bool) -> None:
        super().__init__()
        depth = max(RESNET_LAYERS.index(layer) + 1 for layer in taps.values())
        state, source = None, "weights"
        if pretrained:
            if weights is None:
                raise OddspotError(f"road backbone {self.NAME} needs ImageNet weights; set the model option weights: FILE "
                                   "(a torchvision resnet50 state dict, .pth/.pt/.safetensors)")
            path, _ = resolve_weights(weights, weights_sha256)
            state, source = read_state_dict(path), str(path)
        self.trunk = resnet(self.NAME, depth, state, source, dilate_last=True)
        self.taps = dict(taps)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        self.register_buffer("in_scale", (128.0 / 255.0) / std, persistent=False)
        self.register_buffer("in_shift", (127.0 / 255.0 - mean) / std, persistent=False)

    @staticmethod
    def channels(layer: str) -> int:
        return SPECS[ResNetEncoder.NAME].channels(layer)

    def forward(self, x: torch.Tensor, keys: tuple[str, ...]) -> dict[str, torch.Tensor]:
        want = {self.taps[k]: k for k in keys}
        stop = max(RESNET_LAYERS.index(layer) for layer in want)
        t = self.trunk
        x = t.maxpool(t.relu(t.bn1(t.conv1(x * self.in_scale + self.in_shift))))
        out: dict[str, torch.Tensor] = {}
        for name in RESNET_LAYERS[: stop + 1]:
            x = getattr(t, name)(x)
            if name in want:
                out[want[name]] = x
        return out

    def frozen_prefix(self, layer: str | None) -> list[nn.Module]:
        """The stem for stage1, plus layer1..layer(K-1) for stageK (the training option names Lite stages), or up to layerK."""
        if layer is None:
            return []
        t = self.trunk
        count = RESNET_LAYERS.index(layer) + 1 if layer in RESNET_LAYERS else min(STAGES.index(layer), t.depth)
        return [t.conv1, t.bn1] + [getattr(t, name) for name in RESNET_LAYERS[:count]]


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ for `config.num_classes` classes; input is RGB scaled by `scale_pixels(x, "lite")`, N x 3 x H x W
    (whatever the backbone)."""

    def __init__(self, config: ModelConfig, pretrained: bool = True) -> None:
        super().__init__()
        self.config = config
        taps = {"low": config.low_level, "high": config.high_level, "aux": config.aux_layer}
        if config.backbone == ResNetEncoder.NAME:
            self.encoder: Encoder | ResNetEncoder = ResNetEncoder(taps, config.weights, config.weights_sha256, pretrained)
        else:
            self.encoder = Encoder(taps, pretrained)
        channels = self.encoder.channels
        self.aspp = ASPP(channels(config.high_level), config.aspp_channels, config.aspp_rates, config.dropout)
        self.low_proj = ConvBNReLU(channels(config.low_level), config.low_level_channels, 1)
        self.decoder = nn.Sequential(
            SeparableConv(config.aspp_channels + config.low_level_channels, config.decoder_channels, 3),
            SeparableConv(config.decoder_channels, config.decoder_channels, 3),
        )
        self.classifier = nn.Conv2d(config.decoder_channels, config.num_classes, 1)
        self.aux_head = nn.Sequential(
            ConvBNReLU(channels(config.aux_layer), config.aux_channels, 3),
            nn.Dropout(config.dropout),
            nn.Conv2d(config.aux_channels, config.num_classes, 1),
        )
        self._frozen: list[nn.Module] = []

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def freeze(self, layer: str | None) -> None:
        """Freeze the stem and blocks up to `layer` (weights and BatchNorm statistics; see the encoder's `frozen_prefix`)."""
        self._frozen = self.encoder.frozen_prefix(layer)
        for m in self._frozen:
            for p in m.parameters():
                p.requires_grad_(False)
        self.train(self.training)

    def train(self, mode: bool = True) -> DeepLabV3Plus:
        super().train(mode)
        for m in self._frozen:
            m.eval()
        return self

    def forward(self, x: torch.Tensor, features: str | None = None) -> dict[str, torch.Tensor]:
        """{'logits': N x K x H x W} plus 'aux' (training only) and, when `features` names one of
        FEATURE_SOURCES, 'features' (N x D x h x w: H/4 x W/4 but for `backbone_high`, at its tap's stride)."""
        if features is not None and features not in FEATURE_SOURCES:
            raise OddspotError(f"feature source {features!r} unknown; choose from {', '.join(FEATURE_SOURCES)}")
        keys = ("low", "high", "aux") if self.training else ("low", "high")
        taps = self.encoder(x, keys)
        high = self.aspp(taps["high"])
        low = self.low_proj(taps["low"])
        high = F.interpolate(high, size=low.shape[-2:], mode="bilinear", align_corners=False)
        fused = torch.cat([high, low], 1)
        feats = self.decoder(fused)
        logits = F.interpolate(self.classifier(feats), size=x.shape[-2:], mode="bilinear", align_corners=False)
        out = {"logits": logits}
        if self.training:
            aux = self.aux_head(taps["aux"])
            out["aux"] = F.interpolate(aux, size=x.shape[-2:], mode="bilinear", align_corners=False)
        if features is not None:
            out["features"] = {"low_level": low, "decoder_input": fused, "decoder_output": feats,
                               "backbone_low": taps["low"], "backbone_high": taps["high"]}[features]
        return out

    def inference_state_dict(self) -> dict[str, torch.Tensor]:
        """Weights needed at inference: everything but the auxiliary head, contiguous for safetensors."""
        return {k: v.detach().contiguous() for k, v in self.state_dict().items() if not k.startswith("aux_head.")}


def preprocess(images: torch.Tensor) -> torch.Tensor:
    """uint8 N x H x W x 3 (on any device) -> float N x 3 x H x W scaled as the backbone expects."""
    return scale_pixels(images.permute(0, 3, 1, 2).float(), "lite")
