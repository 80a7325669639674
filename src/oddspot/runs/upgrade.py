"""Convert run folders written by oddspot 0.1 (format 1) to the run contract (format 2).

Each task knows its own format-1 layout; its converter returns the new `Record` and the old
files it replaces. The new model.json is written last, so an interrupted upgrade leaves a folder
that is either still format 1 or already complete format 2.
"""

from __future__ import annotations

import importlib
import shutil
from pathlib import Path

from oddspot.errors import OddspotError
from oddspot.files import read_json
from oddspot.runs.contract import MODEL_FILE, save_record

CONVERTERS = {
    "inspect": "oddspot.detectors.upgrade:record_from_v1",
    "road": "oddspot.road.upgrade:record_from_v1",
    "video": "oddspot.video.upgrade:record_from_v1",
}
VIDEO_KINDS_V1 = ("autoencoder", "motion")


def detect_v1(folder: Path) -> str:
    """The task of a format-1 run folder; an error when the folder is not one."""
    if (folder / "config.json").is_file() and not (folder / MODEL_FILE).exists():
        return "road"
    path = folder / MODEL_FILE
    if not path.is_file():
        raise OddspotError(f"{folder}: not an oddspot run folder (no {MODEL_FILE} or config.json)")
    meta = read_json(path, "cannot upgrade a damaged folder")
    if meta.get("format_version") == 2:
        raise OddspotError(f"{folder}: already format 2; nothing to upgrade")
    if meta.get("format_version") != 1:
        raise OddspotError(f"{path}: format_version {meta.get('format_version')!r} is not one this oddspot can upgrade")
    if "detector" in meta:
        return "inspect"
    if meta.get("kind") in VIDEO_KINDS_V1:
        return "video"
    raise OddspotError(f"{path}: format 1, but neither an inspect nor a video model; cannot upgrade it")


def upgrade(folder: str | Path, out: str | Path | None = None) -> Path:
    """Convert the format-1 run `folder` in place, or into `out` (the original is then left as is)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OddspotError(f"{folder}: no such run folder")
    task = detect_v1(folder)
    module, name = CONVERTERS[task].split(":")
    record, obsolete = getattr(importlib.import_module(module), name)(folder)
    if out is None:
        save_record(folder, record)
        for path in obsolete:
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
        return folder
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise OddspotError(f"{out}: exists and is not empty; pass a new folder to --out")
    out.mkdir(parents=True, exist_ok=True)
    for extra in ("split.json", "run.json"):
        if (folder / extra).is_file():
            shutil.copy2(folder / extra, out / extra)
    save_record(out, record)
    return out
