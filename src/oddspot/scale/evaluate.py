"""`oddspot <task> evaluate --engine ray`: each worker folds its blocks into metric states, the driver merges them.

The test items are cut into blocks; a decode task reads each block and an actor (model loaded once)
folds it into one part (`folds.Part`): the streaming metric states of `oddspot.metrics` with every
item keyed by its index, and the per-item rows. Parts come back in any order and are merged on the
driver; `merge` is exact, so the record equals the single-process `evaluate`'s number for number
(with the same threads: torch's float sums depend on the thread count), while the pixel tables
stay exact (up to `max_exact_values` distinct scores, 2**22 by default; past that both runs
switch to binned tables, whose results carry error bounds but are not bit-identical). The record
(metrics.json, scores.csv, curves.json and the task's figures) is written as the single-process
verb writes it, through a staged folder; metrics.json adds `engine` and `actors` to its run facts.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oddspot.data.image_io import max_pixels as current_max_pixels
from oddspot.errors import OddspotError
from oddspot.files import staged_folder, write_json
from oddspot.records.evaluation import CURVES_FILE, SCORES_FILE, write_csv, write_metrics
from oddspot.scale import engine
from oddspot.scale.folds import InspectFold, Part, RoadTestFold, RoadValidationFold, VideoFold, decode_samples, decode_scenes

PER_BLOCK = {"inspect": 512, "road": 64, "video": 1}
"""Items per block, before rounding up to two blocks per actor. A block is what a retry redoes and what one part
holds; a part's tables are bounded by their own limits (`ScoreTable`), whatever the block size, so large blocks
keep the parts few."""


def _load(run: Path, task: str, runtime: str, precision: str, device: str | None) -> Any:
    from oddspot.export import load_for_inference

    return load_for_inference(run, task, runtime, precision, device=device)


def fold(items: list[dict[str, Any]], worker: type, worker_kwargs: dict[str, Any], *, address: str | None, actors: int,
         threads: int, device: str | None, description: str, per_block: int,
         decode: Callable[..., Any] | None = None, decode_kwargs: dict[str, Any] | None = None) -> Part:
    """Fold `items` (each with an `index`) into one merged part on Ray; every item exactly once."""
    ray = engine.connect(address)
    pool = engine.pool_options(ray, actors, threads)
    if device == "cuda":
        pool["num_gpus"] = 1
    ds = ray.data.from_items(items, override_num_blocks=engine.blocks(len(items), actors, per_block))
    if decode is not None:
        ds = ds.map_batches(decode, batch_size=None, batch_format="numpy", num_cpus=engine.DECODE_CPUS,
                            fn_kwargs=decode_kwargs or {})
    ds = ds.map_batches(worker, batch_size=None, batch_format="numpy", fn_constructor_kwargs=engine.share(ray, worker_kwargs),
                        **pool)
    merged = Part()
    try:
        with engine.row_progress(len(items), description) as advance:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for part in batch["part"]:
                    if part.keys and part.keys <= merged.keys:
                        continue  # the same block delivered again after a retry
                    merged.merge(part)
                    advance(len(part.keys))
    except Exception as exc:
        found = engine.one_line(exc)
        if found is None:
            raise
        raise found from None
    missing = {int(i["index"]) for i in items} - merged.keys
    if missing:
        raise OddspotError(f"Ray returned no result for {len(missing)} of {len(items)} items; run the command again")
    return merged


def _worker_kwargs(run: Path, out: Path, runtime: str, precision: str, device: str | None, threads: int,
                   max_pixels: int | None, **options: Any) -> dict[str, Any]:
    budget = current_max_pixels() if max_pixels is None else max_pixels
    return {"run": str(run), "out": str(out), "device": device, "runtime": runtime, "precision": precision,
            "threads": threads, "max_pixels": budget, "hook": engine.fault_hook(),
            "model": engine.broadcast_model(run, runtime, precision), **options}


def _engine_facts(actors: int) -> dict[str, Any]:
    return {"engine": "ray", "actors": actors}


# inspect -------------------------------------------------------------------------------------------

def evaluate_inspect(run: str | Path, data: str | Path | None, category: str | None, out: str | Path,
                     split: str | None = None, bootstrap: int = 1000, seed: int = 0, batch: int = 32, gallery: int = 12,
                     warn: Callable[[str], Any] = print, *, address: str | None = None, actors: int = 2,
                     threads: int = 1, device: str | None = None, runtime: str = "auto", precision: str = "fp32",
                     max_pixels: int | None = None, layout: str | None = None, abnormal: str | Path | None = None,
                     masks: str | Path | None = None) -> dict[str, Any]:
    """`oddspot inspect evaluate` on Ray: the record of `oddspot.inspect.evaluate`, from merged per-block states.

    The dataset is the one given (any layout) or the one the run's run.json records, as in the
    single-process evaluate; every mask file of an image travels to the workers (LOCO has several)."""
    from oddspot.inspect.evaluation import spro_config, spro_facts, write_record
    from oddspot.inspect.layout import split_test_data

    run, out = Path(run), Path(out)
    model = _load(run, "inspect", runtime, precision, device)
    dataset, test, protocol = split_test_data(run, data, category, split, layout, abnormal, masks)
    data, category = dataset.root, dataset.category
    spro = spro_config(dataset)
    items = [{"index": i, "path": str(r.path), "mask": json.dumps([str(p) for p in r.mask_paths]),
              "label": int(r.label), "defect_type": r.defect_type, "category": r.category} for i, r in enumerate(test)]
    budget = current_max_pixels() if max_pixels is None else max_pixels
    with staged_folder(out, inputs=(run, data)) as stage:
        t0 = time.perf_counter()
        kwargs = _worker_kwargs(run, stage, runtime, precision, device, threads, budget, bootstrap=bootstrap, seed=seed,
                                batch=batch, spro=spro)
        part = fold(items, InspectFold, kwargs, address=address, actors=actors, threads=threads, device=device,
                    description=f"inspect evaluate on Ray ({actors} actors)", per_block=PER_BLOCK["inspect"],
                    decode=decode_samples, decode_kwargs={"max_pixels": budget})
        seconds = time.perf_counter() - t0
        if part.errors:
            raise OddspotError(part.errors[min(part.errors)])
        evaluator, pixel_stats = part.state["evaluator"], part.state["pixels"].in_order()
        rows = [part.rows[i] for i in range(len(test))]
        run_facts = {"category": category, "layout": dataset.layout, "model_kind": model.kind, "split": protocol, "n_test": len(test),
                     "seed": seed, "bootstrap_seed": seed, "predict_seconds": round(seconds, 3), "model": str(run),
                     "max_pixels": budget, "runtime": getattr(model, "runtime", "torch"), **spro_facts(spro),
                     **_engine_facts(actors)}
        metrics = write_record(stage, model, evaluator, rows, test, run_facts, part.extra.get("called", 0), gallery, warn,
                               pixel_stats)
    return metrics


# video ---------------------------------------------------------------------------------------------

def evaluate_video(run: str | Path, data: str | Path, out: str | Path, layout: str = "auto",
                   labels: str | Path | None = None, skip_first: int = 0, protocol: str = "trained",
                   cache_dir: Path | None = None, warn: Callable[[str], Any] = print, *, address: str | None = None,
                   actors: int = 2, threads: int = 1, device: str | None = None, runtime: str = "auto",
                   precision: str = "fp32", max_pixels: int | None = None) -> dict[str, Any]:
    """`oddspot video evaluate` on Ray: videos scored by the actors, the record of `oddspot.video.pipeline.evaluate`."""
    from oddspot.data.image_io import max_pixels as record_max_pixels
    from oddspot.video.datasets import open_video_dataset
    from oddspot.video.evaluate import write_evaluation
    from oddspot.video.postprocess import PROTOCOLS

    if protocol not in PROTOCOLS:
        raise OddspotError(f"protocol {protocol!r} unknown; use one of {', '.join(PROTOCOLS)}")
    if skip_first < 0:
        raise OddspotError(f"skip_first {skip_first} is negative; use 0 to keep every frame")
    run, out = Path(run), Path(out)
    model = _load(run, "video", runtime, precision, device)
    videos = open_video_dataset(data, "test", layout=layout, labels=labels, cache_dir=cache_dir)
    items = [{"index": i} for i in range(len(videos))]
    kwargs = _worker_kwargs(run, out, runtime, precision, device, threads, max_pixels, data=str(data), layout=layout,
                            labels=None if labels is None else str(labels), protocol=protocol,
                            cache_dir=None if cache_dir is None else str(cache_dir))
    part = fold(items, VideoFold, kwargs, address=address, actors=actors, threads=threads, device=device,
                description=f"video evaluate on Ray ({actors} actors)", per_block=PER_BLOCK["video"])
    skipped = []
    for i in sorted(part.errors):
        v = videos[i]
        skipped.append({"video": v.video_id, "path": str(v.path), "error": part.errors[i]})
        warn(f"warning: skipped video {v.video_id}: {part.errors[i]}")
    done = sorted(part.rows)
    if not done:
        raise OddspotError(f"{data}: no test video could be read; see the warnings above")
    threshold = model.post.threshold if protocol == "trained" else None
    extra = {"model": str(run), "kind": model.kind, "protocol": protocol, "skipped_videos": skipped,
             "threshold_quantile": model.post.threshold_quantile, "max_pixels": record_max_pixels(),
             "runtime": getattr(model, "runtime", "torch"), **_engine_facts(actors)}
    with staged_folder(out, inputs=(run, data, labels, cache_dir)) as stage:
        metrics = write_evaluation(stage, [part.rows[i] for i in done], [videos[i] for i in done], skip_first=skip_first,
                                   threshold=threshold, extra=extra, title=f"{model.kind}: frame scores (red: anomalous frames)")
    return metrics


# road ----------------------------------------------------------------------------------------------

def validation_batches(split: Any, batch_size: int) -> list[list[int]]:
    """The validation pass's batches as `segmentation_metrics` forms them: consecutive scenes of one size, at most
    `batch_size`; sizes are read from the image headers (a scene whose header cannot be read is a batch alone)."""
    from PIL import Image

    batches: list[list[int]] = []
    last: tuple[int, int] | None = None
    for i, path in enumerate(split.image_paths):
        try:
            with Image.open(path) as img:
                size: tuple[int, int] | None = img.size
        except (OSError, ValueError, Image.DecompressionBombError):
            size = None
        if batches and size is not None and size == last and len(batches[-1]) < batch_size:
            batches[-1].append(i)
        else:
            batches.append([i])
        last = size
    return batches


def evaluate_road(run: str | Path, data: str | Path, out: str | Path, batch_size: int = 8,
                  scores: tuple[str, ...] | None = None, offsets: tuple[float, ...] | None = None, panels: int = 4,
                  log: Callable[[str], None] = print, *, address: str | None = None, actors: int = 2, threads: int = 1,
                  device: str | None = None, runtime: str = "auto", precision: str = "fp32",
                  max_pixels: int | None = None) -> dict[str, Any]:
    """`oddspot road evaluate` on Ray: validation mIoU from merged confusion matrices, every test pixel through merged
    ranking states; the record of `oddspot.road.evaluate.evaluate`."""
    import numpy as np

    from oddspot import __version__
    from oddspot.data.image_io import max_pixels as record_max_pixels
    from oddspot.data.streethazards import ANOMALY_CLASS, CLASS_NAMES
    from oddspot.road.evaluate import (
        SCORES_HEADER,
        anomaly_section,
        evaluation_splits,
        image_summary,
        named_miou,
        score_results,
        segmentation_on_test,
    )
    from oddspot.road.predict import unique_stem
    from oddspot.road.scorer import SCORE_NAMES
    from oddspot.road.thresholds import DEFAULT_OFFSETS
    from oddspot.road.tta import TTA

    scores = SCORE_NAMES if scores is None else tuple(scores)
    offsets = DEFAULT_OFFSETS if offsets is None else tuple(offsets)
    run, out = Path(run), Path(out)
    if runtime not in ("auto", "torch") or precision != "fp32":
        raise OddspotError("road evaluate runs the torch model (as on one machine); use --runtime torch --precision fp32")
    runtime = "torch"
    model = _load(run, "road", runtime, precision, device)
    val, test = evaluation_splits(model, data, scores, panels)
    _, scorer = model._fitted()
    decision = model.config.score
    budget = current_max_pixels() if max_pixels is None else max_pixels
    used: set[str] = set()
    stems = [unique_stem(Path(p).stem, used) if i < panels else "" for i, p in enumerate(test.image_paths)]

    with staged_folder(out, inputs=(data, run)) as stage:
        kwargs = _worker_kwargs(run, stage, runtime, precision, device, threads, budget)
        t0 = time.perf_counter()
        groups = validation_batches(val, batch_size)
        seg_part = fold([{"index": i, "members": g} for i, g in enumerate(groups)], RoadValidationFold, kwargs,
                        address=address, actors=actors, threads=threads, device=device, per_block=4,
                        description=f"validation mIoU on Ray ({actors} actors)", decode=decode_scenes,
                        decode_kwargs={"data": str(data), "split": "validation", "max_pixels": budget})
        t_seg = time.perf_counter() - t0
        skipped = [e for i in sorted(seg_part.rows) for e in seg_part.rows[i]]
        if not seg_part.extra.get("n_images"):
            raise OddspotError("no readable images to measure segmentation quality on")
        res = seg_part.state.compute()
        iou = [float(v) for v in res["iou"]]
        k = model.config.model.num_classes
        seg = {"miou": float(res["miou"]), "pixel_accuracy": float(res["pixel_accuracy"]),
               "iou": {name: iou[i] for i, name in enumerate(CLASS_NAMES[:k])}, "n_images": int(seg_part.extra["n_images"])}
        seg.update(named_miou(seg["iou"]))

        t1 = time.perf_counter()
        items = [{"index": i, "members": [i], "path": str(p), "stem": stems[i]} for i, p in enumerate(test.image_paths)]
        part = fold(items, RoadTestFold, {**kwargs, "scores": list(scores), "panels_dir": str(stage)}, address=address,
                    actors=actors, threads=threads, device=device, per_block=PER_BLOCK["road"],
                    description=f"score test pixels on Ray ({actors} actors)", decode=decode_scenes,
                    decode_kwargs={"data": str(data), "split": "test", "max_pixels": budget})
        t_test = time.perf_counter() - t1
        skipped += [part.errors[i] for i in sorted(part.errors)]
        for message in skipped:
            log(f"skipped: {message}")
        rows = [part.rows[i] for i in sorted(part.rows)]
        if not rows:
            raise OddspotError(f"{test.image_dir}: no readable test images")
        n_with_anomaly = sum(int(r[1]) for r in rows)
        if n_with_anomaly == 0:
            raise OddspotError(f"{test.annotation_dir}: no test pixel has the anomaly class {ANOMALY_CLASS}; "
                               "anomaly scores cannot be evaluated")
        n_pixels = sum(int(r[7]) for r in rows)
        pooled = {s: part.state[f"pooled.{s}"] for s in scores}
        per_image = {s: part.state[f"per_image.{s}"] for s in scores}
        results, curves = score_results(pooled, per_image, scorer.thresholds, offsets, scores)
        image, image_curves = image_summary(model, decision, np.asarray([bool(r[1]) for r in rows], bool),
                                            np.asarray([r[2] for r in rows], np.float64))
        t_metrics = part.extra.get("metric_seconds", 0.0)
        metrics = {
            "oddspot_version": __version__,
            "run": str(run),
            "data": str(data),
            "segmentation": {"split": "validation", **seg},
            "segmentation_test": segmentation_on_test(part.state["test_confusion"].matrix, k, len(rows)),
            "tta": TTA().to_dict(),  # Ray workers run one plain pass (the CLI refuses --scales / --flip there)
            "anomaly": anomaly_section(len(rows), n_with_anomaly, n_pixels, results),
            "image": image,
            "timing": {"validation_seconds": round(t_seg, 3), "test_seconds": round(t_test, 3),
                       "model_seconds": round(part.extra.get("model_seconds", 0.0), 3),
                       "metric_seconds": round(t_metrics, 3),
                       "score_pixels_per_second": n_pixels * len(scores) / max(t_metrics, 1e-9)},
            "skipped_files": skipped,
            "max_pixels": record_max_pixels(),
            "device": str(model.device),
            "runtime": getattr(model, "runtime", "torch"),
            **_engine_facts(actors),
        }
        write_metrics(stage, "road", metrics)
        write_csv(stage / SCORES_FILE, SCORES_HEADER, rows)
        write_json(stage / CURVES_FILE, {"score": decision, "pixel": curves, "image": image_curves})
    return {"task": "road", **metrics}


EVALUATORS: dict[str, Callable[..., dict[str, Any]]] = {
    "inspect": evaluate_inspect, "road": evaluate_road, "video": evaluate_video,
}


def evaluate(task: str, *args: Any, **kwargs: Any) -> dict[str, Any]:
    """The Ray evaluation of `task` (arguments as the task's `evaluate_*` here)."""
    if task not in EVALUATORS:
        raise OddspotError(f"task {task!r} unknown; use one of {', '.join(EVALUATORS)}")
    return EVALUATORS[task](*args, **kwargs)
