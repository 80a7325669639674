"""Evaluating a road model on a benchmark with binary pixel labels (Fishyscapes, Road Anomaly, SegmentMeIfYouCan).

The sets are read by `oddspot.data.road_benchmarks`: 0 in-distribution, 1 anomaly, void excluded.
These benchmarks pool all valid pixels of the set: per score, AUROC, AP (step-wise, as
scikit-learn), AUPR (trapezoid), FPR at 95% TPR in both conventions (first point with TPR >= 0.95,
as SegmentMeIfYouCan; recall nearest 0.95, as the StreetHazards code) and F1-max, streamed image
by image through the same metric states, threshold records and image-level summary as the
StreetHazards evaluation (`oddspot.road.evaluate`). Thresholds and the image rule are the model's,
fitted on its own validation data: nothing here is fitted on the benchmark.

Component-level metrics (SegmentMeIfYouCan's sIoU, PPV and mean F1; `oddspot.metrics.components`)
are computed for the decision score at the model's stored pixel threshold, with the benchmark's
component sizes (its obstacle track's for `smiyc_obstacle`, its anomaly track's otherwise), under
`anomaly.components`. The benchmark's own leaderboard thresholds at the pixel F1-max of the test
set itself; oddspot does not fit anything on the test set, so its figures are those of the
threshold a deployed model would use.

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

from oddspot import __version__
from oddspot.data.image_io import max_pixels
from oddspot.data.road_benchmarks import VOID, open_benchmark
from oddspot.errors import OddspotError
from oddspot.files import staged_output, write_json
from oddspot.metrics.components import SIZES, ComponentMetrics
from oddspot.progress import track
from oddspot.records.evaluation import CURVES_FILE, SCORES_FILE, write_csv, write_metrics
from oddspot.road.config import SCORE_NAMES
from oddspot.road.evaluate import SCORES_HEADER, AnomalyTally, anomaly_section
from oddspot.road.head import RoadHead
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

    out = Path(out_dir) if out_dir is not None else None
    tally = AnomalyTally(model, scores, decision, pixel_th, out, panels)
    track_sizes = "obstacle_track" if bench.layout == "smiyc_obstacle" else "anomaly_track"
    components = ComponentMetrics(float(pixel_th["threshold"]), *SIZES[track_sizes])
    t0 = time.perf_counter()
    for sample in track(bench.iter_samples(on_error=report), f"score {bench.layout} pixels", len(bench)):
        ta = time.perf_counter()
        result = model.analyze(sample.image, names, sample.meta["path"])
        target, valid = sample.labels == 1, sample.labels != VOID
        tally.add(result, result.maps, target, valid, sample.meta["path"], sample.meta["name"], sample.image,
                  time.perf_counter() - ta)
        components.update(result.maps[decision], target, valid)
    t_test = time.perf_counter() - t0
    if not tally.rows:
        raise OddspotError(f"{bench.root}: no readable {bench.layout} frames; see the skipped files above")
    if tally.n_anomaly == 0:
        raise OddspotError(f"{bench.root}: no valid pixel is labelled anomalous ({bench.label_rule}); "
                           "anomaly scores cannot be evaluated")

    results, curves, image, image_curves = tally.summary(thresholds, offsets)
    anomaly = anomaly_section(len(tally.rows), tally.n_with_anomaly, tally.n_pixels, results)
    anomaly.update(split=bench.split, positive_class=1, labels=bench.label_rule, n_anomaly_pixels=tally.n_anomaly,
                   n_normal_pixels=tally.n_pixels - tally.n_anomaly, n_void_pixels=tally.n_void)
    anomaly["components"] = {"score": decision, **components.compute(), "sizes": track_sizes,
                             "threshold_source": "the model's stored pixel threshold (fitted on its own validation data); "
                                                 "the SegmentMeIfYouCan leaderboard uses the test set's pixel F1-max"}
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
        "timing": {"test_seconds": round(t_test, 3), **tally.timing()},
        "skipped_files": skipped,
        "max_pixels": max_pixels(),
        "device": str(getattr(model, "device", "cpu")),
        "runtime": getattr(model, "runtime", "torch"),
    }
    if out is not None:
        write_metrics(out, "road", metrics)
        write_csv(out / SCORES_FILE, SCORES_HEADER, tally.rows)
        write_json(out / CURVES_FILE, {"score": decision, "pixel": curves, "image": image_curves})
    return {"task": "road", **metrics}
