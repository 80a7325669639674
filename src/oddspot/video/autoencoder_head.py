"""The frame autoencoder without its network (numpy; no torch): its config, the score from per-component
error maps (power transform or standardization, weights) and the fitted state.

`AutoencoderHead._score_frames` takes error maps from `component_maps(frames)`, which a subclass
provides: `video.autoencoder.FrameAutoencoder` runs encoder and decoder in torch, the exported
runtime (`oddspot.runtime.video`) runs the same graph on OpenVINO or ONNX Runtime. See
`video.autoencoder` for what the model computes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from oddspot.configs import check_range
from oddspot.errors import OddspotError
from oddspot.video.head import VideoHead, check_common
from oddspot.video.postprocess import PowerTransform, Standardizer
from oddspot.video.tta import apply_view, check_views, invert_view

SCRATCH_LAYERS = {"enc1": 2, "enc2": 4, "enc3": 8}
ERRORS = ("l1", "l2")
MAX_WEIGHT = 1e6


@dataclass
class AutoencoderConfig:
    """Settings of the frame autoencoder (the options of `oddspot video fit --model autoencoder`);
    every weight of the score is here."""

    size: tuple[int, int] = (96, 128)
    encoder: str = "efficientnet_lite0"
    latent_layer: str | None = None
    feature_layers: tuple[str, ...] | None = None
    train_loss: str = "l2"
    pixel_error: str = "l2"
    pixel_weight: float = 1.0
    feature_weights: tuple[float, ...] = (1.0, 1.0)
    tta: tuple[str, ...] = ("identity",)
    power_transform: bool = True
    epochs: int = 10
    train_step: int = 2
    batch_size: int = 32
    lr: float = 2e-3
    decoder_width: int = 64
    seed: int = 0
    sigma: float = 3.0
    normalization: str = "train_zscore"
    threshold_quantile: float | None = 0.995
    holdout_fraction: float = 0.25

    def __post_init__(self) -> None:
        scratch = self.encoder == "scratch"
        if self.latent_layer is None:
            self.latent_layer = "enc3" if scratch else "stage3"
        if self.feature_layers is None:
            self.feature_layers = ("enc2", "enc3") if scratch else ("stage2", "stage3")
        self.size = tuple(int(v) for v in self.size)  # type: ignore[assignment]
        self.feature_layers = tuple(self.feature_layers)
        self.feature_weights = tuple(float(w) for w in self.feature_weights)
        self.tta = check_views(self.tta)
        if len(self.feature_weights) != len(self.feature_layers):
            raise OddspotError(f"feature_weights has {len(self.feature_weights)} values for {len(self.feature_layers)} feature_layers; give one weight per layer")
        for name, value in (("train_loss", self.train_loss), ("pixel_error", self.pixel_error)):
            if value not in ERRORS:
                raise OddspotError(f"{name} {value!r} unknown; use 'l1' or 'l2'")
        if scratch:
            bad = [l for l in (self.latent_layer, *self.feature_layers) if l not in SCRATCH_LAYERS]
            if bad:
                raise OddspotError(f"layer {bad[0]!r} unknown for the scratch encoder; choose from {', '.join(SCRATCH_LAYERS)}")
        check_common(self)
        check_range("epochs", self.epochs, 1, 10_000)
        check_range("lr", self.lr, 0.0, 10.0, low_open=True)
        check_range("decoder_width", self.decoder_width, 1, 4096)
        check_range("pixel_weight", self.pixel_weight, 0.0, MAX_WEIGHT)
        for w in self.feature_weights:
            check_range("feature_weights", w, 0.0, MAX_WEIGHT)
        if not self.feature_layers:
            raise OddspotError("feature_layers is empty; name at least one encoder layer")


class AutoencoderHead(VideoHead):
    """Frame scores from per-component error maps; `component_maps` is the subclass's."""

    kind = "autoencoder"
    config_class = AutoencoderConfig

    config: AutoencoderConfig
    transforms: dict[str, PowerTransform | Standardizer]

    def component_maps(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """Error maps per component ('pixel', 'feature:<layer>'), float32 N x H x W, averaged over the TTA views."""
        raise NotImplementedError

    @property
    def fitted(self) -> bool:
        return bool(self.transforms)

    @property
    def components(self) -> tuple[str, ...]:
        return ("pixel", *(f"feature:{l}" for l in self.config.feature_layers))

    def tta_override(self, views: Sequence[str] | None) -> tuple[str, ...] | None:
        """The views to average at predict, or None when they are the ones the model was fitted with."""
        if views is None:
            return None
        views = check_views(views)
        return None if views == tuple(self.config.tta) else views

    def view_maps(self, frames: np.ndarray, views: tuple[str, ...]) -> dict[str, np.ndarray]:
        """`component_maps` averaged over `views`: each view of the frames scored, its maps brought back to
        the frames' orientation (as the fitted model's own TTA does inside its network). Needs a model
        fitted without TTA, whose network scores the identity view only."""
        if tuple(self.config.tta) != ("identity",):
            raise OddspotError(f"this autoencoder averages the views {', '.join(self.config.tta)} inside its exported "
                               "network; --tta other than model needs a model fitted without TTA (or --runtime torch)")
        total: dict[str, np.ndarray] = {}
        for view in views:
            maps = self.component_maps(apply_view(frames, view, spatial=(1, 2)))
            for c, m in maps.items():
                back = invert_view(m, view)
                total[c] = back if c not in total else total[c] + back
        return {c: m / np.float32(len(views)) for c, m in total.items()}

    def _score_views(self, frames: np.ndarray, with_maps: bool, views: tuple[str, ...] | None
                     ) -> tuple[np.ndarray, np.ndarray | None]:
        maps = self.component_maps(frames) if views is None else self.view_maps(frames, views)
        return self._score_maps(maps, frames.shape[0], with_maps)

    def _score_frames(self, frames: np.ndarray, with_maps: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        return self._score_maps(self.component_maps(frames), frames.shape[0], with_maps)

    def _score_maps(self, maps: dict[str, np.ndarray], n: int, with_maps: bool) -> tuple[np.ndarray, np.ndarray | None]:
        """Frame scores (and the combined map) from the per-component error maps of `n` frames."""
        cfg = self.config
        if not self.transforms:
            raise OddspotError("the autoencoder is not fitted; run fit on training videos first")
        weights = dict(zip(self.components, (cfg.pixel_weight, *cfg.feature_weights)))
        score = np.zeros(n)
        combined = np.zeros((n, *cfg.size), np.float32) if with_maps else None
        for c, m in maps.items():
            score += weights[c] * self.transforms[c](m.reshape(m.shape[0], -1).mean(axis=1))
            if combined is not None:
                t = self.transforms[c]
                combined += np.float32(weights[c] / (t.scale if isinstance(t, PowerTransform) else t.std)) * m
        return score, combined

    def _state(self) -> dict[str, Any]:
        return {"transforms": {c: {"type": type(t).__name__, **t.to_dict()} for c, t in self.transforms.items()}}

    def _load_state(self, state: dict[str, Any], source: str) -> None:
        extra = sorted(set(state) - {"transforms"})
        if extra:
            raise OddspotError(f"{source}: unexpected field {extra[0]}; refit the model")
        table = state.get("transforms")
        if not isinstance(table, dict) or set(table) != set(self.components):
            raise OddspotError(f"{source}: transforms must hold one entry per score component "
                               f"({', '.join(self.components)}); refit the model")
        types = {"PowerTransform": PowerTransform, "Standardizer": Standardizer}
        self.transforms = {}
        for c in self.components:
            entry = table[c]
            kind = entry.get("type") if isinstance(entry, dict) else None
            if not isinstance(kind, str) or kind not in types:
                raise OddspotError(f"{source}: transforms.{c}.type must be PowerTransform or Standardizer; refit the model")
            fields_ = {k: v for k, v in entry.items() if k != "type"}
            self.transforms[c] = types[kind].from_dict(fields_, f"{source}: transforms.{c}")


__all__ = ["ERRORS", "MAX_WEIGHT", "SCRATCH_LAYERS", "AutoencoderConfig", "AutoencoderHead"]
