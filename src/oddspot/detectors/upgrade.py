"""Convert inspect run folders written by oddspot 0.1 (format 1) to the run contract.

Format 1, as 0.1 wrote it:

    model.json               {"format_version": 1, "oddspot_version", "detector", "config", "state"}
    memory_bank.safetensors  PatchCore: tensor `memory_bank`
    padim.safetensors        PaDiM: tensors `mean`, `inv_cov`, `channels`
    gate/, localizer/        Cascade: each a format-1 PatchCore / PaDiM folder
    calibration.json         optional: the calibration (`Calibration.to_dict`)

The conversion moves every tensor into one `model.safetensors` (a cascade's as `gate.<name>` /
`localizer.<name>`), the calibration into `postprocess`, and changes no number.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from safetensors import SafetensorError
from safetensors.numpy import load as st_load

from oddspot.calibration import Calibration
from oddspot.configs import from_mapping
from oddspot.errors import OddspotError
from oddspot.files import read_json
from oddspot.runs.contract import MODEL_FILE, Record
from oddspot.runs.registry import model_class

TASK = "inspect"
CALIBRATION_V1 = "calibration.json"
TENSORS_V1 = {"patchcore": ("memory_bank.safetensors", ("memory_bank",)),
              "padim": ("padim.safetensors", ("mean", "inv_cov", "channels"))}
PARTS_V1 = ("gate", "localizer")


def _read_json(path: Path) -> Any:
    return read_json(path, "cannot upgrade a damaged folder",
                     missing="missing; the format-1 folder is incomplete and cannot be upgraded")


def _read_meta(folder: Path) -> dict[str, Any]:
    """A format-1 model.json, checked for the fields 0.1 wrote."""
    path = folder / MODEL_FILE
    meta = _read_json(path)
    if not isinstance(meta, dict) or meta.get("format_version") != 1:
        raise OddspotError(f"{path}: not a format-1 inspect model; cannot upgrade it")
    kind = meta.get("detector")
    if kind not in (*TENSORS_V1, "cascade"):
        raise OddspotError(f"{path}: detector {kind!r} unknown; format 1 knew patchcore, padim and cascade")
    for key in ("config", "state"):
        if not isinstance(meta.get(key), dict):
            raise OddspotError(f"{path}: field {key} must be an object; cannot upgrade a damaged folder")
    return meta


def _read_tensors(path: Path, names: tuple[str, ...]) -> dict[str, Any]:
    try:
        tensors = st_load(path.read_bytes())
    except FileNotFoundError:
        raise OddspotError(f"{path}: missing; the format-1 folder is incomplete and cannot be upgraded") from None
    except (OSError, SafetensorError, ValueError) as exc:
        raise OddspotError(f"{path}: not a readable safetensors file ({exc}); cannot upgrade it") from None
    missing = [n for n in names if n not in tensors]
    if missing:
        raise OddspotError(f"{path}: tensor {missing[0]!r} missing; cannot upgrade a damaged folder")
    return {n: tensors[n] for n in names}


def _complete(kind: str, config: dict[str, Any], folder: Path) -> dict[str, Any]:
    """`config` with every option (a saved config holds them all): those a 0.1 folder lacks take
    their defaults, the values 0.1 loaded it with."""
    return asdict(from_mapping(model_class(TASK, kind).config_class, config, f"{folder / MODEL_FILE}: config"))


def _detector_record(folder: Path) -> tuple[Record, list[Path]]:
    """The record of one format-1 detector folder (without its calibration), and the files it replaces."""
    meta = _read_meta(folder)
    kind = meta["detector"]
    if kind != "cascade":
        filename, names = TENSORS_V1[kind]
        tensors = _read_tensors(folder / filename, names)
        config = _complete(kind, meta["config"], folder)
        return Record(TASK, kind, config, meta["state"], None, tensors, source=str(folder)), [folder / filename]
    config, state, tensors = dict(meta["config"]), dict(meta["state"]), {}
    for part in PARTS_V1:
        sub, _ = _detector_record(folder / part)
        if sub.kind == "cascade":
            raise OddspotError(f"{folder / part / MODEL_FILE}: a cascade inside a cascade; cannot upgrade it")
        config[f"{part}_options"] = sub.config
        state[part] = sub.state
        tensors.update({f"{part}.{k}": v for k, v in sub.tensors.items()})
    config = _complete(kind, config, folder)
    return Record(TASK, kind, config, state, None, tensors, source=str(folder)), [folder / p for p in PARTS_V1]


def record_from_v1(folder: Path) -> tuple[Record, list[Path]]:
    """The format-2 record of the format-1 inspect run `folder`, and the old files and folders it replaces."""
    folder = Path(folder)
    record, obsolete = _detector_record(folder)
    cal_path = folder / CALIBRATION_V1
    if cal_path.is_file():
        record.postprocess = Calibration.from_dict(_read_json(cal_path), str(cal_path)).to_dict()
        obsolete.append(cal_path)
    return record, obsolete
