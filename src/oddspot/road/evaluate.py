"""Evaluating a road model: mIoU per class on validation and test, and every anomaly score over every test pixel.

Each score's pixels stream through the evaluation engine (`oddspot.metrics`) image by image, so
memory does not grow with the test set and no pixel is subsampled. Reported per score: pooled
AUROC, AP, AUPR (trapezoid), FPR at 95% TPR in both conventions, F1-max; the same averaged per
image over images holding both classes (the StreetHazards convention, `unlabeled` counted as
normal); precision / recall / F1 at the threshold chosen on validation, and a sensitivity table
around it. Pixels with the ignore index are excluded; the anomaly class is the positive class.

Segmentation is measured on both splits, with both mIoU conventions named (`oddspot.metrics.
segmentation`): over the classes present, and over all classes (absent = 0, the StreetHazards
code). On validation, pixels of no known class are left out; on test, the anomaly class is no
class of the mean but its pixels' predictions count as false positives of the predicted class, as
the benchmark's code counts them. With test-time augmentation (`tta`, see `oddspot.road.tta`)
both splits' predictions and every score come from the averaged passes; the setting is recorded.

The evaluation record written to `out_dir` (what `oddspot report` reads; it never reloads the
model or the data):
  metrics.json  task "road": segmentation (validation), segmentation_test, anomaly (per score),
                image decisions, tta (the test-time augmentation setting), timing
  scores.csv    one row per test image: path, label (1 = holds anomaly pixels), the model's image
                score, normalized score and decision, anomalous / flagged / valid pixel counts
  curves.json   pooled ROC and PR curves per score (downsampled), and the image-level curves
  panels/       `<name>_panel.png` for the first `panels` test images (see `oddspot.road.panels`)
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oddspot import __version__
from oddspot.data.image_io import max_pixels
from oddspot.data.streethazards import ANOMALY_CLASS, CLASS_NAMES, IGNORE_INDEX, load_split
from oddspot.errors import OddspotError
from oddspot.files import staged_output, write_json, write_png
from oddspot.progress import track
from oddspot.records.evaluation import CURVES_FILE, SCORES_FILE, write_csv, write_metrics
from oddspot.road.estimator import RoadModel
from oddspot.road.panels import PANELS_DIR, make_panel
from oddspot.road.predict import unique_stem
from oddspot.road.scorer import SCORE_NAMES
from oddspot.road.thresholds import DEFAULT_OFFSETS, threshold_sensitivity
from oddspot.road.tta import TTA, Runner, mean_logits, model_runner
from oddspot.road.tta import analyze as analyze_tta
from oddspot.road.validation import segmentation_metrics

POOLED_KEYS = ("auroc", "ap", "aupr_trapezoid", "fpr95_first", "fpr95_nearest", "f1_max", "f1_max_threshold",
               "n_pos", "n_neg", "exact", "error_bound")
SCORES_HEADER = ("path", "label", "score", "normalized", "anomalous", "anomaly_pixels", "flagged_pixels", "valid_pixels")
CURVE_POINTS = 200


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


def _curve(curves: dict[str, dict[str, np.ndarray]]) -> dict[str, dict[str, list[float | None]]]:
    """ROC / PR curves as JSON lists; the infinite first threshold becomes null."""
    return {kind: {k: [float(x) if math.isfinite(x) else None for x in np.asarray(v, np.float64)]
                   for k, v in c.items()} for kind, c in curves.items()}


def evaluation_splits(model: RoadModel, data: str | Path, scores: tuple[str, ...], panels: int) -> tuple[Any, Any]:
    """(validation, test) splits of DATA for evaluating `model`, after checking the score names, the
    panel count and that DATA has the model's classes (one-line errors); shared with the Ray engine."""
    unknown = [s for s in scores if s not in SCORE_NAMES]
    if unknown:
        raise OddspotError(f"--score {unknown[0]!r} unknown; choose from {', '.join(SCORE_NAMES)}")
    if panels < 0:
        raise OddspotError(f"--panels {panels}: use 0 or more")
    val = load_split(data, "validation")
    test = load_split(data, "test")
    if val.num_classes != model.config.model.num_classes:
        raise OddspotError(f"{data}: the data has {val.num_classes} known classes, the model "
                           f"{model.config.model.num_classes}; evaluate on the data the model was trained for")
    return val, test


@staged_output("out_dir", inputs=("data", "run"))
def evaluate(model: RoadModel, data: str | Path, out_dir: str | Path | None = None, batch_size: int = 8,
             scores: tuple[str, ...] = SCORE_NAMES, offsets: tuple[float, ...] = DEFAULT_OFFSETS, panels: int = 4,
             run: str | Path | None = None, log: Callable[[str], None] = print, tta: TTA | None = None) -> dict[str, Any]:
    """Evaluate a fitted road model on DATA's validation (mIoU) and test (mIoU, anomaly scores) splits.

    With `out_dir`, writes the evaluation record there (see the module docstring). `batch_size`
    is the validation pass's; test images run one at a time, exactly as `predict` runs them.
    `tta` averages multi-scale and mirrored passes (`oddspot.road.tta`; default: none).
    """
    from oddspot.metrics import ConfusionMatrix

    val, test = evaluation_splits(model, data, scores, panels)
    network, scorer = model._fitted()
    decision = model.config.score
    names = tuple(dict.fromkeys((*scores, decision, "msp")))
    pixel_th = scorer.thresholds[decision]
    skipped: list[str] = []

    def report(exc: OddspotError) -> None:
        skipped.append(str(exc))
        log(f"skipped: {exc}")

    tta = tta or TTA()
    runner = model_runner(model) if tta.active else None
    k = model.config.model.num_classes
    t0 = time.perf_counter()
    if tta.active:
        seg = tta_segmentation(model, val.iter_samples(on_error=report), tta, runner, total=len(val))
    else:
        seg = segmentation_metrics(network, val.iter_samples(on_error=report), CLASS_NAMES, batch_size,
                                   model.config.train.eval_size, total=len(val), description="validation mIoU")
    seg = {**seg, **named_miou(seg["iou"])}
    t_seg = time.perf_counter() - t0
    test_cm = ConfusionMatrix(k + 1, ignore_index=IGNORE_INDEX)

    out = Path(out_dir) if out_dir is not None else None
    tally = AnomalyTally(model, scores, decision, pixel_th, out, panels)
    t1 = time.perf_counter()
    for sample in track(test.iter_samples(on_error=report), "score test pixels", len(test)):
        ta = time.perf_counter()
        result = analyze_tta(model, sample.image, names, sample.meta["path"], tta, runner)
        tb = time.perf_counter()
        test_cm.update(result.classes, anomaly_row_targets(sample.labels, k))
        labels = torch.from_numpy(sample.labels)
        tally.add(result, {name: torch.from_numpy(v) for name, v in result.maps.items()}, labels == ANOMALY_CLASS,
                  labels != IGNORE_INDEX, sample.meta["path"], Path(sample.meta["path"]).stem, sample.image, tb - ta)
    t_test = time.perf_counter() - t1
    if not tally.rows:
        raise OddspotError(f"{test.image_dir}: no readable test images")
    if tally.n_with_anomaly == 0:
        raise OddspotError(f"{test.annotation_dir}: no test pixel has the anomaly class {ANOMALY_CLASS}; "
                           "anomaly scores cannot be evaluated")

    results, curves, image, image_curves = tally.summary(scorer.thresholds, offsets)

    metrics = {
        "oddspot_version": __version__,
        "run": None if run is None else str(run),
        "data": str(data),
        "segmentation": {"split": "validation", **seg},
        "segmentation_test": segmentation_on_test(test_cm.matrix, k, len(tally.rows)),
        "tta": tta.to_dict(),
        "anomaly": anomaly_section(len(tally.rows), tally.n_with_anomaly, tally.n_pixels, results),
        "image": image,
        "timing": {"validation_seconds": round(t_seg, 3), "test_seconds": round(t_test, 3), **tally.timing()},
        "skipped_files": skipped,
        "max_pixels": max_pixels(),
        "device": str(model.device),
        "runtime": getattr(model, "runtime", "torch"),
    }
    if out is not None:
        write_metrics(out, "road", metrics)
        write_csv(out / SCORES_FILE, SCORES_HEADER, tally.rows)
        write_json(out / CURVES_FILE, {"score": decision, "pixel": curves, "image": image_curves})
    return {"task": "road", **metrics}


def named_miou(iou: dict[str, float]) -> dict[str, float]:
    """Both named mIoU conventions from per-class IoU (NaN = class absent from targets and predictions)."""
    values = np.array([np.nan if v is None else v for v in iou.values()], np.float64)
    if not np.isfinite(values).any():
        return {"miou_present_classes": float("nan"), "miou_all_classes": float("nan")}
    return {"miou_present_classes": float(np.nanmean(values)), "miou_all_classes": float(np.nan_to_num(values).mean())}


def anomaly_row_targets(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Test labels for the test confusion matrix (num_classes + 1 rows): every label of no known class that is
    not the ignore index (the anomaly class) becomes row `num_classes`."""
    return np.where((labels >= num_classes) & (labels != IGNORE_INDEX), num_classes, labels)


def segmentation_on_test(matrix: np.ndarray, num_classes: int, n_images: int) -> dict[str, Any]:
    """metrics.json's `segmentation_test`: per-class IoU and both mIoU conventions on the test split, from a
    confusion matrix whose last target row holds the pixels of no known class (the anomaly class)."""
    from oddspot.metrics.segmentation import iou_conventions

    r = iou_conventions(matrix, num_classes)
    return {"split": "test", "miou_present_classes": r["miou_present_classes"], "miou_all_classes": r["miou_all_classes"],
            "pixel_accuracy": r["pixel_accuracy"], "iou": {CLASS_NAMES[i]: v for i, v in enumerate(r["iou"])},
            "n_images": n_images, "n_pixels": r["n_pixels"], "n_anomaly_pixels": r["n_other_pixels"],
            "anomaly_pixels": "no class of the mean; their predictions count as false positives of the predicted "
                              "class (StreetHazards code)",
            "miou_all_classes_note": "absent classes count IoU 0 (StreetHazards code)",
            "miou_present_classes_note": "mean over classes present in targets or predictions"}


def tta_segmentation(model: RoadModel, samples: Any, tta: TTA, runner: Runner | None, total: int | None = None) -> dict[str, Any]:
    """`segmentation_metrics` with the prediction taken from `tta`'s averaged logits, one image at a time."""
    from oddspot.metrics import ConfusionMatrix

    k = model.config.model.num_classes
    cm = ConfusionMatrix(k, ignore_index=IGNORE_INDEX)
    n_images = 0
    for sample in track(samples, "validation mIoU", total):
        pred = mean_logits(model, sample.image, tta, sample.meta["path"], runner).argmax(0)
        target = sample.labels.astype(np.int64)
        target[target >= k] = IGNORE_INDEX
        cm.update(pred, target)
        n_images += 1
    if n_images == 0:
        raise OddspotError("no readable images to measure segmentation quality on")
    res = cm.compute()
    return {"miou": float(res["miou"]), "pixel_accuracy": float(res["pixel_accuracy"]),
            "iou": {name: float(res["iou"][i]) for i, name in enumerate(CLASS_NAMES[:k])}, "n_images": n_images}


def image_row(model: Any, result: Any, decision: str, pixel_th: dict[str, Any], path: str, n_anomalous: int,
              n_valid: int) -> list[Any]:
    """The scores.csv row of one scored test image (`SCORES_HEADER`): its image score on the decision
    score's map, the model's normalized value and decision, and its pixel counts."""
    dmap = result.maps[decision]
    score = model.image_score(dmap)
    normalized, decided = model.decide(np.array([score]))
    return [path, int(n_anomalous > 0), score, "" if normalized is None else float(normalized[0]),
            "" if decided is None else int(decided[0]), n_anomalous, int((dmap >= pixel_th["threshold"]).sum()), n_valid]


def write_panel(out: Path, stem: str, image: np.ndarray, result: Any, decision: str, pixel_th: dict[str, Any]) -> None:
    """OUT/panels/<stem>_panel.png: the image, its classes, 1 - msp and the decision score's map at its threshold."""
    write_png(out / PANELS_DIR / f"{stem}_panel.png",
              make_panel(image, result.classes, 1.0 - result.maps["msp"], result.maps[decision],
                         pixel_th["threshold"], pixel_th["spread"]))


class AnomalyTally:
    """What a road evaluation's test loop gathers image by image, for StreetHazards and the binary-label
    benchmarks (`oddspot.road.external`) alike: every score's pooled and per-image metric states, the
    scores.csv rows, image labels and scores, pixel counts, the time in the model and in the metrics,
    and the first `panels` panels (written to OUT/panels when `out` is given)."""

    def __init__(self, model: Any, scores: tuple[str, ...], decision: str, pixel_th: dict[str, Any],
                 out: Path | None, panels: int) -> None:
        from oddspot.metrics import BinaryRankingMetrics, PerImageMetrics

        self.model, self.scores, self.decision, self.pixel_th = model, scores, decision, pixel_th
        self.out, self.panels, self._stems = out, panels, set()
        self.pooled = {s: BinaryRankingMetrics() for s in scores}
        self.per_image = {s: PerImageMetrics() for s in scores}
        self.rows: list[list[Any]] = []
        self.image_scores: list[float] = []
        self.image_labels: list[bool] = []
        self.n_pixels = self.n_anomaly = self.n_void = self.n_with_anomaly = 0
        self.t_model = self.t_metrics = 0.0

    def add(self, result: Any, maps: dict[str, Any], target: Any, valid: Any, path: str, stem: str, image: np.ndarray,
            model_seconds: float) -> None:
        """One scored image: its score maps (`maps`, numpy or torch), anomaly `target` and `valid` pixel masks."""
        t = time.perf_counter()
        for name in self.scores:
            self.pooled[name].update(maps[name], target, valid)
            self.per_image[name].update(maps[name], target, valid)
        self.t_metrics += time.perf_counter() - t
        self.t_model += model_seconds
        n_valid, n_anomalous = int(valid.sum()), int((target & valid).sum())
        self.n_pixels += n_valid
        self.n_anomaly += n_anomalous
        self.n_void += int(np.prod(valid.shape)) - n_valid
        self.n_with_anomaly += int(n_anomalous > 0)
        row = image_row(self.model, result, self.decision, self.pixel_th, path, n_anomalous, n_valid)
        self.image_scores.append(row[2])
        self.image_labels.append(n_anomalous > 0)
        self.rows.append(row)
        if self.out is not None and len(self._stems) < self.panels:
            write_panel(self.out, unique_stem(stem, self._stems), image, result, self.decision, self.pixel_th)

    def summary(self, thresholds: dict[str, dict[str, Any]], offsets: tuple[float, ...]) -> tuple[Any, Any, Any, Any]:
        """(per-score results, pixel curves, image record, image curves) of everything added."""
        results, curves = score_results(self.pooled, self.per_image, thresholds, offsets, self.scores)
        image, image_curves = image_summary(self.model, self.decision, np.asarray(self.image_labels, bool),
                                            np.asarray(self.image_scores, np.float64))
        return results, curves, image, image_curves

    def timing(self) -> dict[str, float]:
        """metrics.json timing entries of the test loop (seconds in the model and the metrics, pixel throughput)."""
        return {"model_seconds": round(self.t_model, 3), "metric_seconds": round(self.t_metrics, 3),
                "score_pixels_per_second": self.n_pixels * len(self.scores) / max(self.t_metrics, 1e-9)}


def score_results(pooled: dict[str, Any], per_image: dict[str, Any], thresholds: dict[str, dict[str, Any]],
                  offsets: tuple[float, ...], scores: tuple[str, ...]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Per score: pooled and per-image metrics, the stored threshold's confusion, its sensitivity; and the curves.

    Shared by this evaluation and the Ray one (`oddspot.scale.evaluate`), which merge the same states.
    """
    from oddspot.metrics import UndefinedMetricWarning

    results: dict[str, Any] = {}
    curves: dict[str, Any] = {}
    for name in scores:
        pool = _plain(pooled[name].compute())
        th = thresholds[name]
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
        curves[name] = _curve(pooled[name].curves(CURVE_POINTS))
    return results, curves


def anomaly_section(n_images: int, n_with_anomaly: int, n_pixels: int, results: dict[str, Any]) -> dict[str, Any]:
    """metrics.json's `anomaly`: the test split's counts, the conventions named, and every score's results."""
    return {"split": "test", "positive_class": ANOMALY_CLASS, "n_images": n_images,
            "n_images_with_anomaly": n_with_anomaly, "n_pixels": n_pixels,
            "pooled": "all valid test pixels pooled (Fishyscapes / SegmentMeIfYouCan convention)",
            "per_image": "mean over test images containing both classes (StreetHazards convention)",
            "fpr95_first": "FPR at the first point with TPR >= 0.95",
            "fpr95_nearest": "FPR at the point with recall nearest 0.95 (StreetHazards code)",
            "scores": results}


RELIABILITY_KIND = "normalized image score (piecewise-linear, 0.5 = threshold; not a fitted probability)"


def image_summary(model: Any, decision: str, labels: np.ndarray, scores: np.ndarray) -> tuple[dict[str, Any], Any]:
    """Image-level record (ranking metrics when both classes occur, the stored rule's confusion) and its curves."""
    from oddspot.metrics import BinaryRankingMetrics

    image: dict[str, Any] = {"score": decision, "statistic": f"quantile {model.config.image_quantile:g} of the map",
                             "n_images": int(labels.size), "n_anomalous": int(labels.sum()),
                             "rule": model.image_rule.rule if model.image_rule is not None else None}
    image_curves = None
    if labels.any() and not labels.all():
        m = BinaryRankingMetrics()
        m.update(scores, labels)
        r = _plain(m.compute())
        image.update({k: r[k] for k in ("auroc", "ap", "f1_max")})
        image_curves = _curve(m.curves(CURVE_POINTS))
    normalized, decisions = model.decide(scores)
    if normalized is not None:
        from oddspot.metrics.reliability import reliability

        image["reliability"] = reliability(np.clip(normalized, 0.0, 1.0), labels, kind=RELIABILITY_KIND)
    if decisions is not None:
        d = decisions.astype(bool)
        image.update({"threshold": model.image_rule.scale.threshold,  # type: ignore[union-attr]
                      "tp": int((d & labels).sum()), "fp": int((d & ~labels).sum()),
                      "tn": int((~d & ~labels).sum()), "fn": int((~d & labels).sum())})
    return image, image_curves


def summary_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per score: pooled AUROC / AP / FPR95 (both), per-image AUROC, F1 at the validation threshold."""
    rows = []
    for name, r in metrics["anomaly"]["scores"].items():
        rows.append({"score": name, "auroc": r["pooled"].get("auroc"), "ap": r["pooled"].get("ap"),
                     "fpr95_first": r["pooled"].get("fpr95_first"), "fpr95_nearest": r["pooled"].get("fpr95_nearest"),
                     "per_image_auroc": r["per_image"].get("auroc"), "f1_at_threshold": r["threshold"].get("f1")})
    return rows
