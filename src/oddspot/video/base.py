"""What every torch video model adds to its head: the network's device, fitting on the training split
(head of each video: the model; held-out tail: the post-processor) and loading from the run contract.

A model folder is the run contract's (`oddspot.runs.contract`): `model.json` holds the config, the
fitted statistics (`state`, with `fit_info`: which videos and how many frames) and the
post-processor; `model.safetensors` holds the tensors. Loading checks every part and names the
file and field that is wrong. Scoring after the network is `video.head.VideoHead`'s, shared with
the exported runtime. This module never imports the models built on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeVar

import numpy as np
import torch
from torch import nn

from oddspot.configs import from_mapping
from oddspot.data.avenue import Video
from oddspot.errors import OddspotError
from oddspot.progress import track
from oddspot.runs.contract import TENSORS_FILE, Record
from oddspot.runs.model import RunModel
from oddspot.video.head import VideoHead, split_holdout

V = TypeVar("V", bound="VideoDetector")


def load_module_tensors(module: nn.Module, tensors: dict[str, np.ndarray], prefix: str, record: Record) -> None:
    """Load `tensors` into `module` after checking names, shapes and dtypes against its own state."""
    where = f"{record.source}/{TENSORS_FILE}"
    own = module.state_dict()
    for name, target in own.items():
        if name not in tensors:
            raise OddspotError(f"{where}: tensor {prefix + name!r} missing; the model folder is incomplete, refit it")
        t = tensors[name]
        if tuple(t.shape) != tuple(target.shape):
            raise OddspotError(f"{where}: tensor {prefix + name!r} has shape {tuple(t.shape)}, expected "
                               f"{tuple(target.shape)} for this configuration; refit the model")
        if torch.from_numpy(np.zeros(0, t.dtype)).dtype != target.dtype:
            raise OddspotError(f"{where}: tensor {prefix + name!r} is {t.dtype}, expected {target.dtype}; refit the model")
        if name.endswith("running_var") and not (t >= 0).all():
            raise OddspotError(f"{where}: tensor {prefix + name!r} holds negative variances; refit the model")
    module.load_state_dict({name: torch.from_numpy(tensors[name].copy()) for name in own}, strict=True)


class VideoDetector(VideoHead, RunModel):
    """Base of the frame and motion models: `fit(videos)`, `predict(videos)`, `save`, `load`.

    Subclasses implement what `VideoHead` asks for, plus `_fit_model(segments)` and optionally
    `_fit_components(segments)`.
    """

    def __init__(self, config: Any = None, *, device: str | torch.device = "cpu", **options: Any) -> None:
        if config is not None and options:
            raise OddspotError(f"pass either a {self.config_class.__name__} or keyword options, not both")
        if config is None:
            config = from_mapping(self.config_class, options, f"{self.kind} options")
        elif not isinstance(config, self.config_class):
            raise OddspotError(f"{type(self).__name__} takes a {self.config_class.__name__}, not {type(config).__name__}")
        self.init_head(config)
        self.device = torch.device(device)

    def fit(self: V, videos: Sequence[Video]) -> V:
        """Fit on normal training videos: the head of each trains the model, the tail fits the post-processor."""
        if isinstance(videos, Video):
            raise OddspotError("fit takes a list of videos; wrap a single video in a list")
        if not videos:
            raise OddspotError("no training videos; fit needs at least one normal video")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            return self._fit(videos)

    def _fit(self: V, videos: Sequence[Video]) -> V:
        heads, tails = [], []
        for v in videos:
            frames = v.frames(self.size)
            if frames.shape[0] < 4:
                raise OddspotError(f"{v.path}: only {frames.shape[0]} frames; training videos need at least 4")
            cut = split_holdout(frames.shape[0], self.config.holdout_fraction)
            heads.append(np.asarray(frames[:cut]))
            tails.append(np.asarray(frames[cut:]))
        self._fit_model(heads)
        self._fit_components(tails)
        raw = [self._score_frames(t)[0] for t in track(tails, "scoring held-out training frames")]
        self.post.fit(raw)
        self.fit_info = {
            "train_videos": [v.video_id for v in videos],
            "train_video_frames": {v.video_id: int(h.shape[0] + t.shape[0]) for v, h, t in zip(videos, heads, tails)},
            "fit_frames": int(sum(h.shape[0] for h in heads)),
            "holdout_frames": int(sum(t.shape[0] for t in tails)),
        }
        return self

    def _fit_model(self, segments: list[np.ndarray]) -> None:
        raise NotImplementedError

    def _fit_components(self, segments: list[np.ndarray]) -> None:
        """Fit per-component statistics on held-out training frames (default: nothing)."""

    @classmethod
    def from_record(cls: type[V], record: Record, device: str | torch.device = "cpu") -> V:
        """Rebuild a fitted model from a checked record (`load` / `oddspot.runs.registry.load_model`)."""
        model = cls(cls.read_config(record), device=device)
        model.load_fitted(record)
        return model


__all__ = ["VideoDetector", "load_module_tensors"]
