"""Evaluating a road model on a benchmark with binary pixel labels (Fishyscapes, Road Anomaly, SegmentMeIfYouCan).

The sets are read by `oddspot.data.road_benchmarks`: 0 in-distribution, 1 anomaly, void excluded.
These benchmarks pool all valid pixels of the set: per score, AUROC, AP (step-wise, as
scikit-learn), AUPR (trapezoid), FPR at 95% TPR in both conventions (first point with TPR >= 0.95,
as SegmentMeIfYouCan; recall nearest 0.95, as the StreetHazards code) and F1-max, streamed image
by image through the same metric states, threshold records and image-level summary as the
StreetHazards evaluation (`oddspot.road.evaluate`). Thresholds and the image rule are the model's,
fitted on its own validation data: nothing here is fitted on the benchmark.

There is no mIoU: the labels have no semantic classes. The record says so under `segmentation`.
The record written to `out_dir` has the files of `oddspot.road.evaluate` (metrics.json,
scores.csv, curves.json, panels/); metrics.json adds `layout`, the label rule, and the counts of
images, anomaly, normal and void pixels, and of images without labels (counted, not evaluated).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from oddspot import __version__
from oddspot.data.image_io import max_pixels
from oddspot.data.road_benchmarks import VOID, open_benchmark
from oddspot.errors import OddspotError
from oddspot.files import staged_output, write_json
from oddspot.progress import track
from oddspot.records.evaluation import CURVES_FILE, SCORES_FILE, write_csv, write_metrics
from oddspot.road.config import SCORE_NAMES
from oddspot.road.evaluate import SCORES_HEADER, anomaly_section, image_row, image_summary, score_results, write_panel
from oddspot.road.head import RoadHead
from oddspot.road.predict import unique_stem
from oddspot.road.thresholds import DEFAULT_OFFSETS

NO_MIOU = "no mIoU: the {layout} labels are binary (anomaly or not), without semantic classes"


@staged_output("out_dir", inputs=("data", "run"))
def evaluate_benchmark(model: RoadHead, data: str | Path, layout: str = "auto", out_dir: str | Path | None = None,
                       scores: tuple[str, ...] = SCORE_NAMES, offsets: tuple[float, ...] = DEFAULT_OFFSETS,
                       panels: int = 4, run: str | Path | None = None,
                       log: Callable[[str], None] = print) -> dict[str, Any]:
    """Score every labelled frame of DATA (a binary-label road benchmark in `layout`) and pool its pixels.

    With `out_dir`, writes the evaluation record there (see the module docstring). Returns the
    metrics, `task` "road" included.
    """
    from oddspot.metrics import BinaryRankingMetrics, PerImageMetrics

    unknown = [s for s in scores if s not in SCORE_NAMES]
    if unknown:
        raise OddspotError(f"--score {unknown[0]!r} unknown; choose from {', '.join(SCORE_NAMES)}")
    if panels < 0:
        raise OddspotError(f"--panels {panels}: use 0 or more")
    bench = open_benchmark(data, layout)
    decision = model.config.score
    names = tuple(dict.fromkeys((*scores, decision, "msp")))
    thresholds = model.fitted_scores().thresholds
    pixel_th = thresholds[decision]
    skipped: list[str] = []

    def report(exc: OddspotError) -> None:
        skipped.append(str(exc))
        log(f"skipped: {exc}")

    pooled = {s: BinaryRankingMetrics() for s in scores}
    per_image = {s: PerImageMetrics() for s in scores}
    rows: list[list[Any]] = []
    image_scores: list[float] = []
    image_labels: list[bool] = []
    n_pixels = n_anomaly = n_void = n_with_anomaly = 0
    t_model = t_metrics = 0.0
    used: set[str] = set()
    out = Path(out_dir) if out_dir is not None else None
    t0 = time.perf_counter()
    for sample in track(bench.iter_samples(on_error=report), f"score {bench.layout} pixels", len(bench)):
        ta = time.perf_counter()
        result = model.analyze(sample.image, names, sample.meta["path"])
        tb = time.perf_counter()
        valid = sample.labels != VOID
        target = sample.labels == 1
        for name in scores:
            pooled[name].update(result.maps[name], target, valid)
            per_image[name].update(result.maps[name], target, valid)
        t_metrics += time.perf_counter() - tb
        t_model += tb - ta
        n_valid, n_anomalous = int(valid.sum()), int(target.sum())
        n_pixels += n_valid
        n_anomaly += n_anomalous
        n_void += int(valid.size - n_valid)
        n_with_anomaly += int(n_anomalous > 0)
        row = image_row(model, result, decision, pixel_th, sample.meta["path"], n_anomalous, n_valid)
        image_scores.append(row[2])
        image_labels.append(n_anomalous > 0)
        rows.append(row)
        if out is not None and len(used) < panels:
            write_panel(out, unique_stem(sample.meta["name"], used), sample.image, result, decision, pixel_th)
    t_test = time.perf_counter() - t0
    if not rows:
        raise OddspotError(f"{bench.root}: no readable {bench.layout} frames; see the skipped files above")
    if n_anomaly == 0:
        raise OddspotError(f"{bench.root}: no valid pixel is labelled anomalous ({bench.label_rule}); "
                           "anomaly scores cannot be evaluated")

    results, curves = score_results(pooled, per_image, thresholds, offsets, scores)
    image, image_curves = image_summary(model, decision, np.asarray(image_labels, bool),
                                        np.asarray(image_scores, np.float64))
    anomaly = anomaly_section(len(rows), n_with_anomaly, n_pixels, results)
    anomaly.update(split=bench.split, positive_class=1, labels=bench.label_rule, n_anomaly_pixels=n_anomaly,
                   n_normal_pixels=n_pixels - n_anomaly, n_void_pixels=n_void)
    metrics = {
        "oddspot_version": __version__,
        "run": None if run is None else str(run),
        "data": str(data),
        "layout": bench.layout,
        "segmentation": {"split": "none", "miou": None, "iou": {}, "n_images": 0,
                         "note": NO_MIOU.format(layout=bench.layout)},
        "anomaly": anomaly,
        "image": image,
        "unlabeled_images": {"n_images": len(bench.unlabeled),
                             "note": "images without a label file: not evaluated (score them with `oddspot road predict`)"},
        "timing": {"test_seconds": round(t_test, 3), "model_seconds": round(t_model, 3),
                   "metric_seconds": round(t_metrics, 3),
                   "score_pixels_per_second": n_pixels * len(scores) / max(t_metrics, 1e-9)},
        "skipped_files": skipped,
        "max_pixels": max_pixels(),
        "device": str(getattr(model, "device", "cpu")),
    }
    if out is not None:
        write_metrics(out, "road", metrics)
        write_csv(out / SCORES_FILE, SCORES_HEADER, rows)
        write_json(out / CURVES_FILE, {"score": decision, "pixel": curves, "image": image_curves})
    return {"task": "road", **metrics}
