"""An exported PatchCore: the trunk on OpenVINO or ONNX Runtime, everything else `PatchCoreHead`'s (no torch)."""

from __future__ import annotations

import numpy as np

from oddspot.detectors.patchcore_head import PatchCoreHead
from oddspot.errors import OddspotError
from oddspot.runs.contract import Record
from oddspot.runtime.exported import ExportedModel

GRAPHS = ("trunk",)


class ExportedPatchCore(ExportedModel, PatchCoreHead):
    """PatchCore whose patch features come from the exported trunk graph (input: 1 x S x S x 3 pixels 0..255)."""

    def patch_features(self, batch: list[np.ndarray]) -> np.ndarray:
        return self.image_trunk("trunk", batch, self.config.image_size)

    def to_record(self) -> Record:
        return self.with_graph(PatchCoreHead.to_record(self))

    @classmethod
    def from_record(cls, record: Record, device: str | None = None, backbone: object = None) -> ExportedPatchCore:
        if backbone is not None:
            raise OddspotError("an exported PatchCore carries its own network; do not pass a backbone")
        config, bank, state, postprocess = cls.read_record(record)
        model = cls.__new__(cls)
        model.config = config
        model.set_fitted(bank, state, postprocess)
        model.attach(record, GRAPHS, device)
        model.check_image_input(record, "trunk", config.image_size)
        return model
