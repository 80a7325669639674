"""An exported cascade: an exported PatchCore gate and an exported localizer, composed by `CascadeHead` (no torch).

The folder holds two graphs, `gate` and `localizer` (each the trunk of its part); each part is
built from its nested record as the exported PatchCore or PaDiM of its own folder would be.
"""

from __future__ import annotations

from typing import Any

from oddspot.detectors.cascade_head import PARTS, CascadeHead, build_part
from oddspot.errors import OddspotError
from oddspot.runs.contract import MODEL_FILE, Record
from oddspot.runtime.exported import ExportedModel
from oddspot.runtime.padim import ExportedPaDiM
from oddspot.runtime.patchcore import ExportedPatchCore

GRAPHS = PARTS
LOCALIZERS: dict[str, type[ExportedPatchCore] | type[ExportedPaDiM]] = {"patchcore": ExportedPatchCore,
                                                                        "padim": ExportedPaDiM}


class ExportedCascade(ExportedModel, CascadeHead):
    """Cascade whose gate and localizer run their exported trunks (graphs `gate` and `localizer`)."""

    def to_record(self) -> Record:
        return self.with_graph(CascadeHead.to_record(self))

    @classmethod
    def from_record(cls, record: Record, device: str | None = None, backbone: object = None) -> ExportedCascade:
        if backbone is not None:
            raise OddspotError("an exported cascade carries its own networks; do not pass a backbone")
        config, state, postprocess, subs = cls.read_record(record)
        graph = record.graph
        graphs = graph.get("graphs") if isinstance(graph, dict) else None
        if not isinstance(graphs, dict) or set(graphs) != set(GRAPHS):
            raise OddspotError(f"{record.source}/{MODEL_FILE}: graph.graphs must name {', '.join(GRAPHS)}; "
                               "export the model again")
        parts: dict[str, Any] = {}
        for part, part_cls in (("gate", ExportedPatchCore), ("localizer", LOCALIZERS[config.localizer])):
            sub = subs[part]  # the part's own exported record: its graph is its trunk
            sub.graph, sub.blobs = {**graph, "graphs": {"trunk": graphs[part]}}, record.blobs
            parts[part] = build_part(part, part_cls, sub, device=device)
        model = cls.__new__(cls)
        model.config = config
        model.set_fitted(parts["gate"], parts["localizer"], state, postprocess)
        model.graphs = {part: parts[part].graphs["trunk"] for part in PARTS}
        model.graph_meta, model.blobs = dict(graph), dict(record.blobs)
        return model
