"""The inspect task end to end: fit on a category, evaluate on its test split, predict on files.

Data flows one way: read (layouts, manifests) -> detector -> scores -> metrics -> files.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from oddspot import __version__
from oddspot.calibration import CALIBRATION_FILE, Calibration, calibrate as fit_calibration
from oddspot.data.image_io import is_image_file, read_image
from oddspot.data.sample import Sample
from oddspot.data.synthetic import synthesize_anomaly
from oddspot.data.mvtec import SampleRef, category_root, read_mvtec
from oddspot.data.splits import load_or_create_manifest, select
from oddspot.detectors.registry import build_detector, load_detector
from oddspot.errors import OddspotError
from oddspot.files import atomic_write_text, write_json, write_npy, write_png
from oddspot.metrics import InspectionEvaluator
from oddspot.visualize import heatmap_overlay

RUN_FILE = "run.json"
SPLIT_FILE = "split.json"


def read_config(path: str | Path | None) -> dict[str, Any]:
    """Detector options from a YAML file (a flat mapping of option: value)."""
    if path is None:
        return {}
    path = Path(path)
    if not path.exists():
        raise OddspotError(f"{path}: config file not found; check --config")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise OddspotError(f"{path}: invalid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise OddspotError(f"{path}: config must be a mapping of option: value")
    return data


def load_images(refs: Sequence[SampleRef]) -> list[np.ndarray]:
    """Decode the images of `refs` (errors name the file)."""
    return [read_image(r.path) for r in refs]


def fit(data: str | Path, category: str, out: str | Path, model: str = "patchcore",
        options: dict[str, Any] | None = None, split: str = "validation", seed: int = 0,
        calibration: str = "auto", quantile: float = 0.995, threshold: float | None = None,
        pixel_threshold: float | None = None) -> dict[str, Any]:
    """Fit a detector on the train split of one MVTec-layout category, calibrate it on the
    validation split, and save model, calibration and split manifest in `out`."""
    data, out = Path(data), Path(out)
    root = category_root(data, category)
    refs = read_mvtec(data, category)
    out.mkdir(parents=True, exist_ok=True)
    manifest = load_or_create_manifest(out / SPLIT_FILE, refs, root, split, seed)
    train = select(refs, root, manifest["train"])
    detector = build_detector(model, {"seed": seed, **(options or {})})
    t0 = time.perf_counter()
    detector.fit(load_images(train))
    seconds = time.perf_counter() - t0
    validation = select(refs, root, manifest["validation"])
    cal = calibrate_detector(detector, [r.load() for r in validation], calibration, quantile, threshold,
                             pixel_threshold, seed, fallback_normal=train[:16])
    _save_run(detector, cal, out)
    info = {"oddspot_version": __version__, "data": str(data), "category": category, "model": model,
            "split": split, "seed": seed, "n_train": len(train), "n_validation": len(validation),
            "calibration": cal.strategy if cal is not None else None, "fit_seconds": round(seconds, 3)}
    write_json(out / RUN_FILE, info)
    return info


def _save_run(detector: Any, cal: Calibration | None, out: Path) -> None:
    """Save the model and its calibration; a stale calibration file from an earlier fit is removed."""
    detector.save(out)
    (out / CALIBRATION_FILE).unlink(missing_ok=True)
    if cal is not None:
        cal.save(out)


def calibrate_detector(detector: Any, validation: list[Sample], strategy: str = "auto", quantile: float = 0.995,
                       threshold: float | None = None, pixel_threshold: float | None = None, seed: int = 0,
                       fallback_normal: Sequence[SampleRef] = ()) -> Calibration | None:
    """Fit the calibration on validation samples; also store the heatmap colour scale in `detector.state`.

    Without validation samples only a `fixed` calibration is possible (its scale then comes from
    `fallback_normal` images); otherwise None is returned and decisions are unavailable.
    """
    if not validation:
        validation = [r.load() for r in fallback_normal]
        if strategy != "fixed":
            pred = detector.predict([s.image for s in validation], maps=True)
            detector.state["map_display_max"] = _display_max(pred.maps)
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
    if hasattr(detector, "fit_gate"):
        detector.fit_gate(images, labels)
    pred = detector.predict(images, maps=True)
    normal_maps = [m for m, y in zip(pred.maps, labels) if y == 0]
    detector.state["map_display_max"] = _display_max(normal_maps)
    detector.state["map_display_source"] = "normal validation images"
    cal = fit_calibration(pred.scores, labels, pred.maps, masks, strategy, quantile, threshold, pixel_threshold)
    cal.details.update({"n_validation": len(validation), "seed": seed})
    return cal


def calibrate(run: str | Path, data: str | Path, category: str, out_run: str | Path, strategy: str = "auto",
              quantile: float = 0.995, threshold: float | None = None, pixel_threshold: float | None = None,
              seed: int = 0) -> Calibration | None:
    """Copy a fitted run to `out_run` and re-fit only its calibration on DATA's validation split
    (the run's own split manifest is reused, so the same files play the same roles)."""
    run, data, out_run = Path(run), Path(data), Path(out_run)
    detector = load_detector(run)
    if out_run.resolve() != run.resolve():
        shutil.copytree(run, out_run, dirs_exist_ok=True)
    root = category_root(data, category)
    refs = read_mvtec(data, category)
    protocol = json.loads((run / RUN_FILE).read_text()).get("split", "validation") if (run / RUN_FILE).exists() else "validation"
    manifest = load_or_create_manifest(out_run / SPLIT_FILE, refs, root, protocol, seed)
    validation = [r.load() for r in select(refs, root, manifest["validation"])]
    train = select(refs, root, manifest["train"])[:16]
    cal = calibrate_detector(detector, validation, strategy, quantile, threshold, pixel_threshold, seed, train)
    _save_run(detector, cal, out_run)
    return cal


def _display_max(maps: Sequence[np.ndarray]) -> float:
    """Upper end of the heatmap colour scale: 1.5 x the 99.9th percentile of normal-image map values."""
    return float(1.5 * np.quantile(np.concatenate([m.ravel() for m in maps]), 0.999))


def _test_refs(run: Path, data: Path, category: str, split: str | None) -> tuple[list[SampleRef], str]:
    root = category_root(data, category)
    refs = read_mvtec(data, category)
    run_info = json.loads((run / RUN_FILE).read_text()) if (run / RUN_FILE).exists() else {}
    protocol = split or run_info.get("split", "validation")
    if protocol == "standard":
        return refs["test"], protocol
    manifest = load_or_create_manifest(run / SPLIT_FILE, refs, root, protocol, int(run_info.get("seed", 0)))
    return select(refs, root, manifest["test"]), protocol


def _batched(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for lo in range(0, len(items), size):
        yield items[lo:lo + size]


def evaluate(run: str | Path, data: str | Path, category: str, out: str | Path, split: str | None = None,
             bootstrap: int = 1000, seed: int = 0, batch: int = 32) -> dict[str, Any]:
    """Score the test split with a saved model; write metrics.json and scores.csv to `out`."""
    run, data, out = Path(run), Path(data), Path(out)
    detector = load_detector(run)
    cal = Calibration.load(run)
    test, protocol = _test_refs(run, data, category, split)
    if not test:
        raise OddspotError(f"{data / category / 'test'}: no test images for --split {protocol}; add test images")
    evaluator = InspectionEvaluator(bootstrap=bootstrap, seed=seed)
    rows = []
    called = 0
    t0 = time.perf_counter()
    for chunk in _batched(test, batch):
        samples = [r.load() for r in chunk]
        pred = detector.predict([s.image for s in samples], maps=True)
        called += getattr(detector, "last_call", {}).get("n_localizer", 0)
        for s, score, amap in zip(samples, pred.scores, pred.maps):
            mask = s.mask if s.mask is not None else np.zeros(s.image.shape[:2], bool)
            evaluator.add(float(score), int(s.label), amap, mask, s.meta["defect_type"])
            rows.append((s.meta["path"], s.label, s.meta["defect_type"], float(score)))
    seconds = time.perf_counter() - t0
    if cal is not None:
        metrics = evaluator.compute(image_threshold=cal.image_threshold, pixel_threshold=cal.pixel_threshold)
        metrics["calibration"] = cal.to_dict()
        scores = np.array([r[3] for r in rows])
        rows = [(*r, float(n), int(d)) for r, n, d in zip(rows, cal.image(scores), cal.decide(scores))]
    else:
        metrics = evaluator.compute()
        metrics["calibration"] = None
    if hasattr(detector, "last_call"):
        metrics["cascade"] = {"localizer_call_rate": called / len(test), "thresholds": detector.state.get("thresholds")}
    metrics["run"] = {"category": category, "split": protocol, "n_test": len(test), "bootstrap_seed": seed,
                      "predict_seconds": round(seconds, 3), "model": str(run)}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    write_json(out / "curves.json", evaluator.curves())
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "label", "defect_type", "score"] + (["normalized", "anomalous"] if cal is not None else []))
    w.writerows(rows)
    atomic_write_text(out / "scores.csv", buf.getvalue())
    return metrics


def collect_inputs(inputs: Sequence[str | Path]) -> list[tuple[Path, Path]]:
    """(path as found, relative output path) for every image in `inputs` (files or folders, recursive)."""
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file() and is_image_file(f))
            found += [(f, f.relative_to(p)) for f in files]
        elif p.is_file():
            found.append((p, Path(p.name)))
        else:
            raise OddspotError(f"{p}: no such file or folder; check the INPUT paths")
    seen: dict[Path, Path] = {}
    for path, rel in found:
        if rel in seen and seen[rel] != path:
            raise OddspotError(f"{path} and {seen[rel]} would both be written as {rel}; pass their common parent folder instead")
        seen[rel] = path
    if not found:
        raise OddspotError(f"no images found in {', '.join(map(str, inputs))}; pass image files or folders")
    return found


def predict(run: str | Path, inputs: Sequence[str | Path], out: str | Path, save_maps: bool = False,
            batch: int = 16, warn=print) -> dict[str, Any]:
    """Score images; write scores.csv, heatmaps/<rel>.png, masks/<rel>.png and (optionally) maps/<rel>.npy.

    With a calibrated run, scores.csv holds `path,score,normalized,anomalous` and masks/ the
    predicted defect pixels (pixel threshold); without one, `path,score` only.

    A file that cannot be decoded is reported through `warn` and in errors.csv, and skipped.
    """
    run, out = Path(run), Path(out)
    detector = load_detector(run)
    cal = Calibration.load(run)
    items = collect_inputs(inputs)
    display_max = float(detector.state.get("map_display_max") or 0.0) or None
    rows: list[tuple[Any, ...]] = []
    errors: list[tuple[str, str]] = []
    for chunk in _batched(items, batch):
        good: list[tuple[Path, Path, np.ndarray]] = []
        for path, rel in chunk:
            try:
                good.append((path, rel, read_image(path)))
            except OddspotError as exc:
                warn(f"skipped: {exc}")
                errors.append((str(path), str(exc)))
        if not good:
            continue
        pred = detector.predict([g[2] for g in good], maps=True)
        for (path, rel, image), score, amap in zip(good, pred.scores, pred.maps):
            if cal is not None:
                rows.append((str(path), float(score), float(cal.image(score)), int(cal.decide(score))))
                if cal.pixel is not None:
                    write_png(out / "masks" / f"{rel}.png", cal.defect_mask(amap).astype(np.uint8) * 255)
            else:
                rows.append((str(path), float(score)))
            write_png(out / "heatmaps" / f"{rel}.png", heatmap_overlay(image, amap, display_max))
            if save_maps:
                write_npy(out / "maps" / f"{rel}.npy", amap.astype(np.float32))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "score"] + (["normalized", "anomalous"] if cal is not None else []))
    w.writerows(rows)
    atomic_write_text(out / "scores.csv", buf.getvalue())
    if errors:
        ebuf = io.StringIO()
        ew = csv.writer(ebuf)
        ew.writerow(["path", "error"])
        ew.writerows(errors)
        atomic_write_text(out / "errors.csv", ebuf.getvalue())
    return {"scored": len(rows), "skipped": len(errors)}
