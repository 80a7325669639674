"""An inspect run folder around the model: split manifest, run facts, and the samples they name.

    model.json, model.safetensors   the model (run contract, `oddspot.runs`)
    split.json                      which files were train / validation / test (seeded, written once)
    run.json                        how the model was made: data, layout, category, kind, split, seed, timings
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from oddspot.choices import INSPECT_LAYOUTS
from oddspot.configs import from_mapping
from oddspot.data.image_io import read_image
from oddspot.data.layouts import InspectData, open_dataset
from oddspot.data.mvtec import SampleRef
from oddspot.data.mvtec_ad2 import private_hint
from oddspot.data.splits import PROTOCOLS, load_or_create_manifest, read_manifest, select
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


def run_dataset(run: Path, data: str | Path | None = None, category: str | None = None, layout: str | None = None,
                abnormal: str | Path | None = None, masks: str | Path | None = None) -> InspectData:
    """The dataset a command on `run` reads: the one given, else the one its run.json records.

    Without `layout` the run's layout is used (detected from the folder for a run that records
    none); without `data` the run's data folder; without `category` the run's category. A run of
    the folder layout evaluated on its own normal folder reuses its abnormal and masks folders
    unless others are given.
    """
    info = read_run_info(run)
    where = Path(run) / RUN_FILE
    for name in ("data", "layout", "category", "abnormal", "masks"):
        if info.get(name) is not None and not isinstance(info[name], str):
            raise OddspotError(f"{where}: {name} must be a string, got {info[name]!r:.40}")
    if info.get("layout") is not None and info["layout"] not in INSPECT_LAYOUTS:
        raise OddspotError(f"{where}: layout must be one of {', '.join(INSPECT_LAYOUTS)}, got {info['layout']!r:.40}")
    if data is None:
        if info.get("data") is None:
            raise OddspotError(f"{Path(run)}: no DATA given and {where} records none; pass the dataset folder")
        data = info["data"]
    same_data = info.get("data") is not None and Path(data).absolute() == Path(info["data"]).absolute()
    if same_data and abnormal is None and masks is None and layout in (None, "folder") and info.get("layout") == "folder":
        abnormal, masks = info.get("abnormal"), info.get("masks")
    if layout is None and abnormal is None and masks is None:
        layout = info.get("layout")
    return open_dataset(data, category if category is not None else info.get("category"), layout, abnormal, masks)


def split_test_refs(run: Path, data: str | Path | None, category: str | None, split: str | None,
                    layout: str | None = None, abnormal: str | Path | None = None,
                    masks: str | Path | None = None) -> tuple[list[SampleRef], str]:
    """The test samples of the dataset (`run_dataset`) under the run's split protocol (or `split`), and that protocol."""
    _, test, protocol = split_test_data(run, data, category, split, layout, abnormal, masks)
    return test, protocol


def split_test_data(run: Path, data: str | Path | None, category: str | None, split: str | None,
                    layout: str | None = None, abnormal: str | Path | None = None,
                    masks: str | Path | None = None) -> tuple[InspectData, list[SampleRef], str]:
    """`split_test_refs`, with the dataset listing it comes from; no test sample is a one-line error."""
    dataset = run_dataset(run, data, category, layout, abnormal, masks)
    info = read_run_info(run)
    protocol = split or info.get("split", "validation")
    if protocol not in PROTOCOLS:
        where = "split" if split else f"{Path(run) / RUN_FILE}: split"
        raise OddspotError(f"{where} must be one of {', '.join(PROTOCOLS)}, got {protocol!r:.40}")
    if protocol == "standard":
        test = dataset.refs["test"]
        _refuse_calibration_images(Path(run), dataset, test, info.get("split", "validation"))
    else:
        seed = info.get("seed", 0)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise OddspotError(f"{Path(run) / RUN_FILE}: seed must be an integer, got {seed!r:.40}")
        manifest = load_or_create_manifest(Path(run) / SPLIT_FILE, dataset.refs, dataset.root, protocol, seed)
        test = select(dataset.refs, dataset.root, manifest["test"])
    if not test:
        raise OddspotError(f"{dataset.root}: no test images for --split {protocol}; add test images"
                           f"{private_hint(dataset.root) if dataset.layout == 'mvtec_ad2' else ''}")
    return dataset, test, protocol


def _refuse_calibration_images(run: Path, dataset: InspectData, test: list[SampleRef], run_protocol: Any) -> None:
    """A one-line error when the run's own split calibrated on any of `test`: scoring them would grade
    the model on the images its threshold and normalization came from."""
    path = run / SPLIT_FILE
    if run_protocol == "standard" or not path.exists():
        return
    manifest = read_manifest(path, dataset.refs, dataset.root, run_protocol)
    in_test = {r.key(dataset.root) for r in test}
    shared = [k for k in manifest["validation"] if k in in_test]
    if shared:
        raise OddspotError(f"{run}: the model was calibrated on {len(shared)} test images (first: {shared[0]}) by its "
                           f"--split {run_protocol}, so --split standard would score them; evaluate with the run's "
                           "own split, or fit with --split standard")


def batched(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    """Consecutive slices of at most `size` items."""
    for lo in range(0, len(items), size):
        yield items[lo:lo + size]


def display_max(maps: Sequence[np.ndarray]) -> float:
    """Upper end of the heatmap colour scale: 1.5 x the 99.9th percentile of normal-image map values."""
    return float(1.5 * np.quantile(np.concatenate([m.ravel() for m in maps]), 0.999))
