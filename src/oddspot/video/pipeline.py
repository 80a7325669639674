"""The video verbs as library functions, each writing its folder: fit a model on a dataset's training
videos, predict unlabeled videos, evaluate on labelled test videos.

- `fit(data, out, kind, options)`: the run folder (`model.json` + `model.safetensors`);
- `predict(run, frames, out)`: `scores.csv` (video,frame,path,score,normalized,anomalous),
  `errors.csv` (video,path,error: the videos that could not be read; header only when none) and,
  with `tta` or `power`, `settings.json` (protocol, TTA views, score power);
- `evaluate(run, data, out)`: the evaluation record of `oddspot.video.evaluate.write_evaluation`;
  `evaluate_runs(runs, data, out)`: one record per model and the table `models.csv`.

`tta` and `power` (predict and evaluate) are studies on a fitted model: see `study_settings`.

A video that cannot be read is reported through `warn` (and in errors.csv / metrics.json) and the
others are still processed.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from oddspot.configs import from_mapping
from oddspot.data.avenue import AviVideo, Video
from oddspot.data.image_io import max_pixels
from oddspot.errors import OddspotError
from oddspot.files import staged_folder, staged_output, write_json
from oddspot.records.evaluation import SCORES_FILE, write_csv
from oddspot.runs.prediction import Prediction
from oddspot.runs.registry import load_model, model_class
from oddspot.video.head import VideoHead
from oddspot.video.datasets import decode_videos, open_video_dataset, open_videos
from oddspot.video.postprocess import PROTOCOLS, check_power
from oddspot.video.tta import tta_by_name

ERRORS_FILE = "errors.csv"
SETTINGS_FILE = "settings.json"
MODELS_FILE = "models.csv"
TABLE_HEADER = ("model", "kind", "run", "tta", "power", "frames", "videos", "micro_auroc", "macro_auroc", "micro_ap",
                "macro_ap")
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
        for v in videos:
            declared = v.declared_frames() if isinstance(v, AviVideo) else None
            if declared is not None and declared != len(v):
                warn(f"warning: {v.path}: the header declares {declared} frames, {len(v)} decoded; using the {len(v)} decoded")
        model.fit(videos)
        model.fit_info["skipped_videos"] = skipped
        model.save(stage)
    return model


def study_settings(model: VideoHead, tta: str = "model", power: float | None = None) -> dict[str, Any]:
    """Check the predict/evaluate studies on a fitted model before any video is scored and say what they do:
    {'tta': name, 'tta_views': the views averaged, 'power': the frame-score exponent, 'views': the
    override passed to `predict` (None: the model's own), 'decisions': whether the stored threshold applies}."""
    views = model.tta_override(tta_by_name(tta))
    gamma = 1.0 if power is None else check_power(power)
    own = tuple(getattr(model.config, "tta", ("identity",)))
    return {"tta": tta, "tta_views": list(views if views is not None else own), "power": gamma, "views": views,
            "decisions": views is None and gamma == 1.0, "given": tta != "model" or power is not None}


def _predict_each(model: VideoHead, videos: list[Video], protocol: str, labelled: bool, warn: Warn,
                  study: dict[str, Any] | None = None) -> tuple[list[Prediction], list[Video], list[dict]]:
    """Predict video by video (frames released after each); a video that fails is skipped and reported."""
    views, power = (study["views"], study["power"]) if study is not None else (None, None)
    done, kept, failed = [], [], []
    for v in videos:
        try:
            prediction = model.predict([v], protocol=protocol, tta=views, power=power)[0]
            if labelled:
                _ = v.labels  # after decoding: checked against the decoded frame count
            done.append(prediction)
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
            model: Any | None = None, tta: str = "model", power: float | None = None) -> dict[str, Any]:
    """Score unlabeled videos (see `oddspot.video.datasets.open_videos`) with the model in `run`.

    Writes `out/scores.csv`, `out/errors.csv` and, with `tta` or `power`, `out/settings.json`;
    returns counts (videos, frames, anomalous frames, errors) and the settings.
    `model`: an already loaded model (any runtime, `oddspot.export.load_for_inference`).
    `tta` and `power`: see `study_settings` (decisions are withheld when they change the scores).
    """
    _check(protocol)
    if model is None:
        model = load_model(run, task="video", device=device)
    study = study_settings(model, tta, power)
    videos, errors = open_videos(frames, cache_dir=cache_dir)
    for e in errors:
        warn(f"warning: skipped {e['path']}: {e['error']}")
    predictions, kept, failed = _predict_each(model, videos, protocol, labelled=False, warn=warn, study=study)
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
        if study["given"]:
            write_json(stage / SETTINGS_FILE, {"model": str(run), "kind": model.kind, "protocol": protocol,
                                               **_recorded(study)})
        if predictions:
            write_csv(stage / SCORES_FILE, PREDICT_HEADER, rows)
    if not predictions:
        raise OddspotError(f"{frames}: no video could be read; see {out / ERRORS_FILE}")
    flagged = None if any(p.decisions is None for p in predictions) else int(sum(p.decisions.sum() for p in predictions))
    return {"videos": len(predictions), "frames": len(rows), "anomalous_frames": flagged, "errors": len(errors),
            "threshold": model.post.threshold if protocol == "trained" and study["decisions"] else None,
            "kind": model.kind, **_recorded(study)}


def _recorded(study: dict[str, Any]) -> dict[str, Any]:
    """The study settings as written to the outputs when `--tta` or `--power` was given (without them the
    outputs are those of the model as fitted, the same as under --engine ray)."""
    if not study["given"]:
        return {}
    out = {k: study[k] for k in ("tta", "tta_views", "power")}
    if not study["decisions"]:
        out["decisions_withheld"] = "--tta or --power changed the scores the threshold was fitted on"
    return out


def _evaluate_model(model: VideoHead, run: str | Path, data: str | Path, videos: list[Video], out: Path, protocol: str,
                    skip_first: int, study: dict[str, Any], warn: Warn) -> dict[str, Any]:
    """Score `videos` with `model` and write its evaluation record into the folder `out`."""
    predictions, kept, skipped = _predict_each(model, videos, protocol, labelled=True, warn=warn, study=study)
    if not predictions:
        raise OddspotError(f"{data}: no test video could be read; see the warnings above")
    threshold = model.post.threshold if protocol == "trained" and study["decisions"] else None
    extra = {"model": str(run), "kind": model.kind, "protocol": protocol, **_recorded(study), "skipped_videos": skipped,
             "threshold_quantile": model.post.threshold_quantile, "max_pixels": max_pixels(),
             "runtime": getattr(model, "runtime", "torch")}
    from oddspot.video.evaluate import write_evaluation

    return write_evaluation(out, predictions, kept, skip_first=skip_first, threshold=threshold, extra=extra,
                            title=f"{model.kind}: frame scores (red: anomalous frames)",
                            note=None if study["decisions"] else extra["decisions_withheld"])


@staged_output("out", inputs=("run", "data", "labels", "cache_dir"))
def evaluate(run: str | Path, data: str | Path, out: str | Path, layout: str = "auto", labels: str | Path | None = None,
             skip_first: int = 0, protocol: str = "trained", cache_dir: Path | None = None, device: str = "cpu",
             warn: Warn = print, tta: str = "model", power: float | None = None, model: Any | None = None) -> dict[str, Any]:
    """Score the labelled test videos of `data` with the model in `run` and write the evaluation record to `out`.

    `tta` and `power`: see `study_settings`; recorded in metrics.json when given. `model`: an already
    loaded model (any runtime, `oddspot.export.load_for_inference`), else the torch model of `run`."""
    _check(protocol, skip_first)
    if model is None:
        model = load_model(run, task="video", device=device)
    study = study_settings(model, tta, power)
    videos = open_video_dataset(data, "test", layout=layout, labels=labels, cache_dir=cache_dir)
    return _evaluate_model(model, run, data, videos, Path(out), protocol, skip_first, study, warn)


def model_labels(runs: list[str | Path]) -> list[str]:
    """A folder name per run for the table and its record: the run folder's name, numbered when repeated."""
    names = [Path(r).resolve().name or "model" for r in runs]
    return [name if names.count(name) == 1 else f"{name}-{names[: i + 1].count(name)}" for i, name in enumerate(names)]


@staged_output("out", inputs=("runs", "data", "labels", "cache_dir"))
def evaluate_runs(runs: list[str | Path], data: str | Path, out: str | Path, layout: str = "auto",
                  labels: str | Path | None = None, skip_first: int = 0, protocol: str = "trained",
                  cache_dir: Path | None = None, device: str = "cpu", warn: Warn = print, tta: str = "model",
                  power: float | None = None, load: Callable[[str | Path], Any] | None = None) -> list[dict[str, Any]]:
    """Evaluate several models on the same test videos: a record per model in `out/<run name>/` and one
    table `out/models.csv` (model, kind, run, tta, power, frames, videos, micro/macro AUROC and AP).

    Every model is loaded (`load(run)`, default: the torch model) and its settings checked before
    any video is scored. Returns the table rows.
    """
    _check(protocol, skip_first)
    if not runs:
        raise OddspotError("no run folders to evaluate; pass at least one RUN")
    models = [load(r) if load is not None else load_model(r, task="video", device=device) for r in runs]
    studies = [study_settings(m, tta, power) for m in models]
    videos = open_video_dataset(data, "test", layout=layout, labels=labels, cache_dir=cache_dir)
    rows = []
    for name, run, model, study in zip(model_labels(runs), runs, models, studies):
        m = _evaluate_model(model, run, data, videos, Path(out) / name, protocol, skip_first, study, warn)
        rows.append({"model": name, "kind": model.kind, "run": str(run), "tta": tta, "power": study["power"],
                     "frames": m["frames"], "videos": len(m["per_video"]), "micro_auroc": m["micro_auroc"],
                     "macro_auroc": m["macro_auroc"], "micro_ap": m["ap"], "macro_ap": m["macro_ap"]})
    write_csv(Path(out) / MODELS_FILE, TABLE_HEADER, [[r[k] for k in TABLE_HEADER] for r in rows])
    return rows
