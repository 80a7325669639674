"""Multi-layer feature extraction that stops the forward pass after the deepest layer it needs."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from oddspot.features.backbone import Backbone


class _StopForward(Exception):
    """Raised from a hook once every requested layer has produced its output."""


class FeatureExtractor:
    """Collect the outputs of named layers of any `nn.Module` backbone.

    Hooks capture the requested outputs; when the last of them is produced the forward pass is
    cut short, so layers deeper than needed never run.
    """

    def __init__(self, backbone: Backbone, layers: Sequence[str]) -> None:
        if not layers:
            raise ValueError("FeatureExtractor needs at least one layer")
        self.backbone = backbone
        self.layers = list(layers)
        self._modules = {layer: backbone.module_name(layer) for layer in self.layers}
        self._captured: dict[str, torch.Tensor] = {}
        self._active = False  # hooks act only during this extractor's own call (backbones can be shared)
        named = dict(backbone.model.named_modules())
        self._handles = [named[m].register_forward_hook(self._hook(layer)) for layer, m in self._modules.items()]

    def _hook(self, layer: str):
        def hook(_module, _inputs, output):
            if not self._active:
                return
            self._captured[layer] = output
            if len(self._captured) == len(self.layers):
                raise _StopForward

        return hook

    def __call__(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Run the backbone on a preprocessed batch; return {layer: N x C x h x w}."""
        self._captured = {}
        self._active = True
        with torch.inference_mode():
            try:
                self.backbone.model(x)
            except _StopForward:
                pass
            finally:
                self._active = False
        missing = [layer for layer in self.layers if layer not in self._captured]
        if missing:
            raise RuntimeError(f"layers {missing} did not run in the backbone's forward pass")
        out, self._captured = self._captured, {}
        return {layer: out[layer] for layer in self.layers}

    def close(self) -> None:
        """Remove the hooks from the backbone."""
        for h in self._handles:
            h.remove()
        self._handles = []
