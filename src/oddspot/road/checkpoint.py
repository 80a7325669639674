"""Checked road network weights, and the safetensors / JSON files of the training state.

A network is only ever built from weights that fit its configuration. The class count is checked
three ways: the configuration against the data, the configuration against the classifier tensor
in the weights, and every tensor name, shape and dtype against the network the configuration
builds. Nothing is unpickled: weights are safetensors, everything else JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from oddspot import files
from oddspot.errors import OddspotError
from oddspot.files import atomic_write_bytes
from oddspot.road.model import DeepLabV3Plus, ModelConfig


def save_tensors(path: str | Path, tensors: dict[str, torch.Tensor]) -> None:
    """Write tensors as safetensors atomically (moved to CPU, made contiguous)."""
    data = st_save({k: v.detach().to("cpu").contiguous() for k, v in tensors.items()})
    atomic_write_bytes(path, data)


def load_tensors(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a safetensors file; a missing or corrupt file is a one-line error naming it."""
    path = Path(path)
    if not path.exists():
        raise OddspotError(f"{path}: file not found; is this a complete road run folder?")
    try:
        return st_load(path.read_bytes())
    except (SafetensorError, OSError, ValueError) as exc:
        raise OddspotError(f"{path}: cannot read tensors ({exc}); the file is damaged, retrain or restore it") from None


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON object; missing or invalid files are a one-line error naming them."""
    return files.read_json(path, "the file is damaged; restore it or refit", missing="file not found; is this a complete road run folder?")


def check_class_count(expected: int, got: int, what: str, fix: str) -> None:
    """Raise a clear error when two class counts disagree."""
    if expected != got:
        raise OddspotError(f"{what}: {got} classes, but {expected} expected; {fix}")


def check_labels(labels: torch.Tensor, num_classes: int, ignore_index: int, source: str) -> None:
    """Every label must be a class the model has, or the ignore index."""
    bad = (labels != ignore_index) & ((labels < 0) | (labels >= num_classes))
    if bool(bad.any()):
        value = int(labels[bad].max())
        raise OddspotError(
            f"{source}: label {value} outside 0..{num_classes - 1} for a {num_classes}-class model; "
            "training and validation data may hold only known classes (the anomaly class is test-only)"
        )


def network_from_weights(config: ModelConfig, weights: dict[str, torch.Tensor], where: str, prefix: str = "",
                         num_classes: int | None = None) -> DeepLabV3Plus:
    """The network `config` builds, with `weights` (its inference state dict) loaded, in eval mode.

    `where` names the weights file and `prefix` how its tensor names start there, for the errors.
    With `num_classes` (the data's class count) a disagreement with the configuration is an error.
    """
    if num_classes is not None:
        check_class_count(num_classes, config.num_classes, f"{where}: the model",
                          "the data and the model must have the same known classes")
    weight = weights.get("classifier.weight")
    if weight is None:
        raise OddspotError(f"{where}: no {prefix}classifier.weight tensor; not a road model")
    check_class_count(config.num_classes, int(weight.shape[0]), f"{where}: the classifier",
                      f"the config says {config.num_classes}; the weights belong to another model")
    model = DeepLabV3Plus(config, pretrained=False)
    own = {k: v for k, v in model.state_dict().items() if not k.startswith("aux_head.")}
    extra = sorted(set(weights) - set(own))
    if extra:
        raise OddspotError(f"{where}: unexpected tensor {prefix}{extra[0]}; the weights belong to another model")
    missing = sorted(set(own) - set(weights))
    if missing:
        raise OddspotError(f"{where}: missing tensor {prefix}{missing[0]}; the weights are incomplete")
    for k in sorted(weights):
        if tuple(weights[k].shape) != tuple(own[k].shape):
            raise OddspotError(f"{where}: tensor {prefix}{k} is {tuple(weights[k].shape)} but the config builds "
                               f"{tuple(own[k].shape)}; the weights belong to another model configuration")
        if weights[k].dtype != own[k].dtype:
            raise OddspotError(f"{where}: tensor {prefix}{k} is {weights[k].dtype}, expected {own[k].dtype}; "
                               "the weights belong to another model")
        if k.endswith("running_var") and not bool((weights[k] >= 0).all()):
            raise OddspotError(f"{where}: tensor {prefix}{k} holds negative variances; the weights are damaged")
    full = dict(model.state_dict())
    full.update(weights)
    model.load_state_dict(full, strict=True)
    return model.eval()
