"""Score new street images with a fitted road model: scores.csv, score maps and visual panels.

Written to `out_dir`:
  scores.csv            path, score (the image score), normalized, anomalous (the model's decision),
                        flagged_pixels (pixels at or above the decision score's validation threshold)
  <stem>_<score>.npy    float32 H x W maps (larger = more anomalous) of the decision score and of
                        every extra score asked for
  <stem>_panel.png      input | prediction | overlay | confidence | anomaly score
  errors.csv            path, error: the images that could not be read or were over the pixel budget
                        (written only when some failed)
  tta.json              the test-time augmentation setting (`oddspot.road.tta.TTA.to_dict`), written
                        only when one is on (`tta`: several scales or mirroring)

A JPEG over `DECODE_PIXELS` is decoded at a reduced scale; its maps and panel are at that size.

Panels are drawn by `oddspot.road.panels.make_panel` with the decision score's validation threshold.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oddspot.data.image_io import DECODE_PIXELS, list_images, read_image
from oddspot.errors import OddspotError
from oddspot.files import safe_text, staged_output, write_json, write_npy, write_png
from oddspot.progress import track
from oddspot.records.evaluation import SCORES_FILE, write_csv
from oddspot.road.config import SCORE_NAMES
from oddspot.road.head import RoadHead
from oddspot.road.panels import make_panel
from oddspot.road.tta import TTA
from oddspot.road.tta import analyze as analyze_tta
from oddspot.road.tta import model_runner

ERRORS_FILE = "errors.csv"
TTA_FILE = "tta.json"


def collect_images(inputs: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Image files named directly or found (recursively, sorted) in named folders; a folder of a
    labelled road-anomaly benchmark gives its images only, never its label files."""
    from oddspot.data.road_benchmarks import benchmark_images

    files: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files.extend(benchmark_images(p) or list_images(p, recursive=True))
        elif p.exists():
            files.append(p)
        else:
            raise OddspotError(f"{p}: no such file or folder; check IMAGES")
    if not files:
        raise OddspotError(f"no images found in {', '.join(str(i) for i in inputs)}; give image files or folders")
    return files


def unique_stem(stem: str, used: set[str]) -> str:
    """`stem`, with underscores appended until it is not in `used` (which it is then added to)."""
    while stem in used:
        stem = f"{stem}_"
    used.add(stem)
    return stem


@staged_output("out_dir", inputs=("images",))
def predict(model: RoadHead, images: Sequence[str | os.PathLike[str]], out_dir: str | Path,
            save_scores: Sequence[str] = (), panels: bool = True, log: Callable[[str], None] = print,
            tta: TTA | None = None) -> dict[str, Any]:
    """Score IMAGES (files or folders) with `model` and write the files listed in the module docstring.

    `tta` averages multi-scale and mirrored passes (`oddspot.road.tta`; default: none; an exported
    model mirrors but runs one scale). Returns {"images": number scored, "errors": number unreadable,
    "score": the decision score, "anomalous": images decided anomalous, or None for a model without
    an image threshold}.
    """
    unknown = [s for s in save_scores if s not in SCORE_NAMES]
    if unknown:
        raise OddspotError(f"--save-score {unknown[0]!r} unknown; choose from {', '.join(SCORE_NAMES)}")
    tta = tta or TTA()
    runner = model_runner(model, tta) if tta.active else None  # an exported model refuses other scales here
    files = collect_images(images)
    score = model.config.score
    th = model.pixel_threshold
    names = tuple(dict.fromkeys((score, *save_scores, "msp")))
    out_dir = Path(out_dir)
    rows: list[list[Any]] = []
    errors: list[list[str]] = []
    used: set[str] = set()
    for path in track(files, "predict"):
        try:
            image = read_image(path, reduce_to=DECODE_PIXELS)
            result = analyze_tta(model, image, names, str(path), tta, runner)  # a too-small image is refused here
        except OddspotError as exc:
            errors.append([str(path), str(exc)])
            log(f"skipped: {safe_text(str(exc))}")
            continue
        stem = unique_stem(path.stem, used)
        dmap = result.maps[score]
        for name in dict.fromkeys((score, *save_scores)):
            write_npy(out_dir / f"{stem}_{name}.npy", result.maps[name].astype(np.float32))
        if panels:
            write_png(out_dir / f"{stem}_panel.png",
                      make_panel(image, result.classes, 1.0 - result.maps["msp"], dmap, th["threshold"], th["spread"]))
        value = model.image_score(dmap)
        normalized, decided = model.decide(np.array([value]))
        rows.append([str(path), value, "" if normalized is None else float(normalized[0]),
                     "" if decided is None else int(decided[0]), int((dmap >= th["threshold"]).sum())])
    write_csv(out_dir / SCORES_FILE, ("path", "score", "normalized", "anomalous", "flagged_pixels"), rows)
    if tta.active:
        write_json(out_dir / TTA_FILE, tta.to_dict())
    (out_dir / ERRORS_FILE).unlink(missing_ok=True)
    if errors:
        write_csv(out_dir / ERRORS_FILE, ("path", "error"), errors)
    flagged = None if model.image_rule is None else sum(int(r[3]) for r in rows)
    return {"images": len(rows), "errors": len(errors), "score": score, "anomalous": flagged}
