"""`oddspot video demo`: generate synthetic videos, fit both detectors, evaluate, write the records."""

from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

from rich.console import Console
from rich.table import Table

from oddspot.data.synthetic_video import EVENT_TYPES, generate_video_dataset
from oddspot.errors import OddspotError
from oddspot.files import claim_folder, read_json
from oddspot.records.evaluation import write_metrics
from oddspot.video.autoencoder import AutoencoderConfig, FrameAutoencoder
from oddspot.video.base import VideoDetector
from oddspot.video.datasets import open_video_dataset
from oddspot.video.evaluate import write_evaluation
from oddspot.video.motion import MotionConfig, MotionDetector

DEMO_DATA = {"num_train": 4, "num_test": 6, "num_frames": 200, "size": (96, 128)}


def _dataset(root: Path, seed: int, recipe: dict) -> dict:
    """Generate the demo videos, or reuse them when `root` already holds the same ones."""
    labels = root / "labels.json"
    if labels.exists():
        try:
            old = read_json(labels, "the demo data is generated again")
            same = (
                old.get("seed") == seed
                and old.get("num_frames") == recipe["num_frames"]
                and old.get("size") == list(recipe["size"])
                and len(old.get("videos", {})) == recipe["num_test"]
                and len(list((root / "training" / "frames").glob("*"))) == recipe["num_train"]
            )
        except OddspotError:
            same = False
        if same:
            return old
    return generate_video_dataset(root, seed=seed, **recipe)


def run_video_demo(out_dir: str | Path, seed: int = 0, console: Console | None = None, device: str = "cpu",
                   data_options: dict | None = None, epochs: int | None = None) -> dict:
    """Generate synthetic fixed-camera videos, fit the frame autoencoder and the motion detector on the
    training videos, evaluate both on the test videos; return the summary.

    `data_options` (keys of `DEMO_DATA`: num_train, num_test, num_frames, size) and `epochs` (the
    autoencoder's) override the demo's data size and training length, e.g. for a demo in seconds.

    Writes `data/` (the videos), `models/<name>/` (each run folder), `<name>/` (each evaluation
    record: metrics.json, scores.csv, curves.json, score_curves.png) and `metrics.json`, a summary
    (`"summary": true`, task "video") whose evaluations live in those sub-folders.
    """
    console = console or Console()
    out_dir = claim_folder(out_dir)  # filled step by step; the demo videos are reused
    started = time.perf_counter()
    data_root = out_dir / "data"
    recipe = {**DEMO_DATA, **(data_options or {})}
    summary = _dataset(data_root, seed, recipe)
    train = open_video_dataset(data_root, "train")
    test = open_video_dataset(data_root, "test")
    models: dict[str, VideoDetector] = {
        "autoencoder": FrameAutoencoder(AutoencoderConfig(size=recipe["size"], seed=seed,
                                                          **({"epochs": epochs} if epochs is not None else {})),
                                        device=device),
        "motion": MotionDetector(MotionConfig(size=recipe["size"], seed=seed), device=device),
    }
    metrics: dict = {
        "summary": True,
        "seed": seed,
        "data": {
            "root": str(data_root),
            "generator_seed": summary["seed"],
            "train_videos": len(train),
            "test_videos": len(test),
            "frames_per_video": summary["num_frames"],
            "size": summary["size"],
        },
        "protocol": "trained (smoothing, normalization and threshold fitted on held-out training frames)",
        "detectors": {},
    }
    for name, model in models.items():
        t0 = time.perf_counter()
        model.fit(train)
        fit_s = time.perf_counter() - t0
        model.save(out_dir / "models" / name)
        t0 = time.perf_counter()
        predictions = model.predict(test)
        score_s = time.perf_counter() - t0
        ev = write_evaluation(out_dir / name, predictions, test, threshold=model.post.threshold,
                              extra={"model": str(out_dir / "models" / name), "kind": name, "protocol": "trained",
                                     "skipped_videos": [], "threshold_quantile": model.post.threshold_quantile},
                              title=f"{name}: frame scores (red: anomalous frames)")
        test_frames = sum(len(v) for v in test)
        metrics["detectors"][name] = {
            "micro_auroc": ev["micro_auroc"],
            "macro_auroc": ev["macro_auroc"],
            "ap": ev["ap"],
            "per_event_type_auroc": {k: v["auroc"] for k, v in ev["per_event_type"].items()},
            "decision": {k: ev["decision"].get(k) for k in ("threshold", "precision", "recall", "f1")},
            "fit_seconds": round(fit_s, 2),
            "score_seconds": round(score_s, 2),
            "score_frames_per_second": round(test_frames / score_s, 2),
            "config": asdict(model.config),
        }
    ae, mo = metrics["detectors"]["autoencoder"], metrics["detectors"]["motion"]
    metrics["motion_beats_autoencoder"] = {
        k: bool(mo["per_event_type_auroc"].get(k, float("nan")) > ae["per_event_type_auroc"].get(k, float("nan")))
        for k in EVENT_TYPES
    }
    metrics["total_seconds"] = round(time.perf_counter() - started, 2)
    path = write_metrics(out_dir, "video", metrics)
    console.print(_table(metrics))
    console.print(f"metrics: {path}  records: {out_dir}/<detector>/  ({metrics['total_seconds']:.0f} s)")
    return metrics


def _table(metrics: dict) -> Table:
    """One row per figure, one column per detector (fits an 80-column terminal)."""
    names = list(metrics["detectors"])
    table = Table(title="video demo: synthetic test videos, frame level")
    table.add_column("")
    for name in names:
        table.add_column("frame autoencoder" if name == "autoencoder" else name, justify="right")
    rows = [("micro AUROC", "micro_auroc"), ("macro AUROC", "macro_auroc"), ("AP (micro)", "ap")]
    for label, key in rows:
        table.add_row(label, *(f"{metrics['detectors'][n][key]:.3f}" for n in names))
    for kind in EVENT_TYPES:
        table.add_row(f"AUROC {kind}", *(f"{metrics['detectors'][n]['per_event_type_auroc'].get(kind, float('nan')):.3f}" for n in names))
    f1 = [metrics["detectors"][n]["decision"]["f1"] for n in names]
    table.add_row("F1 at the threshold", *("-" if v is None else f"{v:.3f}" for v in f1))
    table.add_row("fit seconds", *(f"{metrics['detectors'][n]['fit_seconds']:.1f}" for n in names))
    table.add_row("scoring frames/s", *(f"{metrics['detectors'][n]['score_frames_per_second']:.1f}" for n in names))
    return table
