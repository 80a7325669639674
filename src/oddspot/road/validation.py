"""Segmentation quality on a labelled split: mIoU from a confusion matrix streamed over all pixels."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from oddspot.data.streethazards import IGNORE_INDEX, SceneSample
from oddspot.errors import OddspotError
from oddspot.progress import track
from oddspot.road.inference import run_model, same_size_batches
from oddspot.road.model import DeepLabV3Plus


def segmentation_metrics(model: DeepLabV3Plus, samples: Iterable[SceneSample], class_names: tuple[str, ...] | list[str],
                         batch_size: int = 8, size: tuple[int, int] | None = None, total: int | None = None,
                         description: str = "validate") -> dict[str, Any]:
    """Per-class IoU, mIoU (mean over classes present) and pixel accuracy over every labelled pixel.

    Pixels whose label is the ignore index or not a class of the model (e.g. the anomaly class)
    are excluded.
    """
    from oddspot.metrics import ConfusionMatrix

    k = model.num_classes
    cm = ConfusionMatrix(k, ignore_index=IGNORE_INDEX)
    was_training = model.training
    model.eval()
    n_images = 0
    batches = same_size_batches(samples, batch_size)
    n_batches = None if total is None else -(-total // batch_size)
    for batch in track(batches, description, n_batches):
        out = run_model(model, np.stack([s.image for s in batch]), size=size)
        pred = out["logits"].argmax(1).cpu().numpy()
        target = np.stack([s.labels for s in batch]).astype(np.int64)
        target[target >= k] = IGNORE_INDEX
        cm.update(pred, target)
        n_images += len(batch)
    model.train(was_training)
    if n_images == 0:
        raise OddspotError("no readable images to measure segmentation quality on")
    res = cm.compute()
    iou = [float(v) for v in res["iou"]]
    return {"miou": float(res["miou"]), "pixel_accuracy": float(res["pixel_accuracy"]),
            "iou": {name: iou[i] for i, name in enumerate(class_names[:k])}, "n_images": n_images}

