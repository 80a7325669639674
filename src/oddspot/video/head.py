"""What every video model shares after its network (numpy; no torch): the post-processor, `predict`
over whole videos, and the model's record (config, fitted state, post-processor, tensors).

`VideoHead.predict` scores frames with `_score_frames`, which each kind's head implements from
the outputs of its network; the network itself is the subclass's: `video.base.VideoDetector`
runs it in torch (and fits), `oddspot.runtime.video` runs the exported graph on OpenVINO or ONNX
Runtime. Everything after the network is this one code, so both give the same answers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from typing import Any, ClassVar

import numpy as np

from oddspot.configs import check_range, from_mapping
from oddspot.data.avenue import Size, Video
from oddspot.errors import OddspotError
from oddspot.runs.contract import MODEL_FILE, TENSORS_FILE, Record, to_numpy
from oddspot.runs.prediction import Prediction, finite_scores
from oddspot.video.postprocess import MAX_SIGMA, NORMALIZATIONS, PROTOCOLS, ScorePostprocessor, check_power, frame_power

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


class VideoHead:
    """Scores whole videos from `_score_frames` and saves the fitted parts; the network is the subclass's.

    Subclasses set `kind` and `config_class` (a dataclass with `size`, `seed`, `sigma`,
    `normalization`, `threshold_quantile` and `holdout_fraction`), and implement `fitted`,
    `_score_frames(frames) -> (scores, maps | None)`, `_tensors()`, `_load_tensors(record)`, and
    optionally `_state` and `_load_state`.
    """

    task: ClassVar[str] = "video"
    kind: ClassVar[str] = "base"
    config_class: ClassVar[type]

    config: Any
    post: ScorePostprocessor
    fit_info: dict[str, Any]

    def init_head(self, config: Any) -> None:
        """Set the config and an unfitted post-processor of its settings."""
        self.config = config
        self.post = ScorePostprocessor(sigma=config.sigma, normalization=config.normalization,
                                       threshold_quantile=config.threshold_quantile)
        self.fit_info = {}

    @property
    def size(self) -> Size:
        """(height, width) the model works at; every frame is resized to it."""
        return tuple(self.config.size)  # type: ignore[return-value]

    @property
    def fitted(self) -> bool:
        raise NotImplementedError

    def _score_frames(self, frames: np.ndarray, with_maps: bool = False) -> tuple[np.ndarray, np.ndarray | None]:
        raise NotImplementedError

    def tta_override(self, views: Sequence[str] | None) -> tuple[str, ...] | None:
        """The test-time augmentation views to average at predict instead of the model's own scoring,
        or None to keep it (also when `views` are the ones it was fitted with). Models that take none
        raise a one-line error saying why."""
        if views is None:
            return None
        raise OddspotError(f"--tta does not apply to the {self.kind} model; use --tta model")

    def _score_views(self, frames: np.ndarray, with_maps: bool, views: tuple[str, ...] | None
                     ) -> tuple[np.ndarray, np.ndarray | None]:
        """`_score_frames`, with the maps averaged over `views` when given (models that support TTA)."""
        return self._score_frames(frames, with_maps=with_maps)

    def predict(self, videos: Sequence[Video], with_maps: bool = False, protocol: str = "trained",
                tta: Sequence[str] | None = None, power: float | None = None) -> list[Prediction]:
        """One `Prediction` per video: raw frame `scores`, post-processed `normalized` scores, `decisions`
        (normalized >= the stored threshold; None without one or under the legacy protocol), `maps`
        (one H x W map per frame) when `with_maps`, and `name` = the video's id.

        `protocol="legacy_minmax_per_video"` rescales each video by its own min and max (test
        statistics; offered only to reproduce papers that report it).
        Studies on a fitted model: `tta` (view names, `video.tta.VIEWS`) averages the model's maps over
        those views instead of the views it was fitted with; `power` raises each raw frame score to
        that power (`postprocess.frame_power`) before smoothing and normalization. Either one, when it
        changes the scores, withholds the decisions: the threshold was fitted on the model's own scores.
        """
        if isinstance(videos, Video):
            raise OddspotError("predict takes a list of videos; wrap a single video in a list")
        if protocol not in PROTOCOLS:
            raise OddspotError(f"protocol {protocol!r} unknown; use one of {', '.join(PROTOCOLS)}")
        if not self.fitted:
            raise OddspotError(f"the {self.kind} model is not fitted; fit it on training videos or load a saved one")
        views = self.tta_override(tta)
        gamma = 1.0 if power is None else check_power(power)
        decide = views is None and gamma == 1.0
        out = []
        for video in videos:
            raw, maps = self._score_views(np.asarray(video.frames(self.size)), with_maps, views)
            raw = frame_power(finite_scores(raw, f"video {video.video_id}, frame"), gamma)
            normalized = finite_scores(self.post(finite_scores(raw, f"video {video.video_id}, frame"), protocol=protocol),
                                       f"video {video.video_id}, frame")
            out.append(Prediction(scores=raw, maps=None if maps is None else list(maps), normalized=normalized,
                                  decisions=self.post.decide(normalized, protocol) if decide else None,
                                  name=video.video_id))
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
    def read_config(cls, record: Record) -> Any:
        """The config of a saved model, read strictly (every field present, types and ranges checked)."""
        return from_mapping(cls.config_class, record.config, f"{record.source}/{MODEL_FILE}: config", complete=True)

    def load_fitted(self, record: Record) -> None:
        """Install the post-processor, fitted state and tensors of a checked record (after `init_head`)."""
        where = f"{record.source}/{MODEL_FILE}"
        config = self.config
        self.post = ScorePostprocessor.from_dict(record.postprocess, f"{where}: postprocess")
        if (self.post.sigma, self.post.normalization) != (config.sigma, config.normalization):
            raise OddspotError(f"{where}: postprocess (sigma {self.post.sigma}, {self.post.normalization}) disagrees "
                               f"with config (sigma {config.sigma}, {config.normalization}); refit the model")
        state = dict(record.state)
        fit_info = state.pop("fit_info", {})
        if not isinstance(fit_info, dict):
            raise OddspotError(f"{where}: state.fit_info must be an object; refit the model")
        self.fit_info = fit_info
        self._load_state(state, f"{where}: state")
        self._load_tensors(record)


__all__ = ["MAX_BATCH", "MAX_SIDE", "MAX_STEP", "VideoHead", "check_common", "check_tensor_names", "split_holdout"]
