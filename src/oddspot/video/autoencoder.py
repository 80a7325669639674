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

The config, the score from the error maps and the fitted state are `video.autoencoder_head`'s,
shared with the exported runtime; this module adds the networks (`error_maps` is the exported
graph's body) and training.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from oddspot.errors import OddspotError
from oddspot.features.backbone import scale_pixels
from oddspot.progress import track
from oddspot.runs.contract import Record
from oddspot.video.autoencoder_head import ERRORS, MAX_WEIGHT, SCRATCH_LAYERS, AutoencoderConfig, AutoencoderHead
from oddspot.video.base import VideoDetector, load_module_tensors
from oddspot.video.head import check_tensor_names
from oddspot.video.postprocess import PowerTransform, Standardizer
from oddspot.video.tta import apply_view, invert_view


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


class FrameAutoencoder(AutoencoderHead, VideoDetector):
    """Frame-wise reconstruction baseline (see module docstring).

    `FrameAutoencoder(AutoencoderConfig(...))` or `FrameAutoencoder(epochs=2, ...)`; `device` is where
    the encoder and decoder run.
    """

    def __init__(self, config: AutoencoderConfig | None = None, *, device: str | torch.device = "cpu", **options: Any) -> None:
        super().__init__(config, device=device, **options)
        self.config: AutoencoderConfig
        self.backbone = None
        self.extractor = None
        self.encoder: ScratchEncoder | None = None
        self.decoder: Decoder | None = None
        self.transforms: dict[str, PowerTransform | Standardizer] = {}
        self._build()

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

    def error_maps(self, x0: torch.Tensor, views: tuple[str, ...] | None = None) -> torch.Tensor:
        """Encoder-scaled frames N x 3 x H x W -> N x K x H x W error maps, one per component (in `components`
        order), averaged over `views` (default: the TTA views of the config; the exported graph's body)."""
        cfg = self.config
        views = cfg.tta if views is None else views
        total = None
        for view in views:
            x = apply_view(x0, view)
            feats = self._encode(x)
            recon = self.decoder(feats[cfg.latent_layer], cfg.size)
            maps = [_error(x, recon, cfg.pixel_error)]
            rec_feats = self._encode(recon)
            for layer in cfg.feature_layers:
                err = _error(feats[layer], rec_feats[layer], "l2")[:, None]
                maps.append(F.interpolate(err, size=cfg.size, mode="bilinear", align_corners=False)[:, 0])
            seen = torch.stack([invert_view(m, view) for m in maps], dim=1)
            total = seen if total is None else total + seen
        return total / len(views)

    @torch.no_grad()
    def component_maps(self, frames: np.ndarray, views: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
        """Error maps per component ('pixel', 'feature:<layer>'), N x H x W, averaged over `views`
        (default: the TTA views of the config)."""
        out = {c: np.zeros((frames.shape[0], *self.config.size), np.float32) for c in self.components}
        for s in range(0, frames.shape[0], 64):
            maps = self.error_maps(self._input(frames[s : s + 64]), views).cpu().numpy()
            for i, c in enumerate(self.components):
                out[c][s : s + 64] = maps[:, i]
        return out

    def view_maps(self, frames: np.ndarray, views: tuple[str, ...]) -> dict[str, np.ndarray]:
        """`component_maps` averaged over `views`, whatever views the model was fitted with (the network is here)."""
        return self.component_maps(frames, views)

    def _fit_components(self, segments: list[np.ndarray]) -> None:
        maps = self.component_maps(np.concatenate(segments))
        fit = PowerTransform.fit if self.config.power_transform else Standardizer.fit
        self.transforms = {c: fit(m.reshape(m.shape[0], -1).mean(axis=1)) for c, m in maps.items()}

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


__all__ = ["ERRORS", "MAX_WEIGHT", "SCRATCH_LAYERS", "AutoencoderConfig", "Decoder", "FrameAutoencoder", "ScratchEncoder"]
