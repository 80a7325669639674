"""The inspect task end to end: fit on a category, evaluate on its test split, predict on files.

Data flows one way: read (layouts, manifests) -> detector -> scores -> metrics -> files.
"""

from __future__ import annotations

import csv
import io
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from oddspot import __version__
from oddspot.data.image_io import is_image_file, read_image
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
        options: dict[str, Any] | None = None, split: str = "validation", seed: int = 0) -> dict[str, Any]:
    """Fit a detector on the train split of one MVTec-layout category; save it and the split in `out`."""
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
    normal = select(refs, root, [k for k in manifest["validation"] if k.startswith("train/")]) or train[:16]
    detector.state["map_display_max"] = display_scale(detector, normal)
    detector.state["map_display_source"] = "validation normal images" if manifest["validation"] else "training images"
    detector.save(out)
    info = {"oddspot_version": __version__, "data": str(data), "category": category, "model": model,
            "split": split, "seed": seed, "n_train": len(train), "fit_seconds": round(seconds, 3)}
    write_json(out / RUN_FILE, info)
    return info


def display_scale(detector: Any, normal: Sequence[SampleRef]) -> float:
    """Upper end of the heatmap colour scale: 1.5 x the 99.9th percentile of normal-image map values."""
    pred = detector.predict(load_images(normal), maps=True)
    values = np.concatenate([m.ravel() for m in pred.maps])
    return float(1.5 * np.quantile(values, 0.999))


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
    test, protocol = _test_refs(run, data, category, split)
    if not test:
        raise OddspotError(f"{data / category / 'test'}: no test images for --split {protocol}; add test images")
    evaluator = InspectionEvaluator(bootstrap=bootstrap, seed=seed)
    rows = []
    t0 = time.perf_counter()
    for chunk in _batched(test, batch):
        samples = [r.load() for r in chunk]
        pred = detector.predict([s.image for s in samples], maps=True)
        for s, score, amap in zip(samples, pred.image_scores, pred.maps):
            mask = s.mask if s.mask is not None else np.zeros(s.image.shape[:2], bool)
            evaluator.add(float(score), int(s.label), amap, mask, s.meta["defect_type"])
            rows.append((s.meta["path"], s.label, s.meta["defect_type"], float(score)))
    seconds = time.perf_counter() - t0
    metrics = evaluator.compute()
    metrics["run"] = {"category": category, "split": protocol, "n_test": len(test), "bootstrap_seed": seed,
                      "predict_seconds": round(seconds, 3), "model": str(run)}
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "metrics.json", metrics)
    write_json(out / "curves.json", evaluator.curves())
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "label", "defect_type", "score"])
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
    """Score images; write scores.csv, heatmaps/<rel>.png and (optionally) maps/<rel>.npy.

    A file that cannot be decoded is reported through `warn` and in errors.csv, and skipped.
    """
    run, out = Path(run), Path(out)
    detector = load_detector(run)
    items = collect_inputs(inputs)
    display_max = float(detector.state.get("map_display_max") or 0.0) or None
    rows: list[tuple[str, float]] = []
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
        for (path, rel, image), score, amap in zip(good, pred.image_scores, pred.maps):
            rows.append((str(path), float(score)))
            write_png(out / "heatmaps" / f"{rel}.png", heatmap_overlay(image, amap, display_max))
            if save_maps:
                write_npy(out / "maps" / f"{rel}.npy", amap.astype(np.float32))
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["path", "score"])
    w.writerows(rows)
    atomic_write_text(out / "scores.csv", buf.getvalue())
    if errors:
        ebuf = io.StringIO()
        ew = csv.writer(ebuf)
        ew.writerow(["path", "error"])
        ew.writerows(errors)
        atomic_write_text(out / "errors.csv", ebuf.getvalue())
    return {"scored": len(rows), "skipped": len(errors)}
