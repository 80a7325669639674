"""An exported road model: DeepLabV3+ on OpenVINO or ONNX Runtime, everything else `RoadHead`'s (no torch).

The graph `network` takes 1 x h x w x 3 pixels (0..255) at the network's input size and returns
the logits at that size and the decoder features of the Mahalanobis and HEAT scores. An image of another
size is resized to it (antialiased bilinear, in numpy) and its maps come back at its own size, as
the torch model does for a model with `train.eval_size`. A model without one runs every image at
its own size in torch; its graph takes the training images' size, so both agree on images of
that size, and the exported model scores other sizes at the training scale.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from oddspot.errors import OddspotError
from oddspot.imaging import resize_pixels
from oddspot.road.config import feature_channels
from oddspot.road.head import FittedScores, RoadHead
from oddspot.runs.contract import MODEL_FILE, Record
from oddspot.runtime.exported import ExportedModel

GRAPHS = ("network",)


class ExportedRoadModel(ExportedModel, RoadHead):
    """A road model whose logits and features come from the exported network graph."""

    input_size: tuple[int, int]
    _scores: FittedScores
    _network: dict[str, np.ndarray]
    _where: str

    def network_outputs(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        h, w = self.input_size
        try:
            outputs = self.graphs["network"].engine(resize_pixels(image, (h, w))[None])
        except Exception as exc:  # a graph whose input is not what model.json says fails in the runtime's own types
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise OddspotError(f"{self._where}: the network graph fails on a [1, {h}, {w}, 3] input ({first:.200}); "
                               "export the model again") from None
        if len(outputs) != 2:
            raise OddspotError(f"{self._where}: the network graph gives {len(outputs)} outputs, not logits and features; "
                               "export the model again")
        logits, features = outputs
        k, d = self.config.model.num_classes, feature_channels(self.config.model, self.config.scores.features)
        if logits.shape != (1, k, h, w) or features.ndim != 4 or features.shape[:2] != (1, d):
            raise OddspotError(f"{self._where}: the network graph gives logits {list(logits.shape)} and features "
                               f"{list(features.shape)}, not [1, {k}, {h}, {w}] and [1, {d}, ...]; export the model again")
        return logits[0], features[0]

    def fitted_scores(self) -> FittedScores:
        return self._scores

    def network_tensors(self) -> dict[str, np.ndarray]:
        return self._network

    def to_record(self) -> Record:
        return self.with_graph(RoadHead.to_record(self))

    @classmethod
    def from_record(cls, record: Record, device: str | None = None, **kwargs: Any) -> ExportedRoadModel:
        if kwargs:
            raise OddspotError(f"ExportedRoadModel.load: unknown option(s) {', '.join(sorted(kwargs))}")
        config, scores, image_rule, state = cls.read_record(record)
        model = cls.__new__(cls)
        model.config, model._scores, model.image_rule, model.state = config, scores, image_rule, state
        model._network = record.prefixed("network")  # the torch weights, unused here: kept for a faithful copy
        model._where = f"{record.source}/{MODEL_FILE}"
        model.attach(record, GRAPHS, device)
        shape = model.graphs["network"].input_shape
        size = config.train.eval_size
        if len(shape) != 4 or shape[3] != 3 or min(shape[1:3]) < 8 or (size is not None and tuple(shape[1:3]) != tuple(size)):
            want = f"[1, {size[0]}, {size[1]}, 3] (config.train.eval_size)" if size is not None else "[1, h, w, 3]"
            raise OddspotError(f"{model._where}: the network graph takes {list(shape)}, not {want}; export the model again")
        model.input_size = (int(shape[1]), int(shape[2]))
        return model
