"""What every video detector shares: the training split into fit and held-out parts, post-processing,
scoring a whole video, and saving to / loading from a model folder (JSON + safetensors, no pickle)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from oddspot import __version__
from oddspot.data.avenue import Size, Video
from oddspot.errors import OddspotError
from oddspot.files import atomic_write_bytes, write_json
from oddspot.progress import track
from oddspot.video.postprocess import ScorePostprocessor

FORMAT_VERSION = 1


@dataclass
class VideoScores:
    """Scores of one video: `raw` per frame, `scores` after smoothing and normalization, optional `maps`."""

    video_id: str
    raw: np.ndarray
    scores: np.ndarray
    maps: np.ndarray | None = None


def split_holdout(num_frames: int, fraction: float) -> int:
    """Index where the held-out tail of a training video starts (the tail is `fraction` of it)."""
    if not 0.0 < fraction < 1.0:
        raise OddspotError(f"holdout fraction {fraction} out of range; use a value in (0, 1)")
    return max(1, min(num_frames - 1, int(round(num_frames * (1.0 - fraction)))))


class VideoDetector:
    """Base of the frame and motion detectors.

    Subclasses set `kind`, hold a `config` dataclass with `size`, `seed`, `sigma`,
    `normalization` and `holdout_fraction`, and implement `_fit_model(segments)`,
    `_score_frames(frames) -> (scores, maps | None)`, `_tensors()` and `_load_tensors(tensors)`.
    """

    kind = "base"

    def __init__(self, config) -> None:
        self.config = config
        self.post = ScorePostprocessor(sigma=config.sigma, normalization=config.normalization)
        self.fit_info: dict = {}

    @property
    def size(self) -> Size:
        return tuple(self.config.size)  # type: ignore[return-value]

    def fit(self, videos: Sequence[Video]) -> VideoDetector:
        """Fit on normal training videos: the head of each trains the model, the tail fits the statistics."""
        if not videos:
            raise OddspotError("no training videos; fit needs at least one normal video")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(self.config.seed)
            return self._fit(videos)

    def _fit(self, videos: Sequence[Video]) -> VideoDetector:
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

    def score_video(self, video: Video, with_maps: bool = False, protocol: str = "trained") -> VideoScores:
        """Score every frame of `video`: raw scores, post-processed scores and optionally maps."""
        frames = video.frames(self.size)
        raw, maps = self._score_frames(np.asarray(frames), with_maps=with_maps)
        return VideoScores(video.video_id, raw, self.post(raw, protocol=protocol), maps)

    def _tensors(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def _load_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        raise NotImplementedError

    def _state(self) -> dict:
        """Fitted statistics beyond the post-processor, as JSON (default: none)."""
        return {}

    def _load_state(self, state: dict) -> None:
        """Restore what `_state` returned."""

    def save(self, directory: str | Path) -> Path:
        """Write `model.json` (config, fitted statistics, versions) and `weights.safetensors`."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "format_version": FORMAT_VERSION,
            "oddspot_version": __version__,
            "kind": self.kind,
            "config": asdict(self.config),
            "postprocess": self.post.to_dict(),
            "state": self._state(),
            "fit_info": self.fit_info,
        }
        tensors = {k: v.detach().cpu().contiguous() for k, v in self._tensors().items()}
        atomic_write_bytes(directory / "weights.safetensors", safetensors_bytes(tensors))
        write_json(directory / "model.json", meta)
        return directory


def load_detector(directory: str | Path) -> VideoDetector:
    """Load a detector saved by `VideoDetector.save` (never unpickles)."""
    from oddspot.video.autoencoder import AutoencoderConfig, FrameAutoencoder
    from oddspot.video.motion import MotionConfig, MotionDetector

    directory = Path(directory)
    meta_path = directory / "model.json"
    if not meta_path.exists():
        raise OddspotError(f"{meta_path}: not found; pass a folder written by `oddspot video fit`")
    try:
        meta = json.loads(meta_path.read_text())
    except ValueError as exc:
        raise OddspotError(f"{meta_path}: not valid JSON ({exc}); refit the model") from None
    if meta.get("format_version") != FORMAT_VERSION:
        raise OddspotError(f"{meta_path}: format version {meta.get('format_version')} unsupported (expected {FORMAT_VERSION}); refit the model")
    kinds = {FrameAutoencoder.kind: (FrameAutoencoder, AutoencoderConfig), MotionDetector.kind: (MotionDetector, MotionConfig)}
    if meta.get("kind") not in kinds:
        raise OddspotError(f"{meta_path}: unknown detector kind {meta.get('kind')!r}; expected one of {', '.join(kinds)}")
    cls, config_cls = kinds[meta["kind"]]
    config = config_cls.from_dict(meta["config"])
    det = cls(config)
    det.post = ScorePostprocessor.from_dict(meta["postprocess"])
    det.fit_info = meta.get("fit_info", {})
    det._load_state(meta.get("state", {}))
    weights = directory / "weights.safetensors"
    if not weights.exists():
        raise OddspotError(f"{weights}: not found; the model folder is incomplete, refit the model")
    det._load_tensors(load_file(str(weights)))
    return det
