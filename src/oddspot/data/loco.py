"""Reader for the MVTec LOCO AD layout (one category folder per product).

    <cat>/train/good/, <cat>/validation/good/          normal images (validation: the official split)
    <cat>/test/good/, test/logical_anomalies/, test/structural_anomalies/
    <cat>/ground_truth/<family>/<image stem>/000.png, 001.png, ...   one mask file per defect
    <cat>/defects_config.json                          [{defect_name, pixel_value, saturation_threshold,
                                                         relative_saturation}, ...]

Each mask file holds its defect's `pixel_value`; any non-zero pixel is anomalous, and the files of
one image are OR-ed for pixel metrics. The defect type of a test image is its family folder
(`logical_anomalies` or `structural_anomalies`), so every evaluation reports both families apart.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from oddspot.data.image_io import list_images
from oddspot.data.mvtec import SampleRef, category_root, good_refs, images_in
from oddspot.errors import OddspotError

FAMILIES = ("logical_anomalies", "structural_anomalies")
DEFECTS_CONFIG = "defects_config.json"


def is_category(folder: Path) -> bool:
    """True for a folder laid out as one MVTec LOCO AD category."""
    return (folder / "train" / "good").is_dir() and (
        (folder / DEFECTS_CONFIG).is_file() or any((folder / "test" / f).is_dir() for f in FAMILIES))


def defects_config(folder: Path) -> list[dict[str, Any]]:
    """The category's defects_config.json, checked (a list of entries with a name and a pixel value in 1..255);
    [] when the file is absent (it documents the masks' values; reading the masks does not need it)."""
    path = folder / DEFECTS_CONFIG
    if not path.exists():
        return []
    try:
        entries = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise OddspotError(f"{path}: cannot read it ({exc}); restore it from the MVTec LOCO AD archive") from None
    ok = isinstance(entries, list) and all(
        isinstance(e, dict) and isinstance(e.get("defect_name"), str) and not isinstance(e.get("pixel_value"), bool)
        and isinstance(e.get("pixel_value"), int) and 1 <= e["pixel_value"] <= 255 for e in entries)
    if not ok:
        raise OddspotError(f"{path}: expected a list of {{defect_name, pixel_value (1..255), ...}} entries; "
                           "restore it from the MVTec LOCO AD archive")
    return entries


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
