"""Evaluate a saved inspect model on the test split of a category: the one evaluation record.

Writes, in `out`: metrics.json (`write_metrics(out, "inspect", ...)`: image and pixel metrics,
calibration, run facts), scores.csv (path, label, defect_type, score [, normalized, anomalous]),
curves.json, pixel_stats.npz (per-image pixel statistics for image-resampling bootstraps and
`oddspot compare`), and the gallery material (`gallery/`). `oddspot report` reads only these
files, so it works after the model and the dataset are gone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oddspot.data import loco
from oddspot.data.image_io import max_pixels
from oddspot.data.layouts import InspectData
from oddspot.data.mvtec import SampleRef
from oddspot.errors import OddspotError
from oddspot.files import staged_output, write_json
from oddspot.inspect.layout import batched, split_test_data
from oddspot.metrics import InspectionEvaluator
from oddspot.metrics.bootstrap import PixelStats, pixel_bootstrap_ci
from oddspot.metrics.reliability import reliability
from oddspot.records.evaluation import CURVES_FILE, SCORES_FILE, write_csv, write_metrics, write_pixel_stats
from oddspot.records.gallery import ScoreRow, write_gallery
from oddspot.runs.registry import load_model

GALLERY_PER_GROUP = 12


@staged_output("out", inputs=("run", "data", "abnormal", "masks"))
def evaluate(run: str | Path, data: str | Path | None, category: str | None, out: str | Path, split: str | None = None,
             bootstrap: int = 1000, seed: int = 0, batch: int = 32, gallery: int = GALLERY_PER_GROUP,
             warn: Callable[[str], Any] = print, device: str | None = None, model: Any | None = None, *,
             layout: str | None = None, abnormal: str | Path | None = None,
             masks: str | Path | None = None) -> dict[str, Any]:
    """Score the test split with a saved model; write the evaluation record to `out` and return its metrics.

    `split` defaults to the run's own protocol; `seed` drives the bootstrap; `gallery` is the number
    of images per gallery group (0: no gallery material). `model`: an already loaded model (any
    runtime, `oddspot.export.load_for_inference`), else the torch model of `run`. `data`, `category`,
    `layout`, `abnormal`, `masks`: the dataset (`inspect.layout.run_dataset`; None: the run's own).
    """
    run, out = Path(run), Path(out)
    if model is None:
        model = load_model(run, "inspect", device=device)
    cal = model.postprocess
    dataset, test, protocol = split_test_data(run, data, category, split, layout, abnormal, masks)
    spro = spro_config(dataset)
    evaluator = InspectionEvaluator(bootstrap=bootstrap, seed=seed, spro_groups=None if spro is None else loco.FAMILIES)
    pixel_stats = PixelStats()
    rows: list[tuple[Any, ...]] = []
    called = 0
    t0 = time.perf_counter()
    for chunk in batched(test, batch):
        samples = [r.load() for r in chunk]
        pred = model.predict([s.image for s in samples], maps=True)
        called += getattr(model, "last_call", {}).get("n_localizer", 0)
        for i, s in enumerate(samples):
            mask = s.mask if s.mask is not None else np.zeros(s.image.shape[:2], bool)
            regions = None if spro is None or s.label == 0 else loco.spro_regions(chunk[i].mask_paths, spro, mask.shape)
            evaluator.add(float(pred.scores[i]), int(s.label), pred.maps[i], mask, s.meta["defect_type"], regions=regions)
            pixel_stats.add(pred.maps[i], mask)
            row = (s.meta["path"], s.label, s.meta["defect_type"], float(pred.scores[i]))
            rows.append(row if cal is None else (*row, float(pred.normalized[i]), int(pred.decisions[i])))
    seconds = time.perf_counter() - t0
    run_facts = {"category": dataset.category, "layout": dataset.layout, "model_kind": model.kind, "split": protocol, "n_test": len(test), "seed": seed,
                 "bootstrap_seed": seed, "predict_seconds": round(seconds, 3), "model": str(run), "max_pixels": max_pixels(),
                 "runtime": getattr(model, "runtime", "torch"), **spro_facts(spro)}
    out.mkdir(parents=True, exist_ok=True)
    return write_record(out, model, evaluator, rows, test, run_facts, called, gallery, warn, pixel_stats)


def spro_config(dataset: InspectData) -> list[dict[str, Any]] | None:
    """The defects config sPRO saturates regions with: MVTec LOCO AD only ([] without its
    defects_config.json: regions then saturate at their area); None for every other layout."""
    return loco.defects_config(dataset.root) if dataset.layout == "loco" else None  # root: the category folder


def spro_facts(config: list[dict[str, Any]] | None) -> dict[str, str]:
    """What run.json-style facts say about sPRO's saturation (nothing when sPRO is not computed)."""
    if config is None:
        return {}
    return {"spro_saturation": loco.DEFECTS_CONFIG if config else "region area (no defects_config.json)"}


def write_record(out: Path, model: Any, evaluator: InspectionEvaluator, rows: list[tuple[Any, ...]],
                 test: Sequence[SampleRef], run_facts: dict[str, Any], called: int, gallery: int,
                 warn: Callable[[str], Any], pixel_stats: PixelStats | None = None) -> dict[str, Any]:
    """The evaluation record from a filled evaluator and the score rows: metrics.json, scores.csv,
    curves.json and the gallery; shared by this evaluation and the Ray one (`oddspot.scale.evaluate`).
    `pixel_stats` (one entry per row) adds pixel_stats.npz and, with a bootstrap, pixel-level intervals."""
    cal = model.postprocess
    if cal is not None:
        metrics = evaluator.compute(image_threshold=cal.image_threshold, pixel_threshold=cal.pixel_threshold)
    else:
        metrics = evaluator.compute()
    metrics["calibration"] = cal.to_dict() if cal is not None else None
    if model.kind == "cascade":
        metrics["cascade"] = {"localizer_call_rate": called / len(test), "thresholds": model.state.get("thresholds")}
    metrics["run"] = run_facts
    add_pixel_statistics(out, metrics, evaluator, rows, pixel_stats)
    if cal is not None:
        metrics["reliability"] = reliability([r[4] for r in rows], [r[1] for r in rows], kind=RELIABILITY_KIND)
    write_json(out / CURVES_FILE, evaluator.curves())
    header = ["path", "label", "defect_type", "score"] + (["normalized", "anomalous"] if cal is not None else [])
    write_csv(out / SCORES_FILE, header, rows)
    if gallery:
        score_rows = [ScoreRow(r[0], int(r[1]), r[2], r[3], bool(r[5]) if cal is not None else None) for r in rows]
        # Uncalibrated runs have no stored thresholds; the gallery then shows the test split's F1-max
        # operating points, and the report labels them as such.
        image_t = cal.image_threshold if cal else (metrics.get("image") or {}).get("f1_max_threshold")
        pixel_t = cal.pixel_threshold if cal else (metrics.get("pixel") or {}).get("f1_max_threshold")
        write_gallery(out, score_rows, _renderer(model, test), image_threshold=image_t, pixel_threshold=pixel_t,
                      display_max=model.state.get("map_display_max"), per_group=gallery, warn=warn)
    write_metrics(out, "inspect", metrics)
    return metrics


RELIABILITY_KIND = "normalized score (piecewise-linear, 0.5 = threshold; not a fitted probability)"


def add_pixel_statistics(out: Path, metrics: dict[str, Any], evaluator: InspectionEvaluator,
                         rows: list[tuple[Any, ...]], pixel_stats: PixelStats | None) -> None:
    """Write pixel_stats.npz and, when the evaluator bootstraps, put pixel-level intervals (images
    resampled) into metrics["pixel"]["ci"]."""
    if pixel_stats is None or not len(pixel_stats) or metrics.get("pixel") is None:
        return
    if len(pixel_stats) != len(rows):
        raise OddspotError(f"{out}: {len(pixel_stats)} pixel statistics for {len(rows)} scored images; a bug, please report it")
    write_pixel_stats(out, pixel_stats, [str(r[0]) for r in rows])
    if evaluator.bootstrap:
        metrics["pixel"]["ci"] = pixel_bootstrap_ci(pixel_stats, n=evaluator.bootstrap, seed=evaluator.seed,
                                                    fpr_limit=evaluator.fpr_limit)


def _renderer(model: Any, test: Sequence[SampleRef]) -> Callable[[Sequence[str]], list[Any]]:
    """The gallery's `render`: re-load the chosen test samples and run the model on them once."""
    by_path = {str(r.path): r for r in test}

    def render(paths: Sequence[str]) -> list[Any]:
        loaded = []
        for p in paths:
            try:
                loaded.append(by_path[p].load())
            except (KeyError, OddspotError):
                loaded.append(None)
        good = [s for s in loaded if s is not None]
        maps = iter(model.predict([s.image for s in good], maps=True).maps if good else [])
        return [None if s is None else (s.image, next(maps), s.mask) for s in loaded]

    return render
