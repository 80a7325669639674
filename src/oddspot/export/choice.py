"""Which runtime scores a run: torch, or an exported graph on OpenVINO or ONNX Runtime.

`runtime="auto"` takes the fastest runtime installed whose results stay within the fp32
tolerance of torch (image scores within 1e-4 relative, maps within 1e-3 after normalization):
OpenVINO, else ONNX Runtime, else torch. For a fitted run, the graph is exported on first use
and cached in `RUN/exports/<format>-<precision>/`, tied to the run by the sha256 of its
model.json: a refitted run is exported again. An exported folder runs on its own runtime.
"""

from __future__ import annotations

import hashlib
import sys
import tempfile
from pathlib import Path
from typing import Any

from oddspot.choices import RUNTIMES
from oddspot.errors import OddspotError
from oddspot.runs.contract import MODEL_FILE, read_model_json
from oddspot.runs.registry import EXPORTED, load_model
from oddspot.runtime.engine import PRECISIONS, RUNTIME_OF_FORMAT, runtime_available

FORMAT_OF_RUNTIME = {v: k for k, v in RUNTIME_OF_FORMAT.items()}
CACHE = "exports"


def resolve_runtime(runtime: str, task: str, kind: str) -> str:
    """`auto` -> openvino, onnxruntime or torch (the first installed that can run this kind)."""
    if runtime not in RUNTIMES:
        raise OddspotError(f"--runtime {runtime!r} unknown; use one of {', '.join(RUNTIMES)}")
    exportable = (task, kind) in EXPORTED
    if runtime != "auto":
        if runtime != "torch" and not exportable:
            raise OddspotError(f"--runtime {runtime}: {task} {kind} models run on torch only; use --runtime torch")
        return runtime
    if exportable:
        for candidate in ("openvino", "onnxruntime"):
            if runtime_available(candidate):
                return candidate
    return "torch"


def load_for_inference(run: str | Path, task: str | None = None, runtime: str = "auto", precision: str = "fp32",
                       device: str | None = None, search: str = "exact") -> Any:
    """The model of `run` ready to `predict`, on `runtime`; `model.runtime` names the one used.

    `search`: PatchCore's memory-bank search ("exact" or "hnsw", `oddspot.neighbors`).
    """
    model = _load(Path(run), task, runtime, precision, device)
    if search != "exact":
        if not hasattr(model, "search"):
            raise OddspotError(f"--search {search}: only PatchCore models search a memory bank; use --search exact")
        model.search = search
    return model


def inference_folder(run: str | Path, runtime: str = "auto", precision: str = "fp32") -> tuple[Path, str]:
    """The folder `load_for_inference(run, runtime=..., precision=...)` loads, and the runtime that loads it
    from there ("torch", or "auto" for an exported folder): what a cluster ships to its workers."""
    run = Path(run)
    meta = read_model_json(run)
    if meta.get("graph") is not None:
        return run, "auto"
    chosen = resolve_runtime(runtime, meta["task"], meta["kind"])
    if chosen == "torch":
        return run, "torch"
    return cached_export(run, FORMAT_OF_RUNTIME[chosen], precision), "auto"


def model_files(folder: str | Path) -> dict[str, bytes]:
    """model.json and every file it lists, as bytes (verified again wherever they are loaded)."""
    folder = Path(folder)
    meta = read_model_json(folder)
    return {MODEL_FILE: (folder / MODEL_FILE).read_bytes(), **{name: (folder / name).read_bytes() for name in meta["files"]}}


def _load(run: Path, task: str | None, runtime: str, precision: str, device: str | None) -> Any:
    meta = read_model_json(run)
    if task is not None and meta["task"] != task:
        load_model(run, task)  # the one-line "holds a ... model" error
    if precision not in PRECISIONS:
        raise OddspotError(f"--precision {precision!r} unknown; use one of {', '.join(PRECISIONS)}")
    graph = meta.get("graph")
    if graph is not None:  # an exported folder runs on its own runtime
        own = RUNTIME_OF_FORMAT.get(graph.get("format") if isinstance(graph, dict) else None, "?")
        if runtime not in ("auto", own):
            raise OddspotError(f"{run}: an exported {own} model; it runs with --runtime {own} (or auto), "
                               f"not {runtime}; export the original run for {runtime}")
        return load_model(run, task, device=device)
    chosen = resolve_runtime(runtime, meta["task"], meta["kind"])
    if chosen == "torch":
        if precision != "fp32":
            raise OddspotError(f"--precision {precision}: the torch runtime computes in fp32; use --runtime openvino")
        model = load_model(run, task, device=device)
        model.runtime = "torch"
        return model
    return load_model(cached_export(run, FORMAT_OF_RUNTIME[chosen], precision, device), task, device="cpu")


def cached_export(run: Path, fmt: str, precision: str, device: str | None = None) -> Path:
    """The run's export in `fmt`/`precision`, from the cache when it belongs to this model.json, else made now.

    The run is verified first (hashes of model.json's files): the cache copies its tensors, so a
    run changed after its export must be refused, not served from the cache.
    """
    from oddspot.runs.contract import load_record

    load_record(run)
    folder = run / CACHE / f"{fmt}-{precision}"
    sha = hashlib.sha256((run / MODEL_FILE).read_bytes()).hexdigest()
    try:
        cached = read_model_json(folder)
        if ((cached.get("graph") or {}).get("source") or {}).get("model_sha256") == sha:
            return folder
    except OddspotError:
        pass  # absent or damaged: export again
    from oddspot.export.folder import export_run

    def announce() -> None:
        print(f"exporting {run} to {fmt} {precision} (once; cached in {folder})", file=sys.stderr)

    try:
        export_run(run, fmt, precision, folder, device=device, cache=True, announce=announce)
    except OSError:  # a read-only run folder: export to a temporary folder instead
        folder = Path(tempfile.mkdtemp(prefix="oddspot-export-")) / f"{fmt}-{precision}"
        export_run(run, fmt, precision, folder, device=device)
    return folder
