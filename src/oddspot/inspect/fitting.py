"""Fit an inspect model on one dataset category (any layout of `data.layouts`) and calibrate it on the validation split.

The calibration (thresholds and normalization) is fitted on validation data only and saved in
the model's `model.json["postprocess"]`; the heatmap colour scale goes into its state. Both
travel with the model, so every later `predict` decides the same way.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oddspot import __version__
from oddspot.calibration import Calibration, calibrate
from oddspot.data.layouts import open_dataset
from oddspot.data.mvtec import SampleRef
from oddspot.data.sample import Sample
from oddspot.data.splits import fit_manifest, load_or_create_manifest, select
from oddspot.data.synthetic import synthesize_anomaly
from oddspot.detectors.base import Detector
from oddspot.files import staged_folder, write_json
from oddspot.inspect.layout import (
    RUN_FILE,
    SPLIT_FILE,
    build_detector,
    display_max,
    load_images,
    read_run_info,
    run_dataset,
)
from oddspot.runs.registry import load_model


def fit(data: str | Path, category: str | None, out: str | Path, model: str = "patchcore",
        options: dict[str, Any] | None = None, split: str = "validation", seed: int = 0,
        calibration: str = "auto", quantile: float = 0.995, threshold: float | None = None,
        pixel_threshold: float | None = None, device: str | None = None,
        source: str = "model options", new_split: bool = False, *, layout: str | None = None,
        abnormal: str | Path | None = None, masks: str | Path | None = None) -> dict[str, Any]:
    """Fit `model` on the train split of DATA/CATEGORY, calibrate it on the validation split, and
    save the model (with its calibration), the split manifest and run.json in `out`.

    DATA is read in `layout` (None: detected; `data.layouts.open_dataset`); `category` None picks
    the dataset's only category; with the folder layout DATA is the folder of normal images and
    `abnormal`/`masks` the folders of abnormal images and their masks. run.json records the
    layout and folders, so `evaluate` finds the same data again.

    `options` are the model's options (read strictly; errors name `source`); `seed` drives the
    split, the model and synthetic defects. `out` is replaced as a whole (`files.staged_folder`):
    a failed or interrupted fit leaves the earlier run as it was. A split.json already in `out` is
    reused when its protocol and seed match, redrawn with `new_split`, and an error otherwise
    (`data.splits.fit_manifest`). Returns the facts written to run.json (`split_origin`: drawn,
    reused or redrawn).
    """
    data, out = Path(data), Path(out)
    detector = build_detector(model, options, seed, device, source)
    dataset = open_dataset(data, category, layout, abnormal, masks)
    refs, root = dataset.refs, dataset.root
    inputs = tuple(Path(p) for p in (data, abnormal, masks) if p is not None)
    with staged_folder(out, inputs=inputs) as stage:
        manifest, origin = fit_manifest(out / SPLIT_FILE, refs, root, split, seed, new_split)
        write_json(stage / SPLIT_FILE, manifest)
        train = select(refs, root, manifest["train"])
        t0 = time.perf_counter()
        detector.fit(load_images(train))
        seconds = time.perf_counter() - t0
        validation = select(refs, root, manifest["validation"])
        cal = calibrate_model(detector, [r.load() for r in validation], calibration, quantile, threshold,
                              pixel_threshold, seed, fallback_normal=train[:16])
        detector.save(stage)
        info = {"oddspot_version": __version__, **dataset.source, "model": model,
                "split": split, "seed": seed, "split_origin": origin, "n_train": len(train),
                "n_validation": len(validation), "calibration": cal.strategy if cal is not None else None,
                "fit_seconds": round(seconds, 3), "device": str(detector.backbone.device)}
        write_json(stage / RUN_FILE, info)
    return info


def calibrate_model(detector: Detector, validation: list[Sample], strategy: str = "auto", quantile: float = 0.995,
                    threshold: float | None = None, pixel_threshold: float | None = None, seed: int = 0,
                    fallback_normal: Sequence[SampleRef] = ()) -> Calibration | None:
    """Fit the detector's calibration (`detector.postprocess`) on validation samples, and the heatmap
    colour scale (`detector.state["map_display_max"]`) on their normal images.

    Without validation samples only a `fixed` calibration is possible (its scale then comes from
    `fallback_normal` images); otherwise the detector is left uncalibrated and None is returned.
    """
    detector.postprocess = None
    if not validation:
        validation = [r.load() for r in fallback_normal]
        if strategy != "fixed":
            pred = detector.predict([s.image for s in validation], maps=True)
            detector.state["map_display_max"] = display_max(pred.maps)
            detector.state["map_display_source"] = "training images"
            return None
    if strategy == "auto":
        strategy = "f1" if any(s.label == 1 for s in validation) else "synthetic"
    if strategy == "synthetic":
        rng = np.random.default_rng(seed)
        normal = [s for s in validation if s.label == 0]
        made = [synthesize_anomaly(s.image, rng) for s in normal]
        validation = normal + [Sample(img, mask, 1, {"defect_type": f"synthetic_{kind}"}) for img, mask, kind in made]
    images = [s.image for s in validation]
    labels = np.array([s.label for s in validation])
    masks = [s.mask if s.mask is not None else np.zeros(s.image.shape[:2], bool) for s in validation]
    fit_gate = getattr(detector, "fit_gate", None)
    if fit_gate is not None:
        fit_gate(images, labels)
    pred = detector.predict(images, maps=True)
    detector.state["map_display_max"] = display_max([m for m, y in zip(pred.maps, labels) if y == 0])
    detector.state["map_display_source"] = "normal validation images"
    cal = calibrate(pred.scores, labels, pred.maps, masks, strategy, quantile, threshold, pixel_threshold)
    cal.details.update({"n_validation": len(validation), "seed": seed})
    detector.postprocess = cal
    return cal


def recalibrate(run: str | Path, data: str | Path, category: str, out_run: str | Path, strategy: str = "auto",
                quantile: float = 0.995, threshold: float | None = None, pixel_threshold: float | None = None,
                seed: int = 0, device: str | None = None) -> Calibration | None:
    """Copy a fitted run to `out_run` and re-fit only its calibration on DATA's validation split
    (the run's own split manifest is reused, so the same files play the same roles)."""
    run, data, out_run = Path(run), Path(data), Path(out_run)
    detector = load_model(run, "inspect", device=device)
    dataset = run_dataset(run, data, category)
    refs, root = dataset.refs, dataset.root
    info = read_run_info(run)
    apart = out_run.resolve() != run.resolve()
    with staged_folder(out_run, inputs=(data, run) if apart else (data,)) as stage:  # in place: `run` replaced whole
        shutil.copytree(run, stage, dirs_exist_ok=True)
        manifest = load_or_create_manifest(stage / SPLIT_FILE, refs, root, info.get("split", "validation"), seed)
        validation = [r.load() for r in select(refs, root, manifest["validation"])]
        train = select(refs, root, manifest["train"])[:16]
        cal = calibrate_model(detector, validation, strategy, quantile, threshold, pixel_threshold, seed, train)
        detector.save(stage)
        if info:
            write_json(stage / RUN_FILE, {**info, "calibration": cal.strategy if cal is not None else None,
                                          "calibration_data": str(data)})
    return cal
