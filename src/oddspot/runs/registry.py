"""Every model of every task, keyed by `(task, kind)`: build new ones, load saved ones.

Entries name their class by import path and are imported on first use, so this low layer never
imports the task packages above it, and `oddspot --help` stays fast.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import Any

from oddspot.errors import OddspotError
from oddspot.choices import TASKS

MODELS: dict[tuple[str, str], str] = {
    ("inspect", "patchcore"): "oddspot.detectors.patchcore:PatchCore",
    ("inspect", "padim"): "oddspot.detectors.padim:PaDiM",
    ("inspect", "cascade"): "oddspot.detectors.cascade:Cascade",
    ("road", "deeplabv3plus"): "oddspot.road.estimator:RoadModel",
    ("video", "motion"): "oddspot.video.motion:MotionDetector",
    ("video", "autoencoder"): "oddspot.video.autoencoder:FrameAutoencoder",
}

# Exported folders (`oddspot export`): the same task and kind, run by a torch-free class.
EXPORTED: dict[tuple[str, str], str] = {
    ("inspect", "patchcore"): "oddspot.runtime.patchcore:ExportedPatchCore",
    ("inspect", "padim"): "oddspot.runtime.padim:ExportedPaDiM",
    ("inspect", "cascade"): "oddspot.runtime.cascade:ExportedCascade",
    ("road", "deeplabv3plus"): "oddspot.runtime.road:ExportedRoadModel",
    ("video", "motion"): "oddspot.runtime.video:ExportedMotionDetector",
    ("video", "autoencoder"): "oddspot.runtime.video:ExportedFrameAutoencoder",
}


def kinds(task: str) -> tuple[str, ...]:
    """The model kinds of `task`, in registry order."""
    if task not in TASKS:
        raise OddspotError(f"task {task!r} unknown; use one of {', '.join(TASKS)}")
    return tuple(k for t, k in MODELS if t == task)


def model_class(task: str, kind: str) -> Any:
    """The class registered for `(task, kind)`."""
    key = (task, kind)
    if key not in MODELS:
        raise OddspotError(f"{task} model {kind!r} unknown; use one of {', '.join(kinds(task))}")
    module, name = MODELS[key].split(":")
    return getattr(importlib.import_module(module), name)


def build_model(task: str, kind: str, options: dict[str, Any] | None = None) -> Any:
    """A new, unfitted model; unknown or invalid options are a one-line error."""
    return model_class(task, kind)(**(options or {}))


def load_model(folder: str | Path, task: str | None = None, **kwargs: Any) -> Any:
    """Load whichever model a run folder holds (checked: format, hashes, task when given)."""
    from oddspot.runs.contract import MODEL_FILE, load_record
    from oddspot.runs.model import build_from_record

    record = load_record(folder, task)
    key = (record.task, record.kind)
    if key not in MODELS:
        raise OddspotError(f"{Path(folder) / MODEL_FILE}: unknown {record.task} model kind {record.kind!r}; "
                           f"this oddspot knows {', '.join(kinds(record.task))}")
    if record.graph is not None:
        if key not in EXPORTED:
            raise OddspotError(f"{Path(folder) / MODEL_FILE}: an exported {record.task} {record.kind} model, which this "
                               "oddspot cannot run; use the oddspot version that exported it")
        module, name = EXPORTED[key].split(":")
        return build_from_record(getattr(importlib.import_module(module), name), record, **kwargs)
    return build_from_record(model_class(*key), record, **kwargs)
