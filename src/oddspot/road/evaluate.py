"""Evaluating a road run: mIoU per class on validation, and every anomaly score over every test pixel.

Each score's pixels stream through the evaluation engine (`oddspot.metrics`) image by image, so
memory does not grow with the test set and no pixel is subsampled. Reported per score: pooled
AUROC, AP, AUPR (trapezoid), FPR at 95% TPR in both conventions, F1-max; the same averaged per
image over images holding both classes (the StreetHazards convention, `unlabeled` counted as
normal); precision / recall / F1 at the threshold chosen on validation, and a sensitivity table
around it. Pixels with the ignore index are excluded; the anomaly class is the positive class.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oddspot import __version__
from oddspot.data.streethazards import ANOMALY_CLASS, CLASS_NAMES, IGNORE_INDEX, load_split
from oddspot.errors import OddspotError
from oddspot.features.backbone import default_device
from oddspot.files import write_json
from oddspot.progress import track
from oddspot.road.checkpoint import load_model, read_config
from oddspot.road.inference import run_model, same_size_batches
from oddspot.road.scorer import SCORE_NAMES, RoadScorer
from oddspot.road.thresholds import DEFAULT_OFFSETS, threshold_sensitivity
from oddspot.road.validation import segmentation_metrics

POOLED_KEYS = ("auroc", "ap", "aupr_trapezoid", "fpr95_first", "fpr95_nearest", "f1_max", "f1_max_threshold",
               "n_pos", "n_neg", "exact", "error_bound")


def _plain(value: Any) -> Any:
    """Make metric results JSON-friendly (numpy / torch scalars and arrays to Python)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, np.generic):
        return value.item()
    return value


def evaluate(run_dir: str | Path, data: str | Path, out_dir: str | Path | None = None, batch_size: int = 8,
             scores: tuple[str, ...] = SCORE_NAMES, device: str | torch.device | None = None,
             offsets: tuple[float, ...] = DEFAULT_OFFSETS, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Evaluate RUN on DATA's validation (mIoU) and test (anomaly scores) splits; write metrics.json to `out_dir`."""
    from oddspot.metrics import BinaryRankingMetrics, PerImageMetrics

    unknown = [s for s in scores if s not in SCORE_NAMES]
    if unknown:
        raise OddspotError(f"--score {unknown[0]!r} unknown; choose from {', '.join(SCORE_NAMES)}")
    dev = torch.device(device) if device is not None else default_device()
    cfg = read_config(run_dir)
    val = load_split(data, "validation")
    test = load_split(data, "test")
    model = load_model(run_dir, dev, num_classes=val.num_classes)
    scorer = RoadScorer.load(run_dir)
    size = tuple(cfg["train"]["eval_size"]) if cfg.get("train", {}).get("eval_size") else None
    skipped: list[str] = []

    def report(exc: OddspotError) -> None:
        skipped.append(str(exc))
        log(f"skipped: {exc}")

    t0 = time.perf_counter()
    seg = segmentation_metrics(model, val.iter_samples(on_error=report), CLASS_NAMES, batch_size, size,
                               total=len(val), description="validation mIoU")
    t_seg = time.perf_counter() - t0

    pooled = {s: BinaryRankingMetrics() for s in scores}
    per_image = {s: PerImageMetrics() for s in scores}
    n_pixels = n_images = n_with_anomaly = 0
    t_model = t_metrics = 0.0
    t1 = time.perf_counter()
    n_batches = -(-len(test) // batch_size)
    for batch in track(same_size_batches(test.iter_samples(on_error=report), batch_size), "score test pixels", n_batches):
        ta = time.perf_counter()
        out = run_model(model, np.stack([s.image for s in batch]), size=size, features=scorer.features)
        maps = {k: v.float().cpu() for k, v in scorer.maps(out["logits"], out["features"], scores).items()}
        tb = time.perf_counter()
        labels = torch.from_numpy(np.stack([s.labels for s in batch]))
        valid = labels != IGNORE_INDEX
        target = labels == ANOMALY_CLASS
        for name in scores:
            pooled[name].update(maps[name], target, valid)
            for i in range(len(batch)):
                per_image[name].update(maps[name][i], target[i], valid[i])
        t_metrics += time.perf_counter() - tb
        t_model += tb - ta
        n_pixels += int(valid.sum())
        n_images += len(batch)
        n_with_anomaly += int((target & valid).flatten(1).any(1).sum())
    t_test = time.perf_counter() - t1
    if n_images == 0:
        raise OddspotError(f"{test.image_dir}: no readable test images")
    if n_with_anomaly == 0:
        raise OddspotError(f"{test.annotation_dir}: no test pixel has the anomaly class {ANOMALY_CLASS}; "
                           "anomaly scores cannot be evaluated")

    from oddspot.metrics import UndefinedMetricWarning

    results: dict[str, Any] = {}
    for name in scores:
        pool = _plain(pooled[name].compute())
        th = scorer.thresholds[name]
        with warnings.catch_warnings():  # precision with nothing flagged is NaN in the record, not a warning
            warnings.simplefilter("ignore", UndefinedMetricWarning)
            at = _plain(pooled[name].at_threshold(th["threshold"]))
            sensitivity = threshold_sensitivity(pooled[name], th["threshold"], th["spread"], offsets)
        results[name] = {
            "pooled": {k: pool[k] for k in POOLED_KEYS if k in pool},
            "per_image": _plain(per_image[name].compute()),
            "threshold": {**th, **{k: at[k] for k in ("precision", "recall", "f1", "accuracy", "tp", "fp", "tn", "fn", "exact")
                                   if k in at}},
            "sensitivity": sensitivity,
        }
    metrics = {
        "format_version": 1,
        "oddspot_version": __version__,
        "run": str(run_dir),
        "data": str(data),
        "segmentation": {"split": "validation", **seg},
        "anomaly": {"split": "test", "positive_class": ANOMALY_CLASS, "n_images": n_images,
                    "n_images_with_anomaly": n_with_anomaly, "n_pixels": n_pixels,
                    "pooled": "all valid test pixels pooled (Fishyscapes / SegmentMeIfYouCan convention)",
                    "per_image": "mean over test images containing both classes (StreetHazards convention)",
                    "fpr95_first": "FPR at the first point with TPR >= 0.95",
                    "fpr95_nearest": "FPR at the point with recall nearest 0.95 (StreetHazards code)",
                    "scores": results},
        "timing": {"validation_seconds": round(t_seg, 3), "test_seconds": round(t_test, 3),
                   "model_seconds": round(t_model, 3), "metric_seconds": round(t_metrics, 3),
                   "score_pixels_per_second": n_pixels * len(scores) / max(t_metrics, 1e-9)},
        "skipped_files": skipped,
        "device": str(dev),
    }
    if out_dir is not None:
        write_json(Path(out_dir) / "metrics.json", metrics)
    return metrics


def summary_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per score: pooled AUROC / AP / FPR95 (both), per-image AUROC, F1 at the validation threshold."""
    rows = []
    for name, r in metrics["anomaly"]["scores"].items():
        rows.append({"score": name, "auroc": r["pooled"].get("auroc"), "ap": r["pooled"].get("ap"),
                     "fpr95_first": r["pooled"].get("fpr95_first"), "fpr95_nearest": r["pooled"].get("fpr95_nearest"),
                     "per_image_auroc": r["per_image"].get("auroc"), "f1_at_threshold": r["threshold"].get("f1")})
    return rows
