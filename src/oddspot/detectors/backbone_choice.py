"""The backbone fields shared by the inspect detectors' configs (no torch).

A config names its `backbone`, optionally `weights` (a URL as given, or a file, its path made
absolute) and, once a model is built on them, their `weights_sha256`. `layers` and `image_size` may be left as None, meaning
"the backbone's default": `resolve_backbone` replaces them with explicit values, so the saved
model.json always holds what the model was fitted with.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from oddspot.choices import BACKBONE_SIZES, BACKBONES
from oddspot.errors import OddspotError
from oddspot.features.weights import is_url

TORCHVISION_PREFIX = "torchvision:"
DEFAULT_IMAGE_SIZE = 224
_SHA256 = re.compile(r"[0-9a-f]{64}")
# Fields added after saved configs existed: absent from an older model.json, they held this value
# (each config class lists them as its `ADDED_FIELDS`, which `configs.from_mapping` reads).
BACKBONE_ADDED_FIELDS: dict[str, Any] = {"weights": None, "weights_sha256": None}


def backbone_family(name: str) -> str:
    """'lite' (EfficientNet-Lite: stageK layers) or 'resnet' (ResNets and torchvision models: layerK)."""
    if name in BACKBONES:
        return "lite" if name.startswith("efficientnet_lite") else "resnet"
    if name.startswith(TORCHVISION_PREFIX) and len(name) > len(TORCHVISION_PREFIX):
        return "resnet"
    raise OddspotError(f"backbone {name!r} unknown; use one of {', '.join(BACKBONES)} (or torchvision:<arch>)")


def resolve_backbone(config: Any, default_layers: dict[str, tuple[str, ...]]) -> None:
    """Check the backbone fields of `config` and fill `layers` / `image_size` left as None with the backbone's defaults."""
    if not isinstance(config.backbone, str) or not config.backbone:
        raise OddspotError(f"backbone must name a backbone, one of {', '.join(BACKBONES)}")
    family = backbone_family(config.backbone)
    if config.layers is None:
        config.layers = default_layers[family]
    if config.image_size is None:
        config.image_size = BACKBONE_SIZES.get(config.backbone, DEFAULT_IMAGE_SIZE)
    check_weights_fields(config)


def check_weights_fields(config: Any) -> None:
    """`weights`: None, a URL or a non-empty path (made absolute); `weights_sha256`: None or 64 lowercase hex digits, only with weights."""
    if config.weights is not None and (not isinstance(config.weights, str) or not config.weights.strip()):
        raise OddspotError("weights must be a weights file or URL (or left unset for the backbone's own weights)")
    if config.weights is not None and not is_url(config.weights):
        config.weights = str(Path(config.weights).expanduser().absolute())  # a run may be loaded from elsewhere
    sha = config.weights_sha256
    if sha is not None and (not isinstance(sha, str) or not _SHA256.fullmatch(sha)):
        raise OddspotError(f"weights_sha256 must be 64 lowercase hex digits, got {sha!r:.80}")
    if sha is not None and config.weights is None:
        raise OddspotError("weights_sha256 is set but weights is not; set both or neither")
