"""`oddspot <task> predict --engine ray`: batch scoring on Ray Data, resumable, in shards.

    list inputs (driver) -> decode (parallel tasks) -> map_batches over an actor pool, the model
    loaded once per actor -> rows streamed back to the driver -> shard files -> scores.parquet

What is broadcast and what is sharded: every actor loads the model from the run folder once (the
run path travels, not the model); the inputs are sharded into blocks that the decode tasks and
the actors take in turn. Output rows come back to the driver, which writes them to
OUT/shards/ atomically as they arrive (`shards.ShardWriter`); maps and panels are written by the
actors straight into OUT (a folder every node can reach). A rerun skips the inputs already in
the shards; the final OUT/scores.parquet holds each input of the job exactly once, in input order,
with its error when it could not be scored (also listed in OUT/errors.csv).

Columns of scores.parquet: inspect `path, score, normalized, decision, error`; road adds
`flagged_pixels`; video has one row per frame: `source, video, frame, path, score, normalized,
decision, error`. `normalized` and `decision` are null for a model without a post-processor.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from oddspot.data.image_io import max_pixels as current_max_pixels
from oddspot.errors import OddspotError
from oddspot.files import claim_folder, read_json
from oddspot.paths import real_path
from oddspot.records.evaluation import write_csv
from oddspot.scale import engine
from oddspot.scale.inputs import list_inputs, local_paths
from oddspot.scale.shards import SCORES_PARQUET, ShardWriter, open_job, unite
from oddspot.scale.workers import WORKERS, decode_images, warning_line

TASKS = ("inspect", "road", "video")
KEYS = {"inspect": "path", "road": "path", "video": "source"}
ERRORS_FILE = "errors.csv"
MODEL_FILE = "model.json"


def schema(task: str) -> Any:
    """The pyarrow schema of `task`'s scores.parquet."""
    import pyarrow as pa

    scores = [("score", pa.float64()), ("normalized", pa.float64()), ("decision", pa.int8())]
    fields = {
        "inspect": [("path", pa.string()), *scores, ("error", pa.string())],
        "road": [("path", pa.string()), *scores, ("flagged_pixels", pa.int64()), ("error", pa.string())],
        "video": [("source", pa.string()), ("video", pa.string()), ("frame", pa.int64()), ("path", pa.string()),
                  *scores, ("error", pa.string())],
    }[task]
    return pa.schema(fields)


def job_identity(task: str, run: Path, runtime: str, precision: str, options: dict[str, Any]) -> dict[str, Any]:
    """What shards in an output folder belong to: the task, the run folder, its model.json's hash, the runtime
    that scores (runtimes differ in the last bits) and the options that decide what is written."""
    path = Path(run) / MODEL_FILE
    record = read_json(path, f"RUN must be a run folder written by `oddspot {task} fit`")
    if record.get("task") != task:
        raise OddspotError(f"{path}: a {record.get('task')!r:.20} run, not a {task} one; give a {task} run folder")
    return {"task": task, "run": str(real_path(run)), "model_sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
            "runtime": runtime, "precision": precision,
            "options": {k: list(v) if isinstance(v, tuple) else v for k, v in sorted(options.items())}}


def _stem(path: str) -> str:
    return PurePosixPath(path.split("://", 1)[1]).stem if "://" in path else Path(path).stem


def list_jobs(task: str, sources: Sequence[str | os.PathLike[str]], cache_dir: Path | None = None) -> list[dict[str, Any]]:
    """One input row per image (inspect, road) or video (video), in input order; `KEYS[task]` identifies it."""
    if task == "video":
        from oddspot.video.datasets import open_videos

        rows: list[dict[str, Any]] = []
        for source in sources:
            videos, failed = open_videos(source, cache_dir=cache_dir)
            rows += [{"source": str(v.path), "video": v.video_id} for v in videos]
            rows += [{"source": e["path"], "video": e["video"]} for e in failed]  # listed again with their error
        return list({r["source"]: r for r in rows}.values())
    items = list_inputs(sources)
    rows = [{"path": i.path, "rel": i.rel} for i in items]
    if task == "road":
        from oddspot.road.predict import unique_stem

        used: set[str] = set()
        for r in rows:
            r["stem"] = unique_stem(_stem(r["path"]), used)
    return rows


def _value(v: Any) -> Any:
    """A plain Python value from what came back through Ray (NaN and None both mean missing)."""
    if isinstance(v, np.generic):
        v = v.item()
    if isinstance(v, float) and v != v:
        return None
    return v


def _rows(batch: dict[str, np.ndarray], columns: Sequence[str]) -> list[dict[str, Any]]:
    n = len(batch[columns[0]])
    return [{c: _value(batch[c][i]) for c in columns} for i in range(n)]


def predict(task: str, run: str | Path, sources: Sequence[str | os.PathLike[str]], out: str | Path, *,
            address: str | None = None, actors: int = 2, batch_size: int = 16, threads: int = 1,
            device: str | None = None, runtime: str = "auto", precision: str = "fp32", max_pixels: int | None = None,
            cache_dir: Path | None = None,
            rows_per_shard: int = 4096, warn: Callable[[str], Any] = print, **options: Any) -> dict[str, Any]:
    """Score `sources` with the model in `run` on Ray; write OUT/scores.parquet (see the module docstring).

    `options` go to the task's worker: inspect `save_maps`; road `save_scores`, `panels`; video
    `protocol`. The model is loaded on `runtime` (`oddspot.export.load_for_inference`); the driver
    loads it once first, which checks the run and exports (caches) its graph before any actor
    starts. Returns {"scored", "skipped" (inputs listed with an error), "new" (scored by this call),
    "resumed" (found in earlier shards), "runtime", "scores" (the parquet file)}.
    """
    if task not in TASKS:
        raise OddspotError(f"task {task!r} unknown; use one of {', '.join(TASKS)}")
    if batch_size < 1:
        raise OddspotError(f"--batch-size {batch_size}: use at least 1")
    run, out = Path(run), Path(out)
    job_identity(task, run, runtime, precision, options)  # a bad run is an error before anything loads
    jobs = list_jobs(task, sources, cache_dir)
    key = KEYS[task]
    used = prepare_model(run, task, runtime, precision, device)
    claim_folder(out, inputs=[run, *local_paths(sources), cache_dir])
    done = open_job(out, job_identity(task, run, used, precision, options), key)
    todo = [j for j in jobs if j[key] not in done]
    table_schema = schema(task)
    if todo:
        budget = current_max_pixels() if max_pixels is None else max_pixels
        writer = ShardWriter(out, table_schema, rows_per_shard)
        try:
            _run(task, todo, writer, str(run), str(out), address=address, actors=actors, batch_size=batch_size,
                 threads=threads, device=device, runtime=runtime, precision=precision, max_pixels=budget,
                 cache_dir=cache_dir, **options)
        finally:
            writer.flush()
    table = unite(out, key, [j[key] for j in jobs], table_schema, then_by=("frame",) if task == "video" else ())
    errors = [r for r in table.select([key, "path", "error"]).to_pylist() if r["error"] is not None]
    for r in errors:
        warn(warning_line(r["path"], r["error"]))
    failed = {r[key] for r in errors}
    (out / ERRORS_FILE).unlink(missing_ok=True)
    if errors:
        write_csv(out / ERRORS_FILE, ("path", "error"), [(r["path"], r["error"]) for r in errors])
    return {"scored": len(jobs) - len(failed), "skipped": len(failed), "new": len(todo),
            "resumed": len(jobs) - len(todo), "runtime": used, "scores": out / SCORES_PARQUET}


def prepare_model(run: Path, task: str, runtime: str, precision: str, device: str | None) -> str:
    """Load the model once on the driver: a bad run is a one-line error before Ray starts, and an exported
    graph is made (and cached in the run) once instead of by every actor at the same time. Returns the runtime."""
    from oddspot.export import load_for_inference

    return str(getattr(load_for_inference(run, task, runtime, precision, device=device), "runtime", "torch"))


def _run(task: str, todo: list[dict[str, Any]], writer: ShardWriter, run: str, out: str, *, address: str | None,
         actors: int, batch_size: int, threads: int, device: str | None, runtime: str, precision: str, max_pixels: int,
         cache_dir: Path | None, **options: Any) -> None:
    """Build and drain the Ray Data pipeline of `todo`, handing result rows to `writer`."""
    ray = engine.connect(address)
    worker = WORKERS[task]
    pool = engine.pool_options(ray, actors, threads)
    if device == "cuda":
        pool["num_gpus"] = 1
    ds = ray.data.from_items(todo, override_num_blocks=engine.blocks(len(todo), actors, 4 * batch_size))
    if task != "video":
        ds = ds.map_batches(decode_images, batch_size=batch_size, batch_format="numpy", num_cpus=engine.DECODE_CPUS,
                            fn_kwargs={"max_pixels": max_pixels})
    kwargs = {"run": run, "out": out, "device": device, "runtime": runtime, "precision": precision, "threads": threads,
              "max_pixels": max_pixels,
              "hook": engine.fault_hook(), "cache_dir": None if cache_dir is None else str(cache_dir),
              "model": engine.broadcast_model(run, runtime, precision), **options}
    ds = ds.map_batches(worker, batch_size=1 if task == "video" else batch_size, batch_format="numpy",
                        fn_constructor_kwargs=engine.share(ray, kwargs), **pool)
    columns = worker.columns
    key = KEYS[task]
    try:
        with engine.row_progress(len(todo), f"{task} predict on Ray ({actors} actors)") as advance:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                rows = _rows(batch, columns)
                writer.add(rows)
                advance(len({r[key] for r in rows}))
    except Exception as exc:
        found = engine.one_line(exc)
        if found is None:
            raise
        raise found from None
