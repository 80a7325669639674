"""Convert a video model folder written by oddspot 0.1 (format 1) to the run contract.

Format 1 was `model.json` {format_version: 1, oddspot_version, kind, config, postprocess
{sigma, normalization, mean, std, fitted}, state, fit_info} plus `weights.safetensors`. Config,
state and tensors carry over unchanged (tensor names are the same), so the upgraded model gives
bit-identical raw and normalized scores. A 0.1 model had no decision threshold and none is made
up: the upgraded post-processor has `threshold: null` (and `threshold_quantile: null`), so
`predict` returns no decisions until the model is refit; `state.fit_info.upgraded_from` says so.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

from safetensors import SafetensorError
from safetensors.numpy import load_file

from oddspot.configs import from_mapping
from oddspot.errors import OddspotError
from oddspot.files import read_json
from oddspot.runs.contract import MODEL_FILE, Record
from oddspot.video.autoencoder import FrameAutoencoder
from oddspot.video.base import VideoDetector
from oddspot.video.motion import MotionDetector

WEIGHTS_V1 = "weights.safetensors"
KINDS_V1: dict[str, type[VideoDetector]] = {"motion": MotionDetector, "autoencoder": FrameAutoencoder}
POSTPROCESS_V1 = ("sigma", "normalization", "mean", "std", "fitted")
UPGRADE_NOTE = "written by oddspot {version} (format 1), which fitted no decision threshold; refit the model for decisions"


def record_from_v1(folder: Path) -> tuple[Record, list[Path]]:
    """The format-2 record of the 0.1 video model in `folder`, and the old files it replaces.

    The record is checked by building the model from it, so a folder that would not load is never
    written over.
    """
    folder = Path(folder)
    path = folder / MODEL_FILE
    meta = read_json(path, "cannot upgrade a damaged folder")
    if meta.get("format_version") != 1:
        raise OddspotError(f"{path}: not a format-1 video model; nothing to upgrade")
    kind = meta.get("kind")
    if kind not in KINDS_V1:
        raise OddspotError(f"{path}: video model kind {kind!r} unknown; expected one of {', '.join(KINDS_V1)}")
    for key, tp in (("config", dict), ("postprocess", dict), ("state", dict), ("fit_info", dict)):
        if not isinstance(meta.get(key, {} if key in ("state", "fit_info") else None), tp):
            raise OddspotError(f"{path}: field {key} missing or not an object; cannot upgrade a damaged folder")
    old_post = meta["postprocess"]
    missing = [k for k in POSTPROCESS_V1 if k not in old_post]
    if missing:
        raise OddspotError(f"{path}: postprocess.{missing[0]} missing; cannot upgrade a damaged folder")
    postprocess = {**{k: old_post[k] for k in POSTPROCESS_V1}, "threshold_quantile": None, "threshold": None}
    weights = folder / WEIGHTS_V1
    try:
        tensors = load_file(str(weights))
    except FileNotFoundError:
        raise OddspotError(f"{weights}: not found; the 0.1 model folder is incomplete, refit the model") from None
    except (SafetensorError, OSError, ValueError) as exc:
        raise OddspotError(f"{weights}: not a readable safetensors file ({exc}); refit the model") from None
    note = UPGRADE_NOTE.format(version=meta.get("oddspot_version", "0.1"))
    fit_info = {**meta.get("fit_info", {}), "upgraded_from": note}
    state = {**meta.get("state", {}), "fit_info": fit_info}
    # A saved config holds every option: those 0.1 did not have take the values 0.1 worked with.
    config = asdict(from_mapping(KINDS_V1[kind].config_class, {"threshold_quantile": None, **meta["config"]},
                                 f"{path}: config"))
    record = Record("video", kind, config, state, postprocess, tensors, source=str(folder))
    KINDS_V1[kind].from_record(record)
    return record, [weights]
