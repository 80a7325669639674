"""What every video model shares: the training split into fit and held-out parts, the post-processor
(smoothing, normalization, decision threshold), `predict` over whole videos, and the run contract.

A model folder is the run contract's (`oddspot.runs.contract`): `model.json` holds the config, the
fitted statistics (`state`, with `fit_info`: which videos and how many frames) and the
post-processor; `model.safetensors` holds the tensors. Loading checks every part and names the
file and field that is wrong. This module never imports the models built on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, ClassVar, TypeVar

import numpy as np
import torch
from torch import nn

from oddspot.configs import check_range, from_mapping
from oddspot.data.avenue import Size, Video
from oddspot.errors import OddspotError
from oddspot.progress import track
from oddspot.runs.contract import MODEL_FILE, TENSORS_FILE, Record, to_numpy
from oddspot.runs.model import RunModel
from oddspot.runs.prediction import Prediction, finite_scores
from oddspot.video.postprocess import MAX_SIGMA, NORMALIZATIONS, PROTOCOLS, ScorePostprocessor

V = TypeVar("V", bound="VideoDetector")
MAX_SIDE = 4096
MAX_BATCH = 4096
MAX_STEP = 10_000


def split_holdout(num_frames: int, fraction: float) -> int:
    """Index where the held-out tail of a training video starts (the tail is `fraction` of it)."""
    if not 0.0 < fraction < 1.0:
        raise OddspotError(f"holdout fraction {fraction} out of range; use a value in (0, 1)")
    return max(1, min(num_frames - 1, int(round(num_frames * (1.0 - fraction)))))


def check_common(config: Any) -> None:
    """Range checks of the options every video model's config has (size, seed, batches, post-processing)."""
    if len(config.size) != 2:
        raise OddspotError(f"size {config.size} must be (height, width)")
    for side in config.size:
        check_range("size", side, 8, MAX_SIDE)
    check_range("seed", config.seed, 0, 2**32 - 1)
    check_range("batch_size", config.batch_size, 1, MAX_BATCH)
    check_range("train_step", config.train_step, 1, MAX_STEP)
    check_range("sigma", config.sigma, 0.0, MAX_SIGMA)
    check_range("holdout_fraction", config.holdout_fraction, 0.0, 1.0, low_open=True, high_open=True)
    if config.threshold_quantile is not None:
        check_range("threshold_quantile", config.threshold_quantile, 0.0, 1.0, low_open=True, high_open=True)
    if config.normalization not in NORMALIZATIONS:
        raise OddspotError(f"normalization {config.normalization!r} unknown; use one of {', '.join(NORMALIZATIONS)}")


def check_tensor_names(record: Record, expected: set[str]) -> None:
    """Every tensor in `expected` is in the record and nothing else is (one-line error naming the file)."""
    where = f"{record.source}/{TENSORS_FILE}"
    missing = sorted(expected - set(record.tensors))
    if missing:
        raise OddspotError(f"{where}: tensor {missing[0]!r} missing; the model folder is incomplete, refit it")
    extra = sorted(set(record.tensors) - expected)
    if extra:
        raise OddspotError(f"{where}: unexpected tensor {extra[0]!r} for a {record.kind} model of this configuration; refit it")


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


class VideoDetector(RunModel):
    """Base of the frame and motion models: `fit(videos)`, `predict(videos)`, `save`, `load`.

    Subclasses set `kind` and `config_class` (a dataclass with `size`, `seed`, `sigma`,
    `normalization`, `threshold_quantile` and `holdout_fraction`), and implement `fitted`,
    `_fit_model(segments)`, `_score_frames(frames) -> (scores, maps | None)`, `_tensors()`,
    `_load_tensors(record)`, and optionally `_fit_components`, `_state` and `_load_state`.
    """

    task: ClassVar[str] = "video"
    kind: ClassVar[str] = "base"
    config_class: ClassVar[type]

    def __init__(self, config: Any = None, *, device: str | torch.device = "cpu", **options: Any) -> None:
        if config is not None and options:
            raise OddspotError(f"pass either a {self.config_class.__name__} or keyword options, not both")
        if config is None:
            config = from_mapping(self.config_class, options, f"{self.kind} options")
        elif not isinstance(config, self.config_class):
            raise OddspotError(f"{type(self).__name__} takes a {self.config_class.__name__}, not {type(config).__name__}")
        self.config = config
        self.device = torch.device(device)
        self.post = ScorePostprocessor(sigma=config.sigma, normalization=config.normalization,
                                       threshold_quantile=config.threshold_quantile)
        self.fit_info: dict[str, Any] = {}

    @property
    def size(self) -> Size:
        """(height, width) the model works at; every frame is resized to it."""
        return tuple(self.config.size)  # type: ignore[return-value]

    @property
    def fitted(self) -> bool:
        raise NotImplementedError

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
            "fit_frames": int(sum(h.shape[0] for h in heads)),
            "holdout_frames": int(sum(t.shape[0] for t in tails)),
        }
        return self

    def _fit_model(self, segments: list[np.ndarray]) -> None:
        raise NotImplementedError

    def _fit_components(self, segments: list[np.ndarray]) -> None:
        """Fit per-component statistics on held-out training frames (default: nothing)."""

    def _score_frames(self, frames: np.ndarray, with_maps: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def predict(self, videos: Sequence[Video], with_maps: bool = False, protocol: str = "trained") -> list[Prediction]:
        """One `Prediction` per video: raw frame `scores`, post-processed `normalized` scores, `decisions`
        (normalized >= the stored threshold; None without one or under the legacy protocol), `maps`
        (one H x W map per frame) when `with_maps`, and `name` = the video's id.

        `protocol="legacy_minmax_per_video"` rescales each video by its own min and max (test
        statistics; offered only to reproduce papers that report it).
        """
        if isinstance(videos, Video):
            raise OddspotError("predict takes a list of videos; wrap a single video in a list")
        if protocol not in PROTOCOLS:
            raise OddspotError(f"protocol {protocol!r} unknown; use one of {', '.join(PROTOCOLS)}")
        if not self.fitted:
            raise OddspotError(f"the {self.kind} model is not fitted; fit it on training videos or load a saved one")
        out = []
        for video in videos:
            raw, maps = self._score_frames(np.asarray(video.frames(self.size)), with_maps=with_maps)
            normalized = finite_scores(self.post(finite_scores(raw, f"video {video.video_id}, frame"), protocol=protocol),
                                       f"video {video.video_id}, frame")
            out.append(Prediction(scores=raw, maps=None if maps is None else list(maps), normalized=normalized,
                                  decisions=self.post.decide(normalized, protocol), name=video.video_id))
        return out

    def _tensors(self) -> dict[str, Any]:
        raise NotImplementedError

    def _load_tensors(self, record: Record) -> None:
        raise NotImplementedError

    def _state(self) -> dict[str, Any]:
        """Fitted statistics beyond the post-processor, as JSON (default: none)."""
        return {}

    def _load_state(self, state: dict[str, Any], source: str) -> None:
        """Restore what `_state` returned; `source` starts every error message."""
        if state:
            raise OddspotError(f"{source}: unexpected field {sorted(state)[0]}; refit the model")

    def to_record(self) -> Record:
        """Config, fitted state, post-processor and tensors, for `save` (run contract)."""
        if not self.fitted:
            raise OddspotError(f"the {self.kind} model is not fitted; fit it before saving")
        state = {**self._state(), "fit_info": self.fit_info}
        return Record(self.task, self.kind, asdict(self.config), state, self.post.to_dict(), to_numpy(self._tensors()))

    @classmethod
    def from_record(cls: type[V], record: Record, device: str | torch.device = "cpu") -> V:
        """Rebuild a fitted model from a checked record (`load` / `oddspot.runs.registry.load_model`)."""
        where = f"{record.source}/{MODEL_FILE}"
        config = from_mapping(cls.config_class, record.config, f"{where}: config", complete=True)
        model = cls(config, device=device)
        model.post = ScorePostprocessor.from_dict(record.postprocess, f"{where}: postprocess")
        if (model.post.sigma, model.post.normalization) != (config.sigma, config.normalization):
            raise OddspotError(f"{where}: postprocess (sigma {model.post.sigma}, {model.post.normalization}) disagrees "
                               f"with config (sigma {config.sigma}, {config.normalization}); refit the model")
        state = dict(record.state)
        fit_info = state.pop("fit_info", {})
        if not isinstance(fit_info, dict):
            raise OddspotError(f"{where}: state.fit_info must be an object; refit the model")
        model.fit_info = fit_info
        model._load_state(state, f"{where}: state")
        model._load_tensors(record)
        return model
