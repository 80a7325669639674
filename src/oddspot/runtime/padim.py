"""An exported PaDiM: the trunk on OpenVINO or ONNX Runtime, everything else `PaDiMHead`'s (no torch)."""

from __future__ import annotations

import numpy as np

from oddspot.detectors.padim_head import PaDiMHead
from oddspot.errors import OddspotError
from oddspot.imaging import resize_image
from oddspot.runs.contract import MODEL_FILE, Record
from oddspot.runtime.exported import ExportedModel

GRAPHS = ("trunk",)


class ExportedPaDiM(ExportedModel, PaDiMHead):
    """PaDiM whose features at the kept channels come from the exported trunk graph (input: 1 x S x S x 3 pixels 0..255)."""

    def patch_features(self, batch: list[np.ndarray]) -> np.ndarray:
        engine = self.graphs["trunk"].engine
        size = self.config.image_size
        return np.concatenate([engine(resize_image(image, size)[None])[0] for image in batch])

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
        shape = model.graphs["trunk"].input_shape
        if shape != (1, config.image_size, config.image_size, 3):
            raise OddspotError(f"{record.source}/{MODEL_FILE}: the trunk graph takes {list(shape)}, but config.image_size "
                               f"is {config.image_size}; export the model again")
        return model
