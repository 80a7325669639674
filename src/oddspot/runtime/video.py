"""Exported video models: the network on OpenVINO or ONNX Runtime, everything else the heads' (no torch).

- `ExportedMotionDetector`: graph `trunk` (1 x H x W x 3 temporal stack -> 1 x h x w x C deep
  features), run once per frame; flow, rows, search and maps are `MotionHead`'s.
- `ExportedFrameAutoencoder`: graph `network` (1 x H x W x 3 frame -> 1 x K x H x W error maps),
  run once per frame; scores are `AutoencoderHead`'s. The folder keeps the run's decoder (and
  scratch encoder) tensors as the run had them, so a saved copy is the same model; the graph
  holds the weights that run.
"""

from __future__ import annotations

import numpy as np

from oddspot.errors import OddspotError
from oddspot.runs.contract import MODEL_FILE, TENSORS_FILE, Record
from oddspot.runtime.exported import ExportedModel
from oddspot.video.autoencoder_head import AutoencoderHead
from oddspot.video.motion_head import MotionHead


def _probe(model: ExportedModel, record: Record, name: str, size: tuple[int, int]) -> np.ndarray:
    """The graph `name`'s output for a blank input, after checking that it takes one frame at `size`."""
    where = f"{record.source}/{MODEL_FILE}"
    shape = model.graphs[name].input_shape
    if shape != (1, *size, 3):
        raise OddspotError(f"{where}: the {name} graph takes {list(shape)}, but config.size is {list(size)}; "
                           "export the model again")
    return model.graphs[name].engine(np.zeros(shape, np.float32))[0]


def _frames_at(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if tuple(frames.shape[1:]) != (*size, 3):
        raise OddspotError(f"frames of shape {list(frames.shape[1:])}: an exported video model takes frames at its size "
                           f"{list(size)} x 3; read videos with video.frames(model.size)")
    return frames


class ExportedMotionDetector(ExportedModel, MotionHead):
    """The motion-aware detector whose deep features come from the exported `trunk` graph."""

    _channels: int

    def deep_features(self, stacks: np.ndarray) -> np.ndarray:
        engine = self.graphs["trunk"].engine
        stacks = _frames_at(stacks, self.size)
        return np.concatenate([out[0] for out in engine.run_many([stack[None] for stack in stacks])])

    def _deep_channels(self) -> int:
        return self._channels

    def to_record(self) -> Record:
        return self.with_graph(MotionHead.to_record(self))

    @classmethod
    def from_record(cls, record: Record, device: str | None = None) -> ExportedMotionDetector:
        model = cls.__new__(cls)
        model.init_head(cls.read_config(record))
        model.init_bank()
        model.attach(record, ("trunk",), device)
        probe = _probe(model, record, "trunk", model.size)
        if probe.ndim != 4 or probe.shape[0] != 1:
            raise OddspotError(f"{record.source}/{MODEL_FILE}: the trunk graph returns {list(probe.shape)}, not "
                               "1 x h x w x C features; export the model again")
        model._channels = int(probe.shape[-1])
        model.load_fitted(record)
        return model


class ExportedFrameAutoencoder(ExportedModel, AutoencoderHead):
    """The frame autoencoder whose error maps come from the exported `network` graph."""

    weights: dict[str, np.ndarray]

    def component_maps(self, frames: np.ndarray) -> dict[str, np.ndarray]:
        engine = self.graphs["network"].engine
        frames = _frames_at(frames, self.size)
        maps = [out[0] for out in engine.run_many([frame[None] for frame in frames])]
        stacked = np.concatenate(maps) if maps else np.zeros((0, len(self.components), *self.size), np.float32)
        return {c: np.ascontiguousarray(stacked[:, i]) for i, c in enumerate(self.components)}

    def _tensors(self) -> dict[str, np.ndarray]:
        return self.weights

    def _load_tensors(self, record: Record) -> None:
        """Keep the run's network tensors: `decoder.*`, and `encoder.*` for a scratch encoder (nothing else)."""
        where = f"{record.source}/{TENSORS_FILE}"
        prefixes = ("decoder", "encoder") if self.config.encoder == "scratch" else ("decoder",)
        for name in sorted(record.tensors):
            if name.split(".")[0] not in prefixes:
                raise OddspotError(f"{where}: unexpected tensor {name!r} for an autoencoder of this configuration; "
                                   "export the model again")
        for prefix in prefixes:
            if not record.prefixed(prefix):
                raise OddspotError(f"{where}: no {prefix} tensors; the model folder is incomplete, export the model again")
        self.weights = dict(record.tensors)

    def to_record(self) -> Record:
        return self.with_graph(AutoencoderHead.to_record(self))

    @classmethod
    def from_record(cls, record: Record, device: str | None = None) -> ExportedFrameAutoencoder:
        model = cls.__new__(cls)
        model.init_head(cls.read_config(record))
        model.transforms = {}
        model.attach(record, ("network",), device)
        probe = _probe(model, record, "network", model.size)
        expected = [1, len(model.components), *model.size]
        if list(probe.shape) != expected:
            raise OddspotError(f"{record.source}/{MODEL_FILE}: the network graph returns {list(probe.shape)}, expected "
                               f"{expected} (one map per score component); export the model again")
        model.load_fitted(record)
        return model


__all__ = ["ExportedFrameAutoencoder", "ExportedMotionDetector"]
