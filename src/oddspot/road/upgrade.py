"""Convert a road run written by oddspot 0.1 (format 1) to the run contract (format 2).

A 0.1 road run folder held:
  config.json                    format_version 1, kind "oddspot.road", model / train options, classes,
                                 class weights, best epoch, training data path
  model.safetensors              inference weights (unprefixed names)
  scores/scores.json             score options and per-score validation thresholds
  scores/sml.json                SML per-class mean / std (JSON lists) and pixel counts
  scores/mahalanobis.json        Mahalanobis options and class pixel counts
  scores/mahalanobis.safetensors class means and tied precision
  scores/fusion.json             fusion normalization and weights
  train_summary.json             what training reported
  history.json, state/           the training curve and resume state (kept as they are)

Every value is carried over exactly, so the converted model's maps are bit-identical to the old
one's. 0.1 had no image-level threshold: a converted model predicts image scores but no
normalized scores or decisions until it is fitted again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from oddspot.configs import from_mapping
from oddspot.errors import OddspotError
from oddspot.road.checkpoint import load_tensors, read_json
from oddspot.road.estimator import RoadConfig, RoadModel
from oddspot.runs.contract import Record

CONFIG_V1 = "config.json"
WEIGHTS_V1 = "model.safetensors"
SCORES_V1 = "scores"
SUMMARY_V1 = "train_summary.json"


def _read_v1(path: Path, score: str | None = None) -> dict[str, Any]:
    obj = read_json(path)
    if obj.get("format_version") != 1:
        raise OddspotError(f"{path}: format_version {obj.get('format_version')!r} is not oddspot 0.1's; cannot upgrade it")
    if score is not None and obj.get("score") != score:
        raise OddspotError(f"{path}: not the {score} statistics of a road run; cannot upgrade it")
    return obj


def _get(obj: dict[str, Any], key: str, path: Path) -> Any:
    if key not in obj:
        raise OddspotError(f"{path}: field {key} missing; the 0.1 run is damaged, retrain with `oddspot road fit`")
    return obj[key]


def record_from_v1(folder: Path) -> tuple[Record, list[Path]]:
    """The format-2 record of the 0.1 road run in `folder`, and the old files it replaces.

    Every old file is read completely here (the new model.safetensors overwrites the old one),
    and the record is loaded once as a `RoadModel` so that an upgrade never leaves a folder that
    cannot be loaded.
    """
    folder = Path(folder)
    cfg_path = folder / CONFIG_V1
    cfg = _read_v1(cfg_path)
    if cfg.get("kind") != "oddspot.road":
        raise OddspotError(f"{cfg_path}: kind {cfg.get('kind')!r} is not an oddspot 0.1 road run; cannot upgrade it")
    sdir = folder / SCORES_V1
    if not (sdir / "scores.json").exists():
        raise OddspotError(f"{folder}: scores/scores.json missing; the 0.1 run did not finish training, "
                           "retrain it with `oddspot road fit`")
    scores = _read_v1(sdir / "scores.json")
    sml = _read_v1(sdir / "sml.json", "sml")
    maha = _read_v1(sdir / "mahalanobis.json", "mahalanobis")
    fusion = _read_v1(sdir / "fusion.json", "fusion")
    weights = load_tensors(folder / WEIGHTS_V1)
    maha_t = load_tensors(sdir / "mahalanobis.safetensors")
    summary = read_json(folder / SUMMARY_V1) if (folder / SUMMARY_V1).exists() else {}

    model_opts = dict(_get(cfg, "model", cfg_path))
    if model_opts.pop("extra", {}) not in ({}, None):
        raise OddspotError(f"{cfg_path}: model.extra is not empty; this oddspot has no such option, retrain the model")
    config = from_mapping(RoadConfig, {"model": model_opts, "train": _get(cfg, "train", cfg_path),
                                       "scores": _get(scores, "config", sdir / "scores.json"), "score": "fusion"},
                          f"{cfg_path}")
    if "means" not in maha_t or "precision" not in maha_t:
        raise OddspotError(f"{sdir / 'mahalanobis.safetensors'}: means or precision missing; retrain the model")
    tensors: dict[str, np.ndarray] = {f"network.{k}": v.contiguous().numpy() for k, v in weights.items()}
    tensors["sml.mean"] = np.asarray(_get(sml, "mean", sdir / "sml.json"), np.float32)
    tensors["sml.std"] = np.asarray(_get(sml, "std", sdir / "sml.json"), np.float32)
    tensors["mahalanobis.means"] = maha_t["means"].contiguous().numpy()
    tensors["mahalanobis.precision"] = maha_t["precision"].contiguous().numpy()

    fpath = sdir / "fusion.json"
    state = {
        "data": cfg.get("data"),
        "classes": cfg.get("classes"),
        "class_weights": cfg.get("class_weights"),
        "best": cfg.get("best"),
        "training": {k: v for k, v in summary.items() if k not in ("run", "oddspot_version")},
        "sml": {"counts": _get(sml, "counts", sdir / "sml.json"),
                "fallback_classes": _get(sml, "fallback_classes", sdir / "sml.json")},
        "mahalanobis": {"counts": _get(maha, "counts", sdir / "mahalanobis.json"), "fitted_on": "training pixels"},
        "upgraded_from": {"oddspot_version": cfg.get("oddspot_version"), "format_version": 1},
    }
    postprocess = {
        "score": config.score,
        "thresholds": _get(scores, "thresholds", sdir / "scores.json"),
        "fusion": {"components": list(_get(fusion, "components", fpath)), "mean": _get(fusion, "mean", fpath),
                   "std": _get(fusion, "std", fpath), "weights": _get(fusion, "weights", fpath),
                   "weight_source": _get(fusion, "weight_source", fpath),
                   "n_fit_pixels": _get(fusion, "n_fit_pixels", fpath), "fitted_on": "validation pixels"},
        "image": None,
    }
    record = Record(RoadModel.task, RoadModel.kind, config.to_dict(), state, postprocess, tensors, source=str(folder))
    RoadModel.from_record(record, device="cpu")
    return record, [cfg_path, sdir, folder / SUMMARY_V1]
