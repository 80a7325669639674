"""An exported PaDiM: the trunk on OpenVINO or ONNX Runtime, everything else `PaDiMHead`'s (no torch)."""

from __future__ import annotations

import numpy as np

from oddspot.detectors.padim_head import PaDiMHead
from oddspot.errors import OddspotError
from oddspot.runs.contract import Record
from oddspot.runtime.exported import ExportedModel

GRAPHS = ("trunk",)


class ExportedPaDiM(ExportedModel, PaDiMHead):
    """PaDiM whose features at the kept channels come from the exported trunk graph (input: 1 x S x S x 3 pixels 0..255)."""

    def patch_features(self, batch: list[np.ndarray]) -> np.ndarray:
        return self.image_trunk("trunk", batch, self.config.image_size)

    def to_record(self) -> Record:
        return self.with_graph(PaDiMHead.to_record(self))

    @classmethod
    def from_record(cls, record: Record, device: str | None = None, backbone: object = None) -> ExportedPaDiM:
        if backbone is not None:
            raise OddspotError("an exported PaDiM carries its own network; do not pass a backbone")
        config, mean, inv_cov, channels, state, postprocess = cls.read_record(record)
        model = cls.__new__(cls)
        model.config = config
        model.set_fitted(mean, inv_cov, channels, state, postprocess)
        model.attach(record, GRAPHS, device)
        model.check_image_input(record, "trunk", config.image_size)
        return model
