"""Every option of a road model, as stored in its model.json: no torch, so the exported runtime reads them too.

`RoadConfig` nests the network's architecture (`ModelConfig`), training (`TrainConfig`, with its
`AugmentConfig`) and how the scores are fitted (`ScoreConfig`), plus the decision score and the
image statistic. The torch modules that use them (`model`, `train`, `augment`, `scorer`) import
them from here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from oddspot.configs import check_range
from oddspot.errors import OddspotError

# The EfficientNet-Lite0 stages a tap or the frozen prefix may name (the keys of
# `features.efficientnet_lite.EfficientNetLite0.LAYERS` but its classifier head).
STAGES: tuple[str, ...] = ("stage1", "stage2", "stage3", "stage4", "stage5", "stage6", "stage7")


@dataclass
class AugmentConfig:
    """Augmentation options (part of the training configuration)."""

    crop_size: tuple[int, int] = (384, 384)
    scale_range: tuple[float, float] = (0.5, 2.0)
    flip: bool = True
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    blur_prob: float = 0.2
    blur_sigma: tuple[float, float] = (0.3, 1.2)

    def __post_init__(self) -> None:
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


@dataclass
class ModelConfig:
    """Architecture of the segmentation network (part of the road model's config in model.json)."""

    num_classes: int = 13
    low_level: str = "stage2"
    high_level: str = "stage5"
    aux_layer: str = "stage4"
    aspp_channels: int = 128
    aspp_rates: tuple[int, ...] = (6, 12, 18)
    low_level_channels: int = 48
    decoder_channels: int = 128
    aux_channels: int = 64
    dropout: float = 0.1
    backbone: str = "efficientnet_lite0"

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
        if self.backbone != "efficientnet_lite0":
            raise OddspotError(f"backbone {self.backbone!r} unsupported for the road model; use efficientnet_lite0")
        for name in (self.low_level, self.high_level, self.aux_layer):
            if name not in STAGES:
                raise OddspotError(f"layer {name!r} unknown; choose from stage1..stage7")

    def to_dict(self) -> dict[str, Any]:
        """JSON form (tuples as lists), as stored in model.json."""
        return json.loads(json.dumps(asdict(self)))


FEATURE_SOURCES: tuple[str, ...] = ("low_level", "decoder_input", "decoder_output")


def feature_channels(config: ModelConfig, source: str) -> int:
    """Channels of the decoder feature map `source` (one of FEATURE_SOURCES) for `config`."""
    channels = {"low_level": config.low_level_channels,
                "decoder_input": config.aspp_channels + config.low_level_channels,
                "decoder_output": config.decoder_channels}
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


SCORE_NAMES: tuple[str, ...] = ("msp", "max_logit", "energy", "entropy", "sml", "mahalanobis", "fusion")


@dataclass
class ScoreConfig:
    """How the fitted scores are fitted (part of the road model's config in model.json).

    `target_fpr` is the share of normal validation pixels (and images) flagged when validation
    has no anomalies to choose an F1-max threshold from.
    """

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
