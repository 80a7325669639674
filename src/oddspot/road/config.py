"""Every option of a road model, as stored in its model.json: no torch, so the exported runtime reads them too.

`RoadConfig` nests the network's architecture (`ModelConfig`), training (`TrainConfig`, with its
`AugmentConfig`) and how the scores are fitted (`ScoreConfig`), plus the decision score and the
image statistic. The torch modules that use them (`model`, `train`, `augment`, `scorer`) import
them from here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from oddspot.choices import FEATURE_SOURCES, HEAT_RELIABILITY
from oddspot.configs import check_range
from oddspot.errors import OddspotError
from oddspot.features.weights import is_url, resolve_weights

# The EfficientNet-Lite0 stages a tap or the frozen prefix may name (the keys of
# `features.efficientnet_lite.EfficientNetLite0.LAYERS` but its classifier head).
STAGES: tuple[str, ...] = ("stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "stage7")


@dataclass
class AugmentConfig:
    """Augmentation options (part of the training configuration; see `oddspot.road.augment`).

    One switch per augmentation: `scale` (multi-scale crops, a scale per image log-uniform in
    `scale_range`; > 1 zooms in), `flip` (horizontal, p = 0.5), `rotate` (a uniform angle in
    +-`rotation_degrees`), `colour` (brightness / contrast / saturation jitter), `blur` (Gaussian,
    with probability `blur_prob`). A switch that is off leaves its augmentation out entirely.
    """

    # Added after models were saved: older models trained with one scale per batch and these switches.
    ADDED_FIELDS: ClassVar[dict[str, Any]] = {"scale": True, "rotate": False, "rotation_degrees": 10.0, "colour": True,
                                              "blur": True}

    crop_size: tuple[int, int] = (384, 384)
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.3, 1.2)
    scale: bool = True
    rotate: bool = False
    rotation_degrees: float = 10.0
    colour: bool = True
    blur: bool = True

    def __post_init__(self) -> None:
        for name in ("scale", "flip", "rotate", "colour", "blur"):
            if not isinstance(getattr(self, name), bool):
                raise OddspotError(f"augment {name} {getattr(self, name)!r}: use true or false")
        check_range("rotation_degrees", self.rotation_degrees, 0.0, 180.0)
        self.crop_size = (int(self.crop_size[0]), int(self.crop_size[1]))
        self.scale_range = (float(self.scale_range[0]), float(self.scale_range[1]))
        self.blur_sigma = (float(self.blur_sigma[0]), float(self.blur_sigma[1]))
        lo, hi = self.scale_range
        if not 0 < lo <= hi <= 10:
            raise OddspotError(f"scale range {lo}-{hi} invalid; use 0 < min <= max <= 10 (e.g. 0.5-2.0)")
        if min(self.crop_size) < 16 or max(self.crop_size) > 8192:
            raise OddspotError(f"crop size {self.crop_size} out of range; use 16 to 8192 pixels a side")
        for name in ("brightness", "contrast", "saturation", "blur_prob"):
            check_range(name, getattr(self, name), 0.0, 1.0)
        lo, hi = self.blur_sigma
        if not 0 <= lo <= hi <= 20:
            raise OddspotError(f"blur_sigma {lo}-{hi} invalid; use 0 <= min <= max <= 20")


# Backbones of the road network: their tap names and default taps (low level, high level, auxiliary).
# ResNet-50 runs layer4 dilated (output stride 16) as DeepLabV3+ does; it needs ImageNet `weights`.
ROAD_BACKBONES: dict[str, tuple[tuple[str, ...], tuple[str, str, str]]] = {
    "efficientnet_lite0": (STAGES, ("stage2", "stage5", "stage4")),
    "resnet50": (("layer1", "layer2", "layer3", "layer4"), ("layer1", "layer4", "layer3")),
}


@dataclass
class ModelConfig:
    """Architecture of the segmentation network (part of the road model's config in model.json).

    Taps left as None take the backbone's defaults (`ROAD_BACKBONES`), stored explicitly. `weights`
    is the ImageNet weights file the backbone starts from (resnet50; a torchvision state dict);
    its sha256 is recorded in `weights_sha256` and checked when training starts.
    """

    ADDED_FIELDS: ClassVar[dict[str, Any]] = {"weights": None, "weights_sha256": None}  # older models: offline weights

    num_classes: int = 13
    low_level: str | None = None
    high_level: str | None = None
    aux_layer: str | None = None
    aspp_channels: int = 128
    aspp_rates: tuple[int, ...] = (6, 12, 18)
    low_level_channels: int = 48
    decoder_channels: int = 128
    aux_channels: int = 64
    dropout: float = 0.1
    backbone: str = "efficientnet_lite0"
    weights: str | None = None
    weights_sha256: str | None = None

    def __post_init__(self) -> None:
        self.aspp_rates = tuple(int(r) for r in self.aspp_rates)
        check_range("num_classes", self.num_classes, 2, 254)
        for name in ("aspp_channels", "low_level_channels", "decoder_channels", "aux_channels"):
            check_range(name, getattr(self, name), 1, 4096)
        if not 1 <= len(self.aspp_rates) <= 8:
            raise OddspotError(f"aspp_rates {list(self.aspp_rates)}: give 1 to 8 dilation rates")
        for rate in self.aspp_rates:
            check_range("aspp_rates", rate, 1, 64)
        check_range("dropout", self.dropout, 0.0, 1.0, high_open=True)
        if self.backbone not in ROAD_BACKBONES:
            raise OddspotError(f"backbone {self.backbone!r} unsupported for the road model; use one of {', '.join(ROAD_BACKBONES)}")
        names, defaults = ROAD_BACKBONES[self.backbone]
        self.low_level, self.high_level, self.aux_layer = (
            default if value is None else value for value, default in zip((self.low_level, self.high_level, self.aux_layer), defaults))
        for name in (self.low_level, self.high_level, self.aux_layer):
            if name not in names:
                raise OddspotError(f"layer {name!r} unknown for backbone {self.backbone}; choose from {names[0]}..{names[-1]}")
        self._check_weights()

    def _check_weights(self) -> None:
        """`weights`: a file (made absolute, its sha256 recorded) or None; a recorded sha256 needs weights."""
        if self.weights is not None:
            if not isinstance(self.weights, str) or not self.weights.strip() or is_url(self.weights):
                raise OddspotError(f"model weights {self.weights!r:.80}: give a weights file (.pth/.pt/.safetensors)")
            self.weights = str(Path(self.weights).expanduser().absolute())
            if self.weights_sha256 is not None and not (isinstance(self.weights_sha256, str) and len(self.weights_sha256) == 64
                                                        and set(self.weights_sha256) <= set("0123456789abcdef")):
                raise OddspotError(f"model weights_sha256 {self.weights_sha256!r:.80}: must be 64 lowercase hex digits")
            if self.weights_sha256 is None:
                self.weights_sha256 = resolve_weights(self.weights)[1]
        elif self.weights_sha256 is not None:
            raise OddspotError("model weights_sha256 is set but weights is not; set both or neither")

    def to_dict(self) -> dict[str, Any]:
        """JSON form (tuples as lists), as stored in model.json."""
        return json.loads(json.dumps(asdict(self)))


# Output channels of each backbone tap (the networks in `oddspot.features`; a test checks them).
TAP_CHANNELS: dict[str, dict[str, int]] = {
    "efficientnet_lite0": {"stage1": 16, "stage2": 24, "stage3": 40, "stage4": 80, "stage5": 112, "stage6": 192,
                           "stage7": 320},
    "resnet50": {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048},
}


def feature_channels(config: ModelConfig, source: str) -> int:
    """Channels of the feature map `source` (one of FEATURE_SOURCES) for `config`."""
    taps = TAP_CHANNELS[config.backbone]
    channels = {"low_level": config.low_level_channels,
                "decoder_input": config.aspp_channels + config.low_level_channels,
                "decoder_output": config.decoder_channels,
                "backbone_low": taps[config.low_level], "backbone_high": taps[config.high_level]}
    if source not in channels:
        raise OddspotError(f"feature source {source!r} unknown; choose from {', '.join(FEATURE_SOURCES)}")
    return channels[source]


@dataclass
class TrainConfig:
    """Training options (part of the road model's config in model.json)."""

    epochs: int = 30
    batch_size: int = 8
    optimizer: str = "adamw"
    lr: float = 1e-3
    backbone_lr_factor: float = 0.5
    weight_decay: float = 1e-4
    momentum: float = 0.9
    schedule: str = "poly"
    warmup_steps: int = 20
    aux_weight: float = 0.4
    class_weighting: str = "sqrt_inverse"
    class_weight_images: int = 500
    patience: int = 5
    freeze: str | None = "stage1"
    max_train_images: int | None = None
    eval_size: tuple[int, int] | None = None
    seed: int = 0
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        if self.eval_size is not None:
            self.eval_size = (int(self.eval_size[0]), int(self.eval_size[1]))
            if min(self.eval_size) < 16 or max(self.eval_size) > 8192:
                raise OddspotError(f"eval_size {list(self.eval_size)} out of range; use 16 to 8192 pixels a side")
        if self.optimizer not in ("adamw", "sgd"):
            raise OddspotError(f"optimizer {self.optimizer!r} unknown; use adamw or sgd")
        if self.class_weighting not in ("none", "sqrt_inverse"):
            raise OddspotError(f"class weighting {self.class_weighting!r} unknown; use none or sqrt_inverse")
        if self.schedule not in ("poly", "cosine"):
            raise OddspotError(f"schedule {self.schedule!r} unknown; use poly or cosine")
        if self.freeze is not None and self.freeze not in STAGES:
            raise OddspotError(f"freeze layer {self.freeze!r} unknown; choose from stage1..stage7 or none")
        check_range("epochs", self.epochs, 1, 100_000)
        check_range("batch_size", self.batch_size, 1, 4096)
        check_range("lr", self.lr, 0.0, 10.0, low_open=True)
        check_range("backbone_lr_factor", self.backbone_lr_factor, 0.0, 10.0)
        check_range("weight_decay", self.weight_decay, 0.0, 1.0)
        check_range("momentum", self.momentum, 0.0, 1.0, high_open=True)
        check_range("warmup_steps", self.warmup_steps, 0, 10**7)
        check_range("aux_weight", self.aux_weight, 0.0, 10.0)
        check_range("class_weight_images", self.class_weight_images, 1, 10**8)
        check_range("patience", self.patience, 0, 100_000)
        if self.max_train_images is not None:
            check_range("max_train_images", self.max_train_images, 1, 10**9)
        check_range("seed", self.seed, 0, 2**32 - 1)

    def to_dict(self) -> dict[str, Any]:
        """JSON form (tuples as lists), as stored in model.json."""
        return json.loads(json.dumps(asdict(self)))


SCORE_NAMES: tuple[str, ...] = ("msp", "max_logit", "energy", "entropy", "sml", "mahalanobis", "fusion",
                                  "sml_full", "heat")


@dataclass
class ScoreConfig:
    """How the fitted scores are fitted (part of the road model's config in model.json).

    `target_fpr` is the share of normal validation pixels (and images) flagged when validation
    has no anomalies to choose an F1-max threshold from. `sml_*`: the post-processing of
    `sml_full` (boundary suppression, dilated Gaussian smoothing; defaults as the SML paper's
    code). `heat_*`: the HEAT score's KL neighbourhood, reliability weighting and the opt-in
    per-image normalization that uses the scored image's own statistics (see docs/road-scores.md).
    """

    # Added after models were saved: an older model holds no sml_full / heat statistics and refuses those scores.
    ADDED_FIELDS: ClassVar[dict[str, Any]] = {
        "sml_boundary_width": 4, "sml_boundary_iterations": 4, "sml_smoothing_size": 7, "sml_smoothing_dilation": 6,
        "sml_smoothing_sigma": 1.0, "heat_kl_sigma": 2.0, "heat_reliability": "variance", "heat_reliability_sigma": 2.0,
        "heat_test_normalization": False}

    features: str = "low_level"
    temperature: float = 1.0
    sigma: float = 1.0
    pixels_per_class: int = 64
    shrinkage: float = 0.01
    mahalanobis_images: int | None = 1000
    sml_min_pixels: int = 100
    val_pixels_per_image: int = 4000
    target_fpr: float = 0.05
    batch_size: int = 8
    seed: int = 0
    sml_boundary_width: int = 4
    sml_boundary_iterations: int = 4
    sml_smoothing_size: int = 7
    sml_smoothing_dilation: int = 6
    sml_smoothing_sigma: float = 1.0
    heat_kl_sigma: float = 2.0
    heat_reliability: str = "variance"
    heat_reliability_sigma: float = 2.0
    heat_test_normalization: bool = False

    def __post_init__(self) -> None:
        if self.features not in FEATURE_SOURCES:
            raise OddspotError(f"feature source {self.features!r} unknown; choose from {', '.join(FEATURE_SOURCES)}")
        check_range("temperature", self.temperature, 0.0, 100.0, low_open=True)
        check_range("sigma", self.sigma, 0.0, 50.0)
        check_range("pixels_per_class", self.pixels_per_class, 1, 1_000_000)
        check_range("shrinkage", self.shrinkage, 0.0, 10.0, low_open=True)
        if self.mahalanobis_images is not None:
            check_range("mahalanobis_images", self.mahalanobis_images, 1, 10_000_000)
        check_range("sml_min_pixels", self.sml_min_pixels, 1, 10**9)
        check_range("val_pixels_per_image", self.val_pixels_per_image, 1, 10**8)
        check_range("target_fpr", self.target_fpr, 0.0, 0.5, low_open=True, high_open=True)
        check_range("batch_size", self.batch_size, 1, 4096)
        check_range("seed", self.seed, 0, 2**32 - 1)
        check_range("sml_boundary_width", self.sml_boundary_width, 0, 64)
        check_range("sml_boundary_iterations", self.sml_boundary_iterations, 0, 64)
        if self.sml_boundary_iterations and self.sml_boundary_width % self.sml_boundary_iterations:
            raise OddspotError(f"sml_boundary_width {self.sml_boundary_width} must be a multiple of "
                               f"sml_boundary_iterations {self.sml_boundary_iterations} (e.g. 4 and 4)")
        check_range("sml_smoothing_size", self.sml_smoothing_size, 1, 31)
        if self.sml_smoothing_size % 2 == 0:
            raise OddspotError(f"sml_smoothing_size {self.sml_smoothing_size} must be odd (e.g. 7)")
        check_range("sml_smoothing_dilation", self.sml_smoothing_dilation, 1, 64)
        check_range("sml_smoothing_sigma", self.sml_smoothing_sigma, 0.0, 50.0, low_open=True)
        check_range("heat_kl_sigma", self.heat_kl_sigma, 0.0, 50.0, low_open=True)
        if self.heat_reliability not in HEAT_RELIABILITY:
            raise OddspotError(f"heat_reliability {self.heat_reliability!r} unknown; choose from {', '.join(HEAT_RELIABILITY)}")
        check_range("heat_reliability_sigma", self.heat_reliability_sigma, 0.0, 50.0, low_open=True)
        if not isinstance(self.heat_test_normalization, bool):
            raise OddspotError(f"heat_test_normalization {self.heat_test_normalization!r}: use true or false")

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as stored in model.json."""
        return json.loads(json.dumps(asdict(self)))


@dataclass
class RoadConfig:
    """Every option of a road model: network, training, score fitting, and the decision score."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scores: ScoreConfig = field(default_factory=ScoreConfig)
    score: str = "fusion"
    image_quantile: float = 0.999

    def __post_init__(self) -> None:
        if self.score not in SCORE_NAMES:
            raise OddspotError(f"score {self.score!r} unknown; choose from {', '.join(SCORE_NAMES)}")
        check_range("image_quantile", self.image_quantile, 0.5, 1.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as stored in model.json (nested mappings for model, train and scores)."""
        return {"model": self.model.to_dict(), "train": self.train.to_dict(), "scores": self.scores.to_dict(),
                "score": self.score, "image_quantile": self.image_quantile}
