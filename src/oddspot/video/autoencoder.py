"""Frame autoencoder baseline: reconstruction error in pixels plus feature error at two encoder depths.

The encoder is the frozen offline backbone (default EfficientNet-Lite0, any `Backbone` layer names)
or a small convolutional encoder trained from scratch; a convolutional decoder learns to rebuild
the frame from the deepest encoder layer with an L1 or L2 loss. A frame's score is the weighted sum
of its pixel error (L1 or L2) and its feature errors at `feature_layers`, each component brought to
a common scale with statistics of held-out training frames (optionally after a Yeo-Johnson power
transform). Test-time augmentation averages the error maps over identity / hflip / vflip / rot180
(maps inverted back to the frame's orientation); with TTA on, the decoder is trained on the same views
(each epoch shows every frame once under a random view). TTA is off by default: it costs one more
encoder-decoder-encoder pass per view.
This is a frame-wise model: it cannot see motion.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oddspot.configs import check_range
from oddspot.errors import OddspotError
from oddspot.features.backbone import scale_pixels
from oddspot.progress import track
from oddspot.runs.contract import Record
from oddspot.video.base import VideoDetector, check_common, check_tensor_names, load_module_tensors
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


class ScratchEncoder(nn.Module):
    """Three strided conv stages (strides 2, 4, 8) trained with the decoder."""

    def __init__(self) -> None:
        super().__init__()

        def stage(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(
                nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
                nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
            )

        self.enc1, self.enc2, self.enc3 = stage(3, 32), stage(32, 48), stage(48, 64)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        return {"enc1": e1, "enc2": e2, "enc3": self.enc3(e2)}


class Decoder(nn.Module):
    """Upsample-and-convolve decoder from a stride-`stride` feature map back to an RGB frame."""

    def __init__(self, channels: int, stride: int, width: int = 64) -> None:
        super().__init__()
        steps = int(round(math.log2(stride)))
        if 2**steps != stride:
            raise OddspotError(f"latent layer stride {stride} is not a power of two; pick another latent_layer")
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        ch = width
        for _ in range(steps - 1):
            out = max(16, ch // 2)
            layers += [
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(ch, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True),
            ]
            ch = out
        if steps > 0:
            layers.append(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False))
        layers.append(nn.Conv2d(ch, 3, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        out = self.net(z)
        return out if tuple(out.shape[-2:]) == tuple(size) else F.interpolate(out, size=size, mode="bilinear", align_corners=False)


def _error(a: torch.Tensor, b: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-position error averaged over channels: N x C x H x W -> N x H x W."""
    d = a - b
    return (d.abs() if kind == "l1" else d * d).mean(dim=1)


class FrameAutoencoder(VideoDetector):
    """Frame-wise reconstruction baseline (see module docstring).

    `FrameAutoencoder(AutoencoderConfig(...))` or `FrameAutoencoder(epochs=2, ...)`; `device` is where
    the encoder and decoder run.
    """

    kind = "autoencoder"
    config_class = AutoencoderConfig

    def __init__(self, config: AutoencoderConfig | None = None, *, device: str | torch.device = "cpu", **options: Any) -> None:
        super().__init__(config, device=device, **options)
        self.config: AutoencoderConfig
        self.backbone = None
        self.extractor = None
        self.encoder: ScratchEncoder | None = None
        self.decoder: Decoder | None = None
        self.transforms: dict[str, PowerTransform | Standardizer] = {}
        self._build()

    @property
    def fitted(self) -> bool:
        return bool(self.transforms)

    @property
    def components(self) -> tuple[str, ...]:
        return ("pixel", *(f"feature:{l}" for l in self.config.feature_layers))

    def _build(self) -> None:
        """Create encoder (when trained from scratch) and decoder; their initial weights follow `seed`."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            self._build_modules()

    def _build_modules(self) -> None:
        cfg = self.config
        if cfg.encoder == "scratch":
            self.encoder = ScratchEncoder()
            channels = {"enc1": 32, "enc2": 48, "enc3": 64}[cfg.latent_layer]
            stride = SCRATCH_LAYERS[cfg.latent_layer]
        else:
            from oddspot.features import FeatureExtractor, build_backbone

            self.backbone = build_backbone(cfg.encoder, device=self.device)
            layers = list(dict.fromkeys([*cfg.feature_layers, cfg.latent_layer]))
            self.extractor = FeatureExtractor(self.backbone, layers)
            probe = self.extractor(self.backbone.preprocess(np.zeros((1, *cfg.size, 3), np.uint8)))[cfg.latent_layer]
            channels = probe.shape[1]
            stride = 2 ** int(round(math.log2(cfg.size[0] / probe.shape[2])))
        self.decoder = Decoder(channels, stride, cfg.decoder_width).to(self.device)
        if self.encoder is not None:
            self.encoder.to(self.device)

    def _input(self, frames: np.ndarray) -> torch.Tensor:
        """uint8 N x H x W x 3 -> float N x 3 x H x W in the encoder's input scaling."""
        if self.backbone is not None:
            return self.backbone.preprocess(frames, self.config.size).contiguous()
        x = torch.as_tensor(np.ascontiguousarray(frames)).to(self.device).permute(0, 3, 1, 2).float()
        if tuple(x.shape[-2:]) != tuple(self.config.size):
            x = F.interpolate(x, size=self.config.size, mode="bilinear", align_corners=False, antialias=True)
        return scale_pixels(x, "lite").contiguous()

    def _encode(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        if self.encoder is not None:
            return self.encoder(x)
        return {k: v.clone() for k, v in self.extractor(x).items()}

    def _fit_model(self, segments: list[np.ndarray]) -> None:
        cfg = self.config
        frames = np.concatenate([seg[:: cfg.train_step] for seg in segments])
        n, views = frames.shape[0], cfg.tta
        params = list(self.decoder.parameters()) + (list(self.encoder.parameters()) if self.encoder is not None else [])
        opt = torch.optim.Adam(params, lr=cfg.lr)
        gen = torch.Generator().manual_seed(cfg.seed)
        latents = None
        if self.encoder is None:  # frozen encoder: its outputs are computed once per view
            latents = torch.empty((len(views), n, *self._latent_shape()), device=self.device)
            for vi, view in enumerate(views):
                for s in range(0, n, 64):
                    x = apply_view(self._input(frames[s : s + 64]), view)
                    latents[vi, s : s + 64] = self._encode(x)[cfg.latent_layer]
        self.decoder.train()
        if self.encoder is not None:
            self.encoder.train()
        for _ in track(range(cfg.epochs), "training the frame autoencoder"):
            # Each epoch shows every frame once, under a random one of the TTA views.
            order = torch.stack([torch.randint(len(views), (n,), generator=gen), torch.randperm(n, generator=gen)], dim=1)
            for s in range(0, n, cfg.batch_size):
                batch = order[s : s + cfg.batch_size]
                x = self._input(frames[batch[:, 1].numpy()])
                on_device = batch.to(self.device)
                for vi, view in enumerate(views):
                    sel = on_device[:, 0] == vi
                    if view != "identity" and sel.any():
                        x[sel] = apply_view(x[sel], view)
                z = latents[on_device[:, 0], on_device[:, 1]] if latents is not None else self._encode(x)[cfg.latent_layer]
                recon = self.decoder(z, cfg.size)
                loss = F.l1_loss(recon, x) if cfg.train_loss == "l1" else F.mse_loss(recon, x)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        self.decoder.eval()
        if self.encoder is not None:
            self.encoder.eval()

    def _latent_shape(self) -> tuple[int, ...]:
        with torch.no_grad():
            z = self._encode(self._input(np.zeros((1, *self.config.size, 3), np.uint8)))[self.config.latent_layer]
        return tuple(z.shape[1:])

    @torch.no_grad()
    def component_maps(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        """Error maps per component ('pixel', 'feature:<layer>'), N x H x W, averaged over the TTA views."""
        cfg = self.config
        out = {c: np.zeros((frames.shape[0], *cfg.size), np.float32) for c in self.components}
        for s in range(0, frames.shape[0], 64):
            x0 = self._input(frames[s : s + 64])
            acc = {c: torch.zeros((x0.shape[0], *cfg.size), device=self.device) for c in self.components}
            for view in cfg.tta:
                x = apply_view(x0, view)
                feats = self._encode(x)
                recon = self.decoder(feats[cfg.latent_layer], cfg.size)
                maps = {"pixel": _error(x, recon, cfg.pixel_error)}
                rec_feats = self._encode(recon)
                for layer in cfg.feature_layers:
                    err = _error(feats[layer], rec_feats[layer], "l2")[:, None]
                    maps[f"feature:{layer}"] = F.interpolate(err, size=cfg.size, mode="bilinear", align_corners=False)[:, 0]
                for c, m in maps.items():
                    acc[c] += invert_view(m, view)
            for c in self.components:
                out[c][s : s + 64] = (acc[c] / len(cfg.tta)).cpu().numpy()
        return out

    def _fit_components(self, segments: list[np.ndarray]) -> None:
        maps = self.component_maps(np.concatenate(segments))
        fit = PowerTransform.fit if self.config.power_transform else Standardizer.fit
        self.transforms = {c: fit(m.reshape(m.shape[0], -1).mean(axis=1)) for c, m in maps.items()}

    def _score_frames(self, frames: np.ndarray, with_maps: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        cfg = self.config
        if not self.transforms:
            raise OddspotError("the autoencoder is not fitted; run fit on training videos first")
        maps = self.component_maps(frames)
        weights = dict(zip(self.components, (cfg.pixel_weight, *cfg.feature_weights)))
        score = np.zeros(frames.shape[0])
        combined = np.zeros((frames.shape[0], *cfg.size), np.float32) if with_maps else None
        for c, m in maps.items():
            score += weights[c] * self.transforms[c](m.reshape(m.shape[0], -1).mean(axis=1))
            if combined is not None:
                t = self.transforms[c]
                combined += np.float32(weights[c] / (t.scale if isinstance(t, PowerTransform) else t.std)) * m
        return score, combined

    def _modules(self) -> dict[str, nn.Module]:
        """The trained modules by tensor-name prefix: the decoder, and the encoder when trained from scratch."""
        return {"decoder": self.decoder, **({"encoder": self.encoder} if self.encoder is not None else {})}

    def _tensors(self) -> dict[str, Any]:
        return {f"{prefix}.{k}": v for prefix, module in self._modules().items() for k, v in module.state_dict().items()}

    def _load_tensors(self, record: Record) -> None:
        modules = self._modules()
        check_tensor_names(record, {f"{p}.{k}" for p, m in modules.items() for k in m.state_dict()})
        for prefix, module in modules.items():
            load_module_tensors(module, record.prefixed(prefix), f"{prefix}.", record)
            module.eval()

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
