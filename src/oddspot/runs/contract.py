"""The run contract: every fitted model of every task and kind is one folder.

    model.json         format_version 2, oddspot_version, task, kind, config, state, postprocess,
                       and the sha256 and size of every tensor file
    model.safetensors  every tensor of the model
    <graph files>      only in an exported folder (`oddspot export`): the network as an OpenVINO
                       or ONNX graph, described by model.json's `graph` and hashed in `files`

`model.json` is written last and names the hash of the tensor file it goes with, so a folder
whose writing was interrupted, or whose tensors were changed afterwards, is refused on load
instead of silently mixing old and new parts. Loading reads JSON and safetensors only: nothing
is ever unpickled. Folders written by oddspot 0.1 (format 1) are refused with a one-line error
that names `oddspot upgrade RUN`, which converts them (see `oddspot.runs.upgrade`).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from oddspot import __version__
from oddspot.choices import TASKS
from oddspot.errors import OddspotError
from oddspot.files import atomic_write_bytes, read_json, recover_folder, write_json

FORMAT_VERSION = 2
MODEL_FILE = "model.json"
TENSORS_FILE = "model.safetensors"
_KEYS = ("format_version", "oddspot_version", "task", "kind", "config", "state", "postprocess", "files")


@dataclass
class Record:
    """What a model folder holds, in memory: JSON-able parts and named numpy tensors."""

    task: str
    kind: str
    config: dict[str, Any]
    state: dict[str, Any] = field(default_factory=dict)
    postprocess: dict[str, Any] | None = None
    tensors: dict[str, np.ndarray] = field(default_factory=dict)
    oddspot_version: str = __version__
    source: str = "<memory>"
    graph: dict[str, Any] | None = None
    blobs: dict[str, bytes] = field(default_factory=dict)

    def tensor(self, name: str, ndim: int | None = None, dtype: Any | None = None) -> np.ndarray:
        """The tensor `name`, checked for presence, rank and dtype (one-line error naming the file)."""
        where = f"{self.source}/{TENSORS_FILE}"
        if name not in self.tensors:
            raise OddspotError(f"{where}: tensor {name!r} missing; the model folder is incomplete, refit it")
        t = self.tensors[name]
        if ndim is not None and t.ndim != ndim:
            raise OddspotError(f"{where}: tensor {name!r} has {t.ndim} dimensions, expected {ndim}; refit the model")
        if dtype is not None and t.dtype != np.dtype(dtype):
            raise OddspotError(f"{where}: tensor {name!r} is {t.dtype}, expected {np.dtype(dtype)}; refit the model")
        return t

    def prefixed(self, prefix: str) -> dict[str, np.ndarray]:
        """Tensors whose names start with `prefix` + '.', with the prefix removed (for nested models)."""
        p = prefix + "."
        return {k[len(p):]: v for k, v in self.tensors.items() if k.startswith(p)}


def to_numpy(tensors: dict[str, Any]) -> dict[str, np.ndarray]:
    """Tensors (numpy arrays or torch tensors) as contiguous CPU numpy arrays."""
    out = {}
    for name, t in tensors.items():
        if hasattr(t, "detach"):
            t = t.detach().to("cpu").contiguous().numpy()
        out[name] = np.ascontiguousarray(t).reshape(np.shape(t))  # ascontiguousarray turns 0-d into 1-d
    return out


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def save_record(folder: str | Path, record: Record) -> Path:
    """Write `record` to `folder`: the tensor file first, model.json (with its hash) last."""
    if record.task not in TASKS:
        raise OddspotError(f"task {record.task!r} unknown; use one of {', '.join(TASKS)}")
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OddspotError(f"{folder}: exists and is not a folder; pass a folder for the model")
    data = st_save(to_numpy(record.tensors))
    atomic_write_bytes(folder / TENSORS_FILE, data)
    files = {TENSORS_FILE: {"sha256": sha256(data), "size": len(data)}}
    for name, blob in record.blobs.items():
        _check_file_name(name, folder / MODEL_FILE)
        atomic_write_bytes(folder / name, blob)
        files[name] = {"sha256": sha256(blob), "size": len(blob)}
    meta = {
        "format_version": FORMAT_VERSION,
        "oddspot_version": record.oddspot_version,
        "task": record.task,
        "kind": record.kind,
        "config": record.config,
        "state": record.state,
        "postprocess": record.postprocess,
        "files": files,
    }
    if record.graph is not None:
        meta["graph"] = record.graph
    write_json(folder / MODEL_FILE, meta)
    return folder


def read_model_json(folder: str | Path) -> dict[str, Any]:
    """model.json of a run folder, checked for its format and the types of its top-level fields."""
    folder = Path(folder)
    path = folder / MODEL_FILE
    if not folder.is_dir():
        recover_folder(folder)  # a commit of this folder may have been interrupted (oddspot.files)
    if not folder.is_dir():
        raise OddspotError(f"{folder}: no such run folder; pass a folder written by `oddspot <task> fit`")
    if not path.is_file():
        if (folder / "config.json").is_file():  # a road run of oddspot 0.1
            raise OddspotError(f"{folder}: written by oddspot 0.1 (format 1); convert it with `oddspot upgrade {folder}`")
        raise OddspotError(f"{folder}: not a saved oddspot model ({MODEL_FILE} missing); pass a folder written by `oddspot <task> fit`")
    meta = read_json(path, "the file is damaged, refit the model")
    version = meta.get("format_version")
    if version == 1:
        raise OddspotError(f"{path}: written by oddspot 0.1 (format 1); convert it with `oddspot upgrade {folder}`")
    if version != FORMAT_VERSION or isinstance(version, bool):
        raise OddspotError(f"{path}: format_version {version!r} unsupported (this oddspot reads {FORMAT_VERSION}); "
                           "use the oddspot version that wrote it")
    missing = [k for k in _KEYS if k not in meta]
    if missing:
        raise OddspotError(f"{path}: field {missing[0]} missing; the file is damaged, refit the model")
    expected = {"oddspot_version": str, "task": str, "kind": str, "config": dict, "state": dict, "files": dict}
    for key, tp in expected.items():
        if not isinstance(meta[key], tp):
            raise OddspotError(f"{path}: field {key} must be {'an object' if tp is dict else 'text'}, got {meta[key]!r:.60}")
    if meta["postprocess"] is not None and not isinstance(meta["postprocess"], dict):
        raise OddspotError(f"{path}: field postprocess must be an object or null")
    if meta["task"] not in TASKS:
        raise OddspotError(f"{path}: task {meta['task']!r} unknown; this oddspot knows {', '.join(TASKS)}")
    if TENSORS_FILE not in meta["files"]:
        raise OddspotError(f"{path}: files.{TENSORS_FILE} must hold its sha256 and size; the file is damaged, refit the model")
    for name, info in meta["files"].items():
        _check_file_name(name, path)
        if (not isinstance(info, dict) or not isinstance(info.get("sha256"), str) or len(info["sha256"]) != 64
                or isinstance(info.get("size"), bool) or not isinstance(info.get("size"), int) or info["size"] < 0):
            raise OddspotError(f"{path}: files.{name} must hold its sha256 and size; the file is damaged, refit the model")
    graph = meta.get("graph")
    if graph is not None and not isinstance(graph, dict):
        raise OddspotError(f"{path}: field graph must be an object; the file is damaged, export the model again")
    if graph is None and len(meta["files"]) > 1:
        raise OddspotError(f"{path}: lists files other than {TENSORS_FILE} but no graph; the file is damaged, refit the model")
    return meta


def _check_file_name(name: Any, where: Path) -> None:
    """A file of a model folder is named by a plain file name inside the folder: never a path."""
    if (not isinstance(name, str) or not name or name in (".", "..", MODEL_FILE) or "/" in name or "\\" in name
            or name.startswith(".") or any(ord(ch) < 32 for ch in name)):
        raise OddspotError(f"{where}: file name {str(name)!r:.60} is not a plain file name of the folder; the file is damaged")


def _read_checked(folder: Path, name: str, info: dict[str, Any]) -> bytes:
    """The bytes of one listed file of a model folder, verified against its size and sha256."""
    fpath = folder / name
    try:
        # A folder, FIFO or device in its place is never read, nor a file of another size (it could be huge).
        if not fpath.is_file():
            raise OddspotError(f"{fpath}: missing or not a regular file; the model folder is incomplete, refit it")
        data = fpath.read_bytes() if fpath.stat().st_size == info["size"] else b""
    except OSError as exc:
        raise OddspotError(f"{fpath}: cannot read ({exc.strerror or exc}); the model folder is incomplete, refit it") from None
    if len(data) != info["size"] or sha256(data) != info["sha256"]:
        raise OddspotError(f"{fpath}: size or sha256 does not match {MODEL_FILE}; the file was changed or damaged, "
                           "restore it or refit the model")
    return data


def load_record(folder: str | Path, task: str | None = None, kind: str | None = None) -> Record:
    """Read and verify a model folder: types of model.json, size and sha256 of the tensor file,
    finite float tensors. `task` / `kind`, when given, must match what the folder holds."""
    folder = Path(folder)
    meta = read_model_json(folder)
    path = folder / MODEL_FILE
    if task is not None and meta["task"] != task:
        raise OddspotError(f"{folder}: holds a {meta['task']} model, not a {task} model; use `oddspot {meta['task']} ...`")
    if kind is not None and meta["kind"] != kind:
        raise OddspotError(f"{path}: holds a {meta['kind']!r} model, not {kind!r}")
    tpath = folder / TENSORS_FILE
    data = _read_checked(folder, TENSORS_FILE, meta["files"][TENSORS_FILE])
    blobs = {name: _read_checked(folder, name, info) for name, info in meta["files"].items() if name != TENSORS_FILE}
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError, OSError) as exc:
        raise OddspotError(f"{tpath}: not a readable safetensors file ({exc}); refit the model") from None
    for name, t in tensors.items():
        if t.dtype.kind == "f" and not np.isfinite(t).all():
            raise OddspotError(f"{tpath}: tensor {name!r} holds NaN or infinite values; refit the model")
    return Record(meta["task"], meta["kind"], meta["config"], meta["state"], meta["postprocess"], tensors,
                  meta["oddspot_version"], str(folder), meta.get("graph"), blobs)
