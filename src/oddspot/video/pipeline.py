"""The video verbs as library functions, each writing its folder: fit a model on a dataset's training
videos, predict unlabeled videos, evaluate on labelled test videos.

- `fit(data, out, kind, options)`: the run folder (`model.json` + `model.safetensors`);
- `predict(run, frames, out)`: `scores.csv` (video,frame,path,score,normalized,anomalous) and
  `errors.csv` (video,path,error: the videos that could not be read; header only when none);
- `evaluate(run, data, out)`: the evaluation record of `oddspot.video.evaluate.write_evaluation`.

A video that cannot be read is reported through `warn` (and in errors.csv / metrics.json) and the
others are still processed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from oddspot.configs import from_mapping
from oddspot.data.avenue import Video
from oddspot.data.image_io import max_pixels
from oddspot.errors import OddspotError
from oddspot.files import staged_folder, staged_output
from oddspot.records.evaluation import SCORES_FILE, write_csv
from oddspot.runs.prediction import Prediction
from oddspot.runs.registry import load_model, model_class
from oddspot.video.head import VideoHead
from oddspot.video.datasets import decode_videos, open_video_dataset, open_videos
from oddspot.video.postprocess import PROTOCOLS

ERRORS_FILE = "errors.csv"
PREDICT_HEADER = ("video", "frame", "path", "score", "normalized", "anomalous")
Warn = Callable[[str], None]


def _check(protocol: str, skip_first: int = 0) -> None:
    """Options checked before any video is scored."""
    if protocol not in PROTOCOLS:
        raise OddspotError(f"protocol {protocol!r} unknown; use one of {', '.join(PROTOCOLS)}")
    if skip_first < 0:
        raise OddspotError(f"skip_first {skip_first} is negative; use 0 to keep every frame")


def build(kind: str, options: dict[str, Any], source: str = "model options", device: str = "cpu") -> VideoHead:
    """A new, unfitted video model of `kind` from `options` (checked strictly; errors start with `source`)."""
    cls = model_class("video", kind)
    return cls(from_mapping(cls.config_class, options, source), device=device)


def fit(data: str | Path, out: str | Path, model: VideoHead, layout: str = "auto",
        cache_dir: Path | None = None, warn: Warn = print) -> VideoHead:
    """Fit `model` on the training videos of the dataset `data` and save it to `out` (replaced as a
    whole when the fit succeeds; a failed fit leaves it as it was)."""
    with staged_folder(out, inputs=(data, cache_dir)) as stage:
        videos, skipped = decode_videos(open_video_dataset(data, "train", layout=layout, cache_dir=cache_dir),
                                        model.size)
        for s in skipped:
            warn(f"warning: skipped training video {s['video']}: {s['error']}")
        if not videos:
            raise OddspotError(f"{data}: no training video could be read; see the warnings above")
        model.fit(videos)
        model.fit_info["skipped_videos"] = skipped
        model.save(stage)
    return model


def _predict_each(model: VideoHead, videos: list[Video], protocol: str, labelled: bool,
                  warn: Warn) -> tuple[list[Prediction], list[Video], list[dict]]:
    """Predict video by video (frames released after each); a video that fails is skipped and reported."""
    done, kept, failed = [], [], []
    for v in videos:
        try:
            if labelled:
                _ = v.labels
            done.append(model.predict([v], protocol=protocol)[0])
            kept.append(v)
        except OddspotError as exc:
            failed.append({"video": v.video_id, "path": str(v.path), "error": str(exc)})
            warn(f"warning: skipped video {v.video_id}: {exc}")
        finally:
            v.release()
    return done, kept, failed


def _frame_paths(video: Video, n: int) -> list[str]:
    files = getattr(video, "files", None)
    return [str(f) for f in files] if files is not None and len(files) == n else [str(video.path)] * n


def predict(run: str | Path, frames: str | Path, out: str | Path, protocol: str = "trained",
            cache_dir: Path | None = None, device: str | None = "cpu", warn: Warn = print,
            model: Any | None = None) -> dict[str, Any]:
    """Score unlabeled videos (see `oddspot.video.datasets.open_videos`) with the model in `run`.

    Writes `out/scores.csv` and `out/errors.csv`; returns counts (videos, frames, anomalous frames, errors).
    `model`: an already loaded model (any runtime, `oddspot.export.load_for_inference`).
    """
    _check(protocol)
    if model is None:
        model = load_model(run, task="video", device=device)
    videos, errors = open_videos(frames, cache_dir=cache_dir)
    for e in errors:
        warn(f"warning: skipped {e['path']}: {e['error']}")
    predictions, kept, failed = _predict_each(model, videos, protocol, labelled=False, warn=warn)
    errors += failed
    out = Path(out)
    rows = []
    for p, v in zip(predictions, kept):
        paths = _frame_paths(v, len(p.scores))
        for t in range(len(p.scores)):
            rows.append((p.name, t, paths[t], float(p.scores[t]), float(p.normalized[t]),
                         "" if p.decisions is None else int(bool(p.decisions[t]))))
    with staged_folder(out, inputs=(run, frames, cache_dir)) as stage:  # earlier outputs replaced whole
        write_csv(stage / ERRORS_FILE, ("video", "path", "error"), [(e["video"], e["path"], e["error"]) for e in errors])
        if predictions:
            write_csv(stage / SCORES_FILE, PREDICT_HEADER, rows)
    if not predictions:
        raise OddspotError(f"{frames}: no video could be read; see {out / ERRORS_FILE}")
    flagged = None if any(p.decisions is None for p in predictions) else int(sum(p.decisions.sum() for p in predictions))
    return {"videos": len(predictions), "frames": len(rows), "anomalous_frames": flagged, "errors": len(errors),
            "threshold": model.post.threshold if protocol == "trained" else None, "kind": model.kind}


@staged_output("out", inputs=("run", "data", "labels", "cache_dir"))
def evaluate(run: str | Path, data: str | Path, out: str | Path, layout: str = "auto", labels: str | Path | None = None,
             skip_first: int = 0, protocol: str = "trained", cache_dir: Path | None = None, device: str = "cpu",
             warn: Warn = print) -> dict[str, Any]:
    """Score the labelled test videos of `data` with the model in `run` and write the evaluation record to `out`."""
    _check(protocol, skip_first)
    model = load_model(run, task="video", device=device)
    videos = open_video_dataset(data, "test", layout=layout, labels=labels, cache_dir=cache_dir)
    predictions, kept, skipped = _predict_each(model, videos, protocol, labelled=True, warn=warn)
    if not predictions:
        raise OddspotError(f"{data}: no test video could be read; see the warnings above")
    threshold = model.post.threshold if protocol == "trained" else None
    extra = {"model": str(run), "kind": model.kind, "protocol": protocol, "skipped_videos": skipped,
             "threshold_quantile": model.post.threshold_quantile, "max_pixels": max_pixels()}
    from oddspot.video.evaluate import write_evaluation

    return write_evaluation(out, predictions, kept, skip_first=skip_first, threshold=threshold, extra=extra,
                            title=f"{model.kind}: frame scores (red: anomalous frames)")
