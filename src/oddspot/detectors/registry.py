"""Detectors by name, for the CLI and config files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oddspot.detectors.base import read_model_meta
from oddspot.errors import OddspotError

DETECTORS = ("patchcore", "padim", "cascade")


def _classes() -> dict[str, Any]:
    from oddspot.detectors.cascade import Cascade
    from oddspot.detectors.padim import PaDiM
    from oddspot.detectors.patchcore import PatchCore

    return {"patchcore": PatchCore, "padim": PaDiM, "cascade": Cascade}


def build_detector(name: str, options: dict[str, Any] | None = None):
    """A new, unfitted detector `name` with `options` (unknown options are an error)."""
    classes = _classes()
    if name not in classes:
        raise OddspotError(f"--model {name!r} unknown; use one of {', '.join(classes)}")
    return classes[name](**(options or {}))


def load_detector(folder: str | Path):
    """Load whichever detector a model folder holds."""
    kind = read_model_meta(folder).get("detector")
    classes = _classes()
    if kind not in classes:
        raise OddspotError(f"{Path(folder) / 'model.json'}: unknown detector {kind!r}; this oddspot knows {', '.join(classes)}")
    return classes[kind].load(folder)
