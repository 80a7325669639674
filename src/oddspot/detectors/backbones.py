"""The backbone a detector config names, built (or checked when shared) and its weights digest recorded."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, TypeVar

from oddspot.choices import BACKBONES
from oddspot.detectors.base import make_config
from oddspot.errors import OddspotError
from oddspot.features import Backbone, build_backbone

C = TypeVar("C")


def config_backbone(config: C, backbone: Backbone | None, device: str | None) -> tuple[C, Backbone]:
    """(config with `weights_sha256` filled in, backbone): `backbone` when given (it must be the one the
    config names, on the same weights), else the one the config names, built on its weights.

    A config that already records a digest (a saved model) needs weights with that digest. A
    Backbone whose name is none of `choices.BACKBONES` is the caller's own network and is used as
    given (a model saved on it names the config's backbone, so reload it with the same network).
    """
    cfg: Any = config
    if backbone is None:
        backbone = build_backbone(cfg.backbone, device=device, weights=cfg.weights, weights_sha256=cfg.weights_sha256,
                                  layers=getattr(cfg, "layers", None))
    elif backbone.name not in BACKBONES:
        pass  # the caller's own network (e.g. a test's tiny one): used as given, its name unknown to configs
    elif backbone.name != cfg.backbone or (backbone.weights is None) != (cfg.weights is None):
        raise OddspotError(f"the shared backbone is {backbone.name} (weights {backbone.weights or 'its own'}), but the config "
                           f"names {cfg.backbone} (weights {cfg.weights or 'its own'}); use one backbone for both")
    elif cfg.weights_sha256 is not None and backbone.weights_sha256 != cfg.weights_sha256:
        raise OddspotError(f"{cfg.weights}: weights changed since the model was fitted (sha256 differs from the one "
                           "recorded); restore the original file or refit")
    if cfg.weights_sha256 is None and backbone.weights_sha256 is not None:
        cfg = replace(cfg, weights_sha256=backbone.weights_sha256)
    return cfg, backbone


def backbone_options(config: Any) -> dict[str, Any]:
    """The backbone fields of `config`, as options for a detector sharing its backbone (a cascade's parts)."""
    return {"backbone": config.backbone, "weights": config.weights, "weights_sha256": config.weights_sha256}


def on_backbone(cls: Any, options: dict[str, Any], backbone: Backbone, name: str) -> Any:
    """The detector `cls` built from keyword `options` on the shared `backbone` (its `backbone` option is the name)."""
    return cls(make_config(cls.config_class, None, options, name), backbone=backbone)
