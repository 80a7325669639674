"""Score new street images with a trained run: score maps and visual panels.

For each image: `<name>_<score>.npy` (float32 H x W, larger = more anomalous) for the requested
scores, and `<name>_panel.png` = input | prediction | overlay | confidence | anomaly score.
The overlay marks pixels at or above the score's validation threshold; the anomaly panel maps
`threshold +- 3 spread` (validation statistics, so the colours mean the same for every image)
onto a colour scale. `predictions.json` lists what was written and what was skipped.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from oddspot.data.image_io import is_image_file, read_image
from oddspot.errors import OddspotError
from oddspot.features.backbone import default_device
from oddspot.files import write_json, write_npy, write_png
from oddspot.progress import track
from oddspot.road.checkpoint import load_model, read_config
from oddspot.road.inference import run_model
from oddspot.road.scorer import SCORE_NAMES, RoadScorer

# Colours of the 13 known classes (unlabeled, building, fence, other, pedestrian, pole, road line,
# road, sidewalk, vegetation, car, wall, traffic sign), close to the CARLA / Cityscapes palette.
PALETTE = np.array([
    [0, 0, 0], [70, 70, 70], [190, 153, 153], [72, 0, 90], [220, 20, 60], [153, 153, 153], [157, 234, 50],
    [128, 64, 128], [244, 35, 232], [107, 142, 35], [0, 0, 142], [102, 102, 156], [220, 220, 0],
], dtype=np.uint8)


def list_images(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Image files named directly or found (recursively, sorted) in named folders."""
    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files.extend(sorted(q for q in p.rglob("*") if q.is_file() and is_image_file(q)))
        elif p.exists():
            files.append(p)
        else:
            raise OddspotError(f"{p}: no such file or folder; check IMAGES")
    if not files:
        raise OddspotError(f"no images found in {', '.join(str(i) for i in inputs)}; give image files or folders")
    return files


def _colormap(values: np.ndarray) -> np.ndarray:
    """0..1 floats -> H x W x 3 uint8 through matplotlib's 'inferno' colour map."""
    from matplotlib import colormaps

    lut = (colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    return lut[np.clip(np.round(values * 255), 0, 255).astype(np.intp)]


def colorize(pred: np.ndarray) -> np.ndarray:
    """H x W class indices -> H x W x 3 palette colours (classes beyond the palette cycle through it)."""
    return PALETTE[np.asarray(pred) % len(PALETTE)]


def make_panel(image: np.ndarray, pred: np.ndarray, confidence: np.ndarray, score: np.ndarray, threshold: float,
               spread: float) -> np.ndarray:
    """input | prediction | overlay (prediction blended, flagged pixels in cyan) | confidence | anomaly score."""
    seg = colorize(pred)
    overlay = (0.55 * image + 0.45 * seg).astype(np.float32)
    flagged = score >= threshold
    overlay[flagged] = 0.35 * overlay[flagged] + 0.65 * np.array([0, 255, 255], np.float32)
    conf = _colormap(np.clip(confidence, 0, 1))
    width = 3 * spread if spread > 0 else max(abs(threshold), 1.0)
    anomaly = _colormap((score - (threshold - width)) / (2 * width))
    gap = np.full((image.shape[0], 2, 3), 255, np.uint8)
    parts = [image, seg, np.clip(overlay, 0, 255).astype(np.uint8), conf, anomaly]
    row: list[np.ndarray] = []
    for part in parts:
        row.extend([part, gap])
    return np.concatenate(row[:-1], axis=1)


def predict(run_dir: str | Path, images: Sequence[str | os.PathLike[str]], out_dir: str | Path, score: str = "fusion",
            save_scores: Sequence[str] | None = None, panels: bool = True, device: str | torch.device | None = None,
            log: Callable[[str], None] = print) -> dict[str, Any]:
    """Write score maps and panels for IMAGES into `out_dir`; return the record also saved as predictions.json."""
    if score not in SCORE_NAMES:
        raise OddspotError(f"--score {score!r} unknown; choose from {', '.join(SCORE_NAMES)}")
    save_scores = tuple(save_scores) if save_scores is not None else (score,)
    unknown = [s for s in save_scores if s not in SCORE_NAMES]
    if unknown:
        raise OddspotError(f"--save-score {unknown[0]!r} unknown; choose from {', '.join(SCORE_NAMES)}")
    files = list_images(images)
    dev = torch.device(device) if device is not None else default_device()
    cfg = read_config(run_dir)
    model = load_model(run_dir, dev)
    scorer = RoadScorer.load(run_dir)
    size = tuple(cfg["train"]["eval_size"]) if cfg.get("train", {}).get("eval_size") else None
    th = scorer.thresholds[score]
    out_dir = Path(out_dir)
    names = tuple(dict.fromkeys((*save_scores, score, "msp")))
    written, skipped = [], []
    used: set[str] = set()
    for path in track(files, "predict"):
        try:
            image = read_image(path)
        except OddspotError as exc:
            skipped.append(str(exc))
            log(f"skipped: {exc}")
            continue
        stem = path.stem
        while stem in used:
            stem = f"{stem}_"
        used.add(stem)
        out = run_model(model, image[None], size=size, features=scorer.features)
        maps = {k: v[0].float().cpu().numpy() for k, v in scorer.maps(out["logits"], out["features"], names).items()}
        pred = out["logits"][0].argmax(0).cpu().numpy()
        entry: dict[str, Any] = {"image": str(path), "files": []}
        for name in save_scores:
            target = out_dir / f"{stem}_{name}.npy"
            write_npy(target, maps[name].astype(np.float32))
            entry["files"].append(str(target))
        if panels:
            target = out_dir / f"{stem}_panel.png"
            write_png(target, make_panel(image, pred, 1.0 - maps["msp"], maps[score], th["threshold"], th["spread"]))
            entry["files"].append(str(target))
        entry["flagged_fraction"] = float((maps[score] >= th["threshold"]).mean())
        entry["max_score"] = float(maps[score].max())
        written.append(entry)
    record = {"run": str(run_dir), "score": score, "threshold": th, "images": written, "skipped": skipped}
    write_json(out_dir / "predictions.json", record)
    return record
