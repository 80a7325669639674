"""Saving and loading road models without pickle: weights in safetensors, configuration in JSON.

The class count is checked three ways: the configuration against the data, the configuration
against the classifier tensor in the weights file, and every tensor name and shape against the
network built from the configuration.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from oddspot import __version__
from oddspot.errors import OddspotError
from oddspot.files import atomic_write_bytes, write_json
from oddspot.road.model import DeepLabV3Plus, ModelConfig

FORMAT_VERSION = 1
CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.safetensors"


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
    path = Path(path)
    if not path.exists():
        raise OddspotError(f"{path}: file not found; is this a complete road run folder?")
    try:
        obj = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise OddspotError(f"{path}: invalid JSON ({exc}); the file is damaged") from None
    if not isinstance(obj, dict):
        raise OddspotError(f"{path}: expected a JSON object")
    return obj


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


def save_model(run_dir: str | Path, model: DeepLabV3Plus, extra: dict[str, Any]) -> None:
    """Write the inference weights and config.json (format version, versions, model config, `extra`)."""
    run_dir = Path(run_dir)
    save_tensors(run_dir / WEIGHTS_FILE, model.inference_state_dict())
    write_config(run_dir, model.config, extra)


def write_config(run_dir: str | Path, config: ModelConfig, extra: dict[str, Any]) -> None:
    """Write the run's config.json."""
    obj = {"format_version": FORMAT_VERSION, "kind": "oddspot.road", "oddspot_version": __version__,
           "model": config.to_dict(), **extra}
    write_json(Path(run_dir) / CONFIG_FILE, obj)


def read_config(run_dir: str | Path) -> dict[str, Any]:
    """Read and check a run's config.json."""
    path = Path(run_dir) / CONFIG_FILE
    if not Path(run_dir).is_dir():
        raise OddspotError(f"{run_dir}: run folder not found; train one with `oddspot road train DATA --out RUN`")
    cfg = read_json(path)
    if cfg.get("kind") != "oddspot.road":
        raise OddspotError(f"{path}: not a road run (kind={cfg.get('kind')!r})")
    if cfg.get("format_version") != FORMAT_VERSION:
        raise OddspotError(
            f"{path}: format version {cfg.get('format_version')} unsupported (this oddspot reads {FORMAT_VERSION})")
    return cfg


def load_model(run_dir: str | Path, device: torch.device | str = "cpu", num_classes: int | None = None) -> DeepLabV3Plus:
    """Build the network from config.json and load model.safetensors, in eval mode.

    With `num_classes` (the data's class count) a disagreement is an error, as is a weights file
    whose classifier has another number of classes than the configuration.
    """
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    config = ModelConfig.from_dict(cfg["model"])
    if num_classes is not None:
        check_class_count(num_classes, config.num_classes, f"{run_dir / CONFIG_FILE}: the model",
                          "the data and the model must have the same known classes")
    state = load_tensors(run_dir / WEIGHTS_FILE)
    weight = state.get("classifier.weight")
    if weight is None:
        raise OddspotError(f"{run_dir / WEIGHTS_FILE}: no classifier.weight tensor; not a road model checkpoint")
    check_class_count(config.num_classes, int(weight.shape[0]), f"{run_dir / WEIGHTS_FILE}: the checkpoint classifier",
                      f"config.json says {config.num_classes}; the weights belong to another model")
    model = DeepLabV3Plus(config, pretrained=False)
    own = {k for k in model.state_dict() if not k.startswith("aux_head.")}
    full = dict(model.state_dict())
    full.update(state)
    if set(state) - own:
        extra_keys = sorted(set(state) - own)
        raise OddspotError(f"{run_dir / WEIGHTS_FILE}: unexpected tensor {extra_keys[0]}; the weights belong to another model")
    missing = sorted(own - set(state))
    if missing:
        raise OddspotError(f"{run_dir / WEIGHTS_FILE}: missing tensor {missing[0]}; the weights file is incomplete")
    own_shapes = model.state_dict()
    wrong = sorted(k for k in state if tuple(state[k].shape) != tuple(own_shapes[k].shape))
    if wrong:
        k = wrong[0]
        raise OddspotError(f"{run_dir / WEIGHTS_FILE}: tensor {k} is {tuple(state[k].shape)} but config.json builds "
                           f"{tuple(own_shapes[k].shape)}; the weights belong to another model configuration")
    model.load_state_dict(full, strict=True)
    return model.to(device).to(memory_format=torch.channels_last).eval()
