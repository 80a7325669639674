"""Training the road segmentation network, resumable.

Loss: cross-entropy with the ignore index on the main logits plus `aux_weight` (0.4) times the
same loss on the auxiliary head, with class weights 1 / sqrt(pixel frequency) counted on the
training labels (`class_weighting="none"` for plain cross-entropy). AdamW (or SGD with momentum) with linear warm-up and poly or
cosine decay, the learning rate set each step from the step count (so a resumed run follows the
same schedule). Validation mIoU each epoch; the best epoch's weights are the trained network;
training stops after `patience` epochs without improvement. Every epoch's randomness derives from
(seed, epoch).

With a run folder, the training state is saved after each epoch, atomically, so `resume=True`
continues exactly. It is not the model (the model is model.json + model.safetensors, written by
`RoadModel.save`); these files only serve resuming and reading the training curve:
  state/last.safetensors  weights with the auxiliary head and optimizer moments after the last epoch
  state/last.json         epoch, step, best epoch and mIoU, history, the options (written last)
  state/best.safetensors  inference weights of the best epoch so far
  history.json            loss and validation mIoU per epoch
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oddspot.data.streethazards import CLASS_NAMES, IGNORE_INDEX, StreetHazardsSplit, load_split
from oddspot.errors import OddspotError
from oddspot.features.backbone import default_device, scale_pixels
from oddspot.files import write_json
from oddspot.progress import track
from oddspot.road.augment import augment_batch
from oddspot.road.checkpoint import check_class_count, check_labels, load_tensors, network_from_weights, read_json, save_tensors
from oddspot.road.config import ModelConfig, TrainConfig
from oddspot.road.model import DeepLabV3Plus
from oddspot.road.validation import segmentation_metrics

STATE_FORMAT_VERSION = 1
STATE_DIR = "state"
HISTORY_FILE = "history.json"


@dataclass
class TrainResult:
    """What training leaves: the best epoch's network (eval mode) and what is known about it."""

    network: DeepLabV3Plus
    classes: list[str]
    class_weights: list[float]
    best: dict[str, Any]
    summary: dict[str, Any]


def lr_factor(step: int, total: int, cfg: TrainConfig) -> float:
    """Learning-rate multiplier at `step` of `total`: linear warm-up, then poly (0.9) or cosine decay."""
    if step < cfg.warmup_steps:
        return (step + 1) / (cfg.warmup_steps + 1)
    p = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    return (1 - p) ** 0.9 if cfg.schedule == "poly" else 0.5 * (1 + math.cos(math.pi * p))


def class_weights(counts: np.ndarray, mode: str, max_weight: float = 20.0) -> np.ndarray:
    """Cross-entropy class weights from training pixel counts: 1 / sqrt(frequency), scaled so that the
    pixel-averaged weight is 1 and capped at `max_weight`; classes without pixels get weight 1."""
    counts = np.asarray(counts, np.float64)
    if mode == "none" or counts.sum() == 0:
        return np.ones(len(counts))
    freq = counts / counts.sum()
    w = np.where(freq > 0, 1.0 / np.sqrt(np.maximum(freq, 1e-12)), 0.0)
    w = w / (freq * w).sum()
    return np.where(freq > 0, np.minimum(w, max_weight), 1.0)


def _optimizer(model: DeepLabV3Plus, cfg: TrainConfig) -> torch.optim.Optimizer:
    enc = [p for p in model.encoder.parameters() if p.requires_grad]
    enc_ids = {id(p) for p in model.encoder.parameters()}
    head = [p for p in model.parameters() if p.requires_grad and id(p) not in enc_ids]
    groups = [{"params": enc, "lr": cfg.lr * cfg.backbone_lr_factor, "base_lr": cfg.lr * cfg.backbone_lr_factor},
              {"params": head, "lr": cfg.lr, "base_lr": cfg.lr}]
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay, nesterov=True)


def _save_state(state: Path, model: DeepLabV3Plus, opt: torch.optim.Optimizer, meta: dict[str, Any]) -> None:
    sd = opt.state_dict()
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    for pid, st in sd["state"].items():
        for key, val in st.items():
            tensors[f"optim.{pid}.{key}"] = val if torch.is_tensor(val) else torch.tensor(val)
    save_tensors(state / "last.safetensors", tensors)
    write_json(state / "last.json", {"format_version": STATE_FORMAT_VERSION, "param_groups": sd["param_groups"], **meta})


def _load_state(state: Path, model: DeepLabV3Plus, opt: torch.optim.Optimizer) -> dict[str, Any]:
    meta = read_json(state / "last.json")
    if meta.get("format_version") != STATE_FORMAT_VERSION:
        raise OddspotError(f"{state / 'last.json'}: state format {meta.get('format_version')} unsupported")
    tensors = load_tensors(state / "last.safetensors")
    weights = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    cls = weights.get("classifier.weight")
    if cls is not None:
        check_class_count(model.num_classes, int(cls.shape[0]), f"{state}: the saved training state",
                          "it belongs to another model; train into a new --out folder")
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise OddspotError(f"{state / 'last.safetensors'}: weights do not fit the model ({first})") from None
    optim: dict[int, dict[str, torch.Tensor]] = {}
    for k, v in tensors.items():
        if k.startswith("optim."):
            _, pid, key = k.split(".", 2)
            optim.setdefault(int(pid), {})[key] = v
    opt.load_state_dict({"state": optim, "param_groups": meta["param_groups"]})
    return meta


class _Images:
    """Training images read on demand, kept in memory when the split is small; bad files skipped once."""

    def __init__(self, split: StreetHazardsSplit, indices: np.ndarray, report: Callable[[OddspotError], None],
                 cache_bytes: int = 1 << 30) -> None:
        self.split, self.indices, self.report = split, indices, report
        self.cache: dict[int, tuple[np.ndarray, np.ndarray]] | None = None
        self.bad: set[int] = set()
        first = self.get(int(indices[0])) if len(indices) else None
        if first is not None and first[0].nbytes * len(indices) * 1.4 < cache_bytes:
            self.cache = {}

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray] | None:
        if i in self.bad:
            return None
        if self.cache is not None and i in self.cache:
            return self.cache[i]
        try:
            s = self.split[i]
        except OddspotError as exc:
            self.bad.add(i)
            self.report(exc)
            return None
        check_labels(torch.from_numpy(s.labels.astype(np.int64)), self.split.num_classes, IGNORE_INDEX,
                     s.meta["annotation"])
        if self.cache is not None:
            self.cache[i] = (s.image, s.labels)
        return s.image, s.labels


def train(data: str | Path, model_config: ModelConfig, train_config: TrainConfig, run_dir: str | Path | None = None,
          resume: bool = False, device: str | torch.device | None = None,
          log: Callable[[str], None] = print) -> TrainResult:
    """Train on DATA's training split, validating on its validation split; return the best epoch's network.

    With `run_dir` the training state is saved there after every epoch (see the module docstring)
    and `resume=True` continues it; without, training runs in memory only.
    """
    tcfg, mcfg = train_config, model_config
    train_split = load_split(data, "training")
    val_split = load_split(data, "validation")
    check_class_count(train_split.num_classes, mcfg.num_classes, "--num-classes / model config",
                      f"the data has {train_split.num_classes} known classes ({', '.join(CLASS_NAMES)})")
    dev = torch.device(device) if device is not None else default_device()

    state = Path(run_dir) / STATE_DIR if run_dir is not None else None
    if resume:
        if state is None or not (state / "last.json").exists():
            raise OddspotError(f"{run_dir}: no training state to resume ({STATE_DIR}/last.json missing); "
                               "train without --resume")
        old = read_json(state / "last.json")
        if old.get("model") != mcfg.to_dict() or old.get("train") != tcfg.to_dict():
            raise OddspotError(f"{run_dir}: saved training used other options; resume with the same options or use a new --out")
    elif state is not None and (state / "last.json").exists():
        raise OddspotError(f"{run_dir}: already holds a training state; pass --resume to continue it or choose another --out")

    torch.manual_seed(tcfg.seed)
    model = DeepLabV3Plus(mcfg, pretrained=True)
    model.freeze(tcfg.freeze)
    model.to(dev).to(memory_format=torch.channels_last)
    opt = _optimizer(model, tcfg)

    bad_files: list[str] = []

    def report(exc: OddspotError) -> None:
        bad_files.append(str(exc))
        log(f"skipped: {exc}")

    rng0 = np.random.default_rng(tcfg.seed)
    indices = np.arange(len(train_split))
    if tcfg.max_train_images is not None and len(indices) > tcfg.max_train_images:
        indices = np.sort(rng0.choice(indices, tcfg.max_train_images, replace=False))
    images = _Images(train_split, indices, report)
    counted = indices
    if len(counted) > tcfg.class_weight_images:
        counted = np.sort(np.random.default_rng([tcfg.seed, 1]).choice(counted, tcfg.class_weight_images, replace=False))
    counts = np.zeros(mcfg.num_classes, np.int64)
    if tcfg.class_weighting != "none":
        for i in counted:
            pair = images.get(int(i))
            if pair is not None:
                counts += np.bincount(pair[1][pair[1] < mcfg.num_classes].ravel(), minlength=mcfg.num_classes)
    weights = class_weights(counts, tcfg.class_weighting)
    steps_per_epoch = -(-len(indices) // tcfg.batch_size)
    total_steps = steps_per_epoch * tcfg.epochs

    history: list[dict[str, Any]] = []
    start_epoch, step, best, best_epoch = 0, 0, -1.0, -1
    best_iou: dict[str, float] = {}
    best_weights: dict[str, torch.Tensor] | None = None
    if resume and state is not None:
        meta = _load_state(state, model, opt)
        start_epoch, step = int(meta["epoch"]) + 1, int(meta["step"])
        best, best_epoch, history = float(meta["best_miou"]), int(meta["best_epoch"]), list(meta["history"])
        best_iou = dict(meta.get("best_iou") or {})
        if best_epoch >= 0:
            best_weights = load_tensors(state / "best.safetensors")
        log(f"resuming after epoch {start_epoch} (best mIoU {best:.3f} at epoch {best_epoch + 1})")

    ce = torch.nn.CrossEntropyLoss(weight=torch.tensor(weights, dtype=torch.float32, device=dev), ignore_index=IGNORE_INDEX)
    t_start = time.perf_counter()
    stopped_early = False
    for epoch in range(start_epoch, tcfg.epochs):
        if epoch - best_epoch > tcfg.patience and best_epoch >= 0:
            stopped_early = True
            break
        rng = np.random.default_rng([tcfg.seed, epoch])
        torch.manual_seed(tcfg.seed * 100003 + epoch)
        order = rng.permutation(indices)
        model.train()
        losses: list[float] = []
        aux_losses: list[float] = []
        last = history[-1] if history else None
        desc = f"epoch {epoch + 1}/{tcfg.epochs}" + (
            f" loss {last['loss']:.3f} mIoU {last['miou']:.3f}" if last else "")
        t_epoch = time.perf_counter()
        n_seen = 0
        for b in track(range(steps_per_epoch), desc):
            pairs = [p for p in (images.get(int(i)) for i in order[b * tcfg.batch_size:(b + 1) * tcfg.batch_size]) if p]
            if not pairs:
                continue
            x, y = augment_batch([p[0] for p in pairs], [p[1] for p in pairs], tcfg.augment, rng, dev, IGNORE_INDEX)
            x = scale_pixels(x, "lite")
            factor = lr_factor(step, total_steps, tcfg)
            for g in opt.param_groups:
                g["lr"] = g["base_lr"] * factor
            out = model(x)
            aux_loss = ce(out["aux"], y)
            loss = ce(out["logits"], y) + tcfg.aux_weight * aux_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            n_seen += len(pairs)
            losses.append(float(loss.detach()))
            aux_losses.append(float(aux_loss.detach()))
        train_s = time.perf_counter() - t_epoch
        seg = segmentation_metrics(model, val_split.iter_samples(on_error=report), CLASS_NAMES, tcfg.batch_size,
                                   tcfg.eval_size, total=len(val_split), description=f"validate epoch {epoch + 1}")
        rec = {"epoch": epoch + 1, "loss": float(np.mean(losses)) if losses else float("nan"),
               "aux_loss": float(np.mean(aux_losses)) if aux_losses else float("nan"), "miou": seg["miou"],
               "pixel_accuracy": seg["pixel_accuracy"], "lr": opt.param_groups[1]["lr"], "images": n_seen,
               "train_seconds": round(train_s, 2)}
        history.append(rec)
        improved = seg["miou"] > best
        if improved:
            best, best_epoch, best_iou = seg["miou"], epoch, seg["iou"]
            best_weights = {k: v.detach().to("cpu").clone() for k, v in model.inference_state_dict().items()}
            if state is not None:
                save_tensors(state / "best.safetensors", best_weights)
        if state is not None:
            _save_state(state, model, opt, {"epoch": epoch, "step": step, "best_miou": best, "best_epoch": best_epoch,
                                            "best_iou": best_iou, "history": history, "model": mcfg.to_dict(),
                                            "train": tcfg.to_dict()})
            write_json(Path(run_dir) / HISTORY_FILE, {"epochs": history})  # type: ignore[arg-type]
        log(f"epoch {epoch + 1}/{tcfg.epochs}: loss {rec['loss']:.3f}  val mIoU {seg['miou']:.3f}"
            f"{'  (best)' if improved else ''}  {n_seen / max(train_s, 1e-9):.1f} img/s")
    train_seconds = time.perf_counter() - t_start
    if best_weights is None:
        raise OddspotError(f"{val_split.image_dir}: no epoch reached a validation mIoU; check the validation split")
    where = str(state / "best.safetensors") if state is not None else "trained weights"
    network = network_from_weights(mcfg, best_weights, where, num_classes=train_split.num_classes)
    summary = {"best_epoch": best_epoch + 1, "best_miou": best, "epochs_run": len(history),
               "stopped_early": stopped_early, "train_seconds": round(train_seconds, 2), "skipped_files": bad_files,
               "device": str(dev)}
    return TrainResult(network, list(CLASS_NAMES[: mcfg.num_classes]), [round(float(w), 6) for w in weights],
                       {"epoch": best_epoch + 1, "miou": best, "iou": best_iou}, summary)
