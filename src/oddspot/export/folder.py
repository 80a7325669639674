"""`oddspot export RUN`: write an exported folder, a run folder whose network is an OpenVINO or ONNX graph.

The exported folder holds the same model.json parts (task, kind, config, state, postprocess) and
tensors (the memory bank, ...) as the run, plus the graph files and model.json's `graph`, which
names the run it came from by the sha256 of the run's model.json.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from oddspot import __version__
from oddspot.data.image_io import list_images, read_image
from oddspot.errors import OddspotError
from oddspot.export.convert import convert
from oddspot.export.graphs import GRAPH_BUILDERS
from oddspot.export.graphs_road import road_training_images
from oddspot.files import mark_folder, read_json, staged_folder
from oddspot.progress import track
from oddspot.runs.contract import MODEL_FILE
from oddspot.runs.registry import load_model
from oddspot.runtime.engine import FORMATS, PRECISIONS

CALIBRATION_IMAGES = 64


def model_sha256(run: str | Path) -> str:
    """sha256 of a run's model.json: it names the tensors' hashes too, so it identifies the whole model."""
    return hashlib.sha256((Path(run) / MODEL_FILE).read_bytes()).hexdigest()


def inspect_training_images(run: Path) -> list[Path]:
    """The training images of an inspect run, from its run.json and split.json (the data must still be there)."""
    from oddspot.data.splits import select
    from oddspot.inspect.layout import run_dataset

    info = read_json(run / "run.json", "re-run `oddspot inspect fit`") if (run / "run.json").exists() else {}
    if not isinstance(info.get("data"), str) or not (run / "split.json").exists():
        raise OddspotError(f"{run}: holds no record of its training data; pass --calibration DIR (normal images)")
    manifest = read_json(run / "split.json", "re-run `oddspot inspect fit`")
    dataset = run_dataset(run)
    return [Path(r.path) for r in select(dataset.refs, dataset.root, manifest["train"])]


# Where int8 calibration images come from when --calibration is not given, by task.
TRAINING_IMAGES: dict[str, Callable[[Path], list[Path]]] = {"inspect": inspect_training_images, "road": road_training_images}


def calibration_images(run: Path, task: str, folder: str | Path | None, count: int, seed: int) -> tuple[list[np.ndarray], str]:
    """Up to `count` images (a seeded sample) for int8 calibration, and where they came from."""
    if folder is not None:
        folder = Path(folder)
        if not folder.is_dir():
            raise OddspotError(f"{folder}: --calibration must be a folder of normal images")
        paths, source = list_images(folder, recursive=True), str(folder)
    elif task in TRAINING_IMAGES:
        paths, source = TRAINING_IMAGES[task](run), "the run's training images"
    else:
        raise OddspotError(f"int8 export of a {task} model needs --calibration DIR (normal images)")
    if not paths:
        raise OddspotError(f"{source}: no images found for int8 calibration; pass --calibration DIR")
    pick = np.sort(np.random.default_rng(seed).permutation(len(paths))[:count])
    return [read_image(paths[i]) for i in pick], source


def export_run(run: str | Path, fmt: str, precision: str, out: str | Path, calibration: str | Path | None = None,
               samples: int = CALIBRATION_IMAGES, seed: int = 0, device: str | None = None,
               cache: bool = False, announce: Callable[[], None] | None = None) -> dict[str, Any]:
    """Export the network of a fitted run to `out` (replaced as a whole); returns what was written.

    `cache`: `out` is the run's own export cache (inside the run folder, which is otherwise refused).
    `announce` is called once the run has loaded, before the (slow) export.
    """
    run, out = Path(run), Path(out)
    if fmt not in FORMATS:
        raise OddspotError(f"--format {fmt!r} unknown; use one of {', '.join(FORMATS)}")
    if precision not in PRECISIONS:
        raise OddspotError(f"--precision {precision!r} unknown; use one of {', '.join(PRECISIONS)}")
    model = load_model(run, device=device or "cpu")
    if getattr(model, "graphs", None) is not None:
        raise OddspotError(f"{run}: is already an exported model; export the run it came from")
    key = (model.task, model.kind)
    if key not in GRAPH_BUILDERS:
        raise OddspotError(f"{run}: {model.task} {model.kind} models cannot be exported yet; "
                           f"exportable: {', '.join(f'{t} {k}' for t, k in GRAPH_BUILDERS)}")
    if announce is not None:
        announce()
    graphs = GRAPH_BUILDERS[key](model)
    images, source = ([], None)
    if precision == "int8":
        images, source = calibration_images(run, model.task, calibration, samples, seed)
        print("warning: int8 graphs are not within the fp32 tolerance on this backbone (README, Deploy); "
              "check `oddspot evaluate --precision int8` before deploying one", file=sys.stderr)
    blobs: dict[str, bytes] = {}
    spec: dict[str, Any] = {}
    for name, graph in track(list(graphs.items()), f"export {fmt} {precision}", total=len(graphs)):
        inputs = [graph.prepare(image) for image in images] if images else None
        files = convert(graph, name, fmt, precision, inputs, seed)
        blobs.update(files)
        spec[name] = {"files": sorted(files), "input_shape": [int(v) for v in graph.example.shape]}
    record = model.to_record()
    record.graph = {
        "format": fmt, "precision": precision, "graphs": spec,
        "source": {"model_sha256": model_sha256(run), "exporter": _versions()},
        "calibration": {"images": len(images), "source": source, "seed": seed} if images else None,
    }
    record.blobs = blobs
    from oddspot.runs.contract import save_record

    with staged_folder(out, inputs=() if cache else (run,)) as stage:
        save_record(stage, record)
        # graph files have names of their own: the marker lets a later export replace the folder
        mark_folder(stage)
    return {"out": str(out), "format": fmt, "precision": precision, "graphs": sorted(spec),
            "bytes": sum(len(b) for b in blobs.values()), "calibration_images": len(images)}


def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"oddspot": __version__}
    for dist in ("torch", "onnx", "openvino", "onnxruntime", "nncf"):
        try:
            out[dist] = md.version(dist)
        except md.PackageNotFoundError:
            pass
    return out
