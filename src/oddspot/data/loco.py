"""Reader for the MVTec LOCO AD layout (one category folder per product).

    <cat>/train/good/, <cat>/validation/good/          normal images (validation: the official split)
    <cat>/test/good/, test/logical_anomalies/, test/structural_anomalies/
    <cat>/ground_truth/<family>/<image stem>/000.png, 001.png, ...   one mask file per defect
    <cat>/defects_config.json                          [{defect_name, pixel_value, saturation_threshold,
                                                         relative_saturation}, ...]

Each mask file holds its defect's `pixel_value`; any non-zero pixel is anomalous, and the files of
one image are OR-ed for pixel metrics. The defect type of a test image is its family folder
(`logical_anomalies` or `structural_anomalies`), so every evaluation reports both families apart.
For sPRO (`oddspot.metrics.spro`) each mask file is one region, saturated at the
`saturation_threshold` of the defects_config.json entry whose `pixel_value` it holds
(`spro_regions`).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oddspot.data.image_io import list_images, read_mask_values
from oddspot.data.mvtec import SampleRef, category_root, good_refs, images_in
from oddspot.errors import OddspotError

FAMILIES = ("logical_anomalies", "structural_anomalies")
DEFECTS_CONFIG = "defects_config.json"


def is_category(folder: Path) -> bool:
    """True for a folder laid out as one MVTec LOCO AD category."""
    return (folder / "train" / "good").is_dir() and (
        (folder / DEFECTS_CONFIG).is_file() or any((folder / "test" / f).is_dir() for f in FAMILIES))


def defects_config(folder: Path) -> list[dict[str, Any]]:
    """The category's defects_config.json, checked: a list of entries, each with a `defect_name`, a
    `pixel_value` in 1..255 (one entry per value) and, where given, a `saturation_threshold` (finite,
    > 0; <= 1 when `relative_saturation`) and a boolean `relative_saturation`; an empty list is an
    error. [] when the file is absent (it documents the masks' values; reading the masks does not
    need it)."""
    path = folder / DEFECTS_CONFIG
    if not path.exists():
        return []
    hint = "restore it from the MVTec LOCO AD archive"
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise OddspotError(f"{path}: cannot read it ({exc}); {hint}") from None
    ok = isinstance(entries, list) and all(
        isinstance(e, dict) and isinstance(e.get("defect_name"), str) and not isinstance(e.get("pixel_value"), bool)
        and isinstance(e.get("pixel_value"), int) and 1 <= e["pixel_value"] <= 255 for e in entries)
    if not ok or not entries:
        raise OddspotError(f"{path}: expected a list of {{defect_name, pixel_value (1..255), ...}} entries; {hint}")
    values = [e["pixel_value"] for e in entries]
    if len(set(values)) != len(values):
        raise OddspotError(f"{path}: pixel_value {next(v for v in values if values.count(v) > 1)} is listed twice; {hint}")
    for e in entries:
        name = f"{path}: {e['defect_name']!r}"
        relative = e.get("relative_saturation", False)
        if not isinstance(relative, bool):
            raise OddspotError(f"{name}: relative_saturation {relative!r:.40} must be true or false; {hint}")
        if "saturation_threshold" in e:
            t = e["saturation_threshold"]
            if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0 \
                    or (relative and t > 1):
                raise OddspotError(f"{name}: saturation_threshold {t!r:.40} must be a finite number > 0"
                                   f"{' and <= 1 (relative_saturation)' if relative else ''}; {hint}")
    return entries


def spro_regions(mask_paths: Sequence[Path], config: list[dict[str, Any]],
                 shape: tuple[int, int]) -> list[tuple[np.ndarray, float]]:
    """The sPRO regions of a defective test image: one (bool mask, saturation in pixels) per mask file.

    A file's defect is the config entry of the value its pixels hold; the saturation is that
    entry's threshold (times the region's area when relative, else capped at it). Without a
    config (no defects_config.json) a region saturates at its whole area, which makes sPRO the
    per-defect PRO. A file with no defect pixels, or (with a config) with several values or a value
    the config does not list, is an error naming it.
    """
    by_value = {e["pixel_value"]: e for e in config}
    regions = []
    for path in mask_paths:
        values = read_mask_values(path, shape)
        present = np.unique(values[values > 0])
        if present.size == 0 or (config and present.size > 1):
            what = "no defect pixels" if present.size == 0 else f"several values ({', '.join(map(str, present[:4]))})"
            raise OddspotError(f"{path}: has {what}; an MVTec LOCO AD mask file holds one defect's pixel_value")
        region = values > 0
        area = int(region.sum())
        if not config:  # no values to look up: any non-zero pixel is the defect, as for the pixel metrics
            regions.append((region, float(area)))
            continue
        entry = by_value.get(int(present[0]))
        if entry is None or "saturation_threshold" not in entry:
            why = "is not listed in" if entry is None else "has no saturation_threshold in"
            raise OddspotError(f"{path}: pixel value {int(present[0])} {why} {DEFECTS_CONFIG}; "
                               "restore the file from the MVTec LOCO AD archive")
        threshold = float(entry["saturation_threshold"])
        regions.append((region, threshold * area if entry.get("relative_saturation", False) else min(threshold, area)))
    return regions


def read_loco(root: str | Path, category: str) -> dict[str, list[SampleRef]]:
    """List one MVTec LOCO AD category: {"train", "validation" (official, normal), "test"}.

    An anomalous test image takes every mask file of ground_truth/<family>/<its stem>/ (sorted);
    an anomalous image without any is an error naming the folder.
    """
    folder = category_root(root, category)
    defects_config(folder)
    train = [SampleRef(p, 0, "good", category) for p in images_in(folder / "train" / "good", "normal training images")]
    validation = good_refs(folder / "validation" / "good", category)
    test = good_refs(folder / "test" / "good", category)
    for family in FAMILIES:
        family_dir = folder / "test" / family
        for p in list_images(family_dir) if family_dir.is_dir() else []:
            mask_dir = folder / "ground_truth" / family / p.stem
            masks = list_images(mask_dir) if mask_dir.is_dir() else []
            if not masks:
                raise OddspotError(f"{p}: no mask files in {mask_dir}; add them (000.png, ...) or remove the image")
            test.append(SampleRef(p, 1, family, category, masks[0], tuple(masks[1:])))
    return {"train": train, "validation": validation, "test": test}
