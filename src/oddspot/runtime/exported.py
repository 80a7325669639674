"""What every exported model shares: its graphs, read from the verified folder, and the rules it keeps.

An exported folder is a run folder (`oddspot.runs.contract`) whose model.json also holds `graph`:

    {"format": "openvino" | "onnx", "precision": "fp32" | "bf16" | "int8",
     "graphs": {NAME: {"files": [FILE, ...], "input_shape": [1, ...]}},
     "source": {"model_sha256": ..., "exporter": {...}}, "calibration": {...} (int8 only)}

The graph files are listed, with their sha256 and size, in `files` like the tensor file.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from oddspot.errors import OddspotError
from oddspot.imaging import resize_image
from oddspot.runs.contract import MODEL_FILE, Record, save_record
from oddspot.runtime.engine import Engine


class GraphSpec:
    """One named graph of an exported folder: its engine and its static input shape."""

    def __init__(self, engine: Engine, input_shape: tuple[int, ...]) -> None:
        self.engine, self.input_shape = engine, input_shape


def read_graphs(record: Record, names: tuple[str, ...]) -> dict[str, GraphSpec]:
    """The graphs `names` of an exported record, compiled; any damage is a one-line error."""
    where = f"{record.source}/{MODEL_FILE}"
    graph = record.graph
    if not isinstance(graph, dict):
        raise OddspotError(f"{where}: not an exported model (no graph); export it with `oddspot export`")
    graphs = graph.get("graphs")
    if not isinstance(graphs, dict) or set(graphs) != set(names):
        raise OddspotError(f"{where}: graph.graphs must name {', '.join(names)}; export the model again")
    out = {}
    for name in names:
        spec = graphs[name]
        files = spec.get("files") if isinstance(spec, dict) else None
        shape = spec.get("input_shape") if isinstance(spec, dict) else None
        if (not isinstance(files, list) or not files or not all(isinstance(f, str) and f in record.blobs for f in files)):
            raise OddspotError(f"{where}: graph.graphs.{name}.files must list files of the folder; export the model again")
        if (not isinstance(shape, list) or not shape or shape[0] != 1
                or not all(isinstance(v, int) and not isinstance(v, bool) and 0 < v <= 1_000_000 for v in shape)):
            raise OddspotError(f"{where}: graph.graphs.{name}.input_shape must be positive integers starting with 1; "
                               "export the model again")
        engine = Engine(graph.get("format"), graph.get("precision"), {f: record.blobs[f] for f in files}, where)
        out[name] = GraphSpec(engine, tuple(shape))
    return out


class ExportedModel:
    """Mixin of exported models: they predict and save, and say which runtime they run on."""

    graphs: dict[str, GraphSpec]
    graph_meta: dict[str, Any]
    blobs: dict[str, bytes]

    def attach(self, record: Record, names: tuple[str, ...], device: str | None) -> None:
        """Compile the record's graphs `names`; exported graphs run on the CPU."""
        if device not in (None, "cpu", "auto"):
            raise OddspotError(f"--device {device}: exported models run on the CPU; use --runtime torch for a GPU")
        self.graphs = read_graphs(record, names)
        self.graph_meta, self.blobs = dict(record.graph), dict(record.blobs)

    @property
    def runtime(self) -> str:
        return next(iter(self.graphs.values())).engine.describe()

    def image_trunk(self, name: str, batch: list[np.ndarray], size: int) -> np.ndarray:
        """Graph `name` on each image resized to size x size (`imaging.resize_image`), outputs stacked."""
        outputs = self.graphs[name].engine.run_many([resize_image(image, size)[None] for image in batch])
        return np.concatenate([out[0] for out in outputs])

    def check_image_input(self, record: Record, name: str, size: int) -> None:
        """Graph `name` must take one size x size x 3 image, as the stored config says."""
        shape = self.graphs[name].input_shape
        if shape != (1, size, size, 3):
            raise OddspotError(f"{record.source}/{MODEL_FILE}: the {name} graph takes {list(shape)}, but config.image_size "
                               f"is {size}; export the model again")

    def fit(self, *args: Any, **kwargs: Any) -> Any:
        raise OddspotError("an exported model cannot be fitted; fit the original run, then export it again")

    def save(self, folder: str | Path) -> Path:
        """Write a copy of the exported folder (model.json, tensors, graph files, oddspot's marker)."""
        from oddspot.files import mark_folder

        save_record(folder, self.to_record())
        mark_folder(folder)
        return Path(folder)

    def to_record(self) -> Record:
        raise NotImplementedError

    def with_graph(self, record: Record) -> Record:
        """`record` (from the model's own to_record) with the graph and its files, for saving a copy."""
        record.graph, record.blobs = dict(self.graph_meta), dict(self.blobs)
        return record
