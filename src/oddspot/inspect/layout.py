"""An inspect run folder around the model: split manifest, run facts, and the samples they name.

    model.json, model.safetensors   the model (run contract, `oddspot.runs`)
    split.json                      which files were train / validation / test (seeded, written once)
    run.json                        how the model was made: data, category, kind, split, seed, timings
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from oddspot.configs import from_mapping
from oddspot.data.image_io import read_image
from oddspot.data.mvtec import SampleRef, category_root, read_mvtec
from oddspot.data.splits import PROTOCOLS, load_or_create_manifest, select
from oddspot.errors import OddspotError
from oddspot.files import read_json
from oddspot.runs.registry import kinds, model_class

RUN_FILE = "run.json"
SPLIT_FILE = "split.json"
T = TypeVar("T")


def build_detector(kind: str, options: dict[str, Any] | None = None, seed: int = 0, device: str | None = None,
                   source: str = "model options") -> Any:
    """A new inspect detector `kind`: options read strictly (errors name `source`), `seed` unless given there."""
    if kind not in kinds("inspect"):
        raise OddspotError(f"inspect model {kind!r} unknown; use one of {', '.join(kinds('inspect'))}")
    cls = model_class("inspect", kind)
    config = from_mapping(cls.config_class, {"seed": seed, **(options or {})}, source)
    return cls(config, device=device)


def read_run_info(run: Path) -> dict[str, Any]:
    """run.json of a run folder, or {} when there is none (a model saved by the library)."""
    path = Path(run) / RUN_FILE
    if not path.exists():  # a folder or FIFO in its place is an error (read_json), not "no run.json"
        return {}
    return read_json(path, "re-run `oddspot inspect fit`")


def load_images(refs: Sequence[SampleRef]) -> list[np.ndarray]:
    """Decode the images of `refs` (errors name the file)."""
    return [read_image(r.path) for r in refs]


def split_test_refs(run: Path, data: Path, category: str, split: str | None) -> tuple[list[SampleRef], str]:
    """The test samples of `category` under the run's split protocol (or `split`), and that protocol."""
    root = category_root(data, category)
    refs = read_mvtec(data, category)
    info = read_run_info(run)
    protocol = split or info.get("split", "validation")
    if protocol not in PROTOCOLS:
        where = "split" if split else f"{Path(run) / RUN_FILE}: split"
        raise OddspotError(f"{where} must be one of {', '.join(PROTOCOLS)}, got {protocol!r:.40}")
    if protocol == "standard":
        return refs["test"], protocol
    seed = info.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise OddspotError(f"{Path(run) / RUN_FILE}: seed must be an integer, got {seed!r:.40}")
    manifest = load_or_create_manifest(Path(run) / SPLIT_FILE, refs, root, protocol, seed)
    return select(refs, root, manifest["test"]), protocol


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most `size` items."""
    for lo in range(0, len(items), size):
        yield items[lo:lo + size]


def display_max(maps: Sequence[np.ndarray]) -> float:
    """Upper end of the heatmap colour scale: 1.5 x the 99.9th percentile of normal-image map values."""
    return float(1.5 * np.quantile(np.concatenate([m.ravel() for m in maps]), 0.999))
