"""The road demo: toy street data -> train -> fit scores -> evaluate (with panels), in minutes on 2 cores.

`run_road_demo(out_dir, seed)` writes out_dir/data (toy streets), out_dir/run (the fitted model and
its training state), out_dir/eval (the evaluation record: metrics.json, scores.csv, curves.json,
panels/) and out_dir/metrics.json, a summary (`"summary": true`, task "road": validation mIoU
and, per score, test pixel AUROC / AP / FPR95). A fitted model in out_dir/run is reused; an
interrupted fit is resumed.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from oddspot import __version__
from oddspot.data.toy_streets import ToyStreetConfig, generate_toy_streets
from oddspot.files import claim_folder
from oddspot.records.evaluation import write_metrics
from oddspot.road.augment import AugmentConfig
from oddspot.road.estimator import RoadConfig, RoadModel
from oddspot.road.evaluate import evaluate
from oddspot.road.model import ModelConfig
from oddspot.road.scorer import ScoreConfig
from oddspot.road.train import STATE_DIR, TrainConfig
from oddspot.runs.contract import MODEL_FILE

DEMO_DATA = dict(height=128, width=256, n_train=240, n_val=40, n_test=60, towns=2)
DEMO_MODEL = ModelConfig(aspp_channels=64, aspp_rates=(2, 4, 6), low_level_channels=32, decoder_channels=64,
                         aux_channels=48)
DEMO_TRAIN = dict(epochs=12, batch_size=8, lr=3e-3, freeze="stage2", patience=4, warmup_steps=10,
                  augment=AugmentConfig(crop_size=(128, 256), scale_range=(0.5, 2.0)))
DEMO_SCORES = dict(val_pixels_per_image=4000, sigma=1.0)
ACCEPT_MIOU = 0.6
ACCEPT_AUROC = 0.85


def demo_config(seed: int = 0, epochs: int | None = None) -> RoadConfig:
    """The demo's model, training and score options (`epochs` overrides the demo's 12)."""
    train = {**DEMO_TRAIN, **({"epochs": epochs} if epochs is not None else {})}
    return RoadConfig(model=DEMO_MODEL, train=TrainConfig(seed=seed, **train), scores=ScoreConfig(seed=seed, **DEMO_SCORES))


def run_road_demo(out_dir: Path, seed: int = 0, quiet: bool = False, device: str | None = None,
                  data_options: dict[str, Any] | None = None, epochs: int | None = None) -> dict[str, Any]:
    """Generate toy street data, fit, evaluate; write out_dir/metrics.json (the summary) and return it (prints a table).

    `data_options` (fields of `ToyStreetConfig`: height, width, n_train, ...) and `epochs` override the
    demo's data size and training length, e.g. for a demo that runs in seconds.
    """
    from rich import box
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=False, quiet=quiet)
    out_dir = claim_folder(out_dir)  # filled step by step: data and model reused, an interrupted fit resumed
    t0 = time.perf_counter()
    data = out_dir / "data"
    run = out_dir / "run"
    console.print(f"[bold]road demo[/bold]: toy street scenes -> DeepLabV3+ -> pixel anomaly scores (seed {seed})")
    generate_toy_streets(data, ToyStreetConfig(seed=seed, **{**DEMO_DATA, **(data_options or {})}))
    t_data = time.perf_counter() - t0

    def log(msg: str) -> None:
        console.print(f"  {msg}", highlight=False)

    t1 = time.perf_counter()
    if (run / MODEL_FILE).exists():
        log(f"reusing the fitted model in {run}")
        model = RoadModel.load(run, device=device)
    else:
        model = RoadModel(demo_config(seed, epochs), device=device)
        model.fit(data, run, resume=(run / STATE_DIR / "last.json").exists(), log=log)
        model.save(run)
    t_train = time.perf_counter() - t1
    t2 = time.perf_counter()
    metrics = evaluate(model, data, out_dir / "eval", run=run, log=log)
    t_eval = time.perf_counter() - t2

    scores = {}
    for name, r in metrics["anomaly"]["scores"].items():
        p = r["pooled"]
        scores[name] = {"auroc": p["auroc"], "ap": p["ap"], "fpr95": p["fpr95_first"],
                        "fpr95_nearest": p["fpr95_nearest"], "per_image_auroc": r["per_image"].get("auroc"),
                        "f1_at_threshold": r["threshold"].get("f1")}
    best = max(scores, key=lambda n: scores[n]["auroc"])
    miou = metrics["segmentation"]["miou"]
    summary = {
        "summary": True,
        "seed": seed,
        "oddspot_version": __version__,
        "miou": miou,
        "miou_split": "validation",
        "scores": scores,
        "score_split": "test (all pixels pooled)",
        "fpr95": "FPR at the first point with TPR >= 0.95 (fpr95_nearest: recall nearest 0.95)",
        "best_score": best,
        "decision_score": model.config.score,
        "acceptance": {"miou>=0.6": miou >= ACCEPT_MIOU, "auroc>=0.85": scores[best]["auroc"] >= ACCEPT_AUROC},
        "seconds": {"data": round(t_data, 1), "train_and_fit": round(t_train, 1), "evaluate": round(t_eval, 1),
                    "total": round(time.perf_counter() - t0, 1)},
        "paths": {"data": str(data), "run": str(run), "evaluation": str(out_dir / "eval"),
                  "panels": str(out_dir / "eval" / "panels")},
    }
    path = write_metrics(out_dir, "road", summary)

    table = Table(title=f"road demo: validation mIoU {miou:.3f}; test pixel anomaly scores", box=box.SIMPLE)
    for col in ("score", "AUROC", "AP", "FPR95 1st", "FPR95 near", "F1@thr"):
        table.add_column(col, justify="left" if col == "score" else "right")
    for name, s in scores.items():
        f1 = s["f1_at_threshold"]
        table.add_row(name, f"{s['auroc']:.3f}", f"{s['ap']:.3f}", f"{s['fpr95']:.3f}", f"{s['fpr95_nearest']:.3f}",
                      "n/a" if f1 is None else f"{f1:.3f}")
    console.print(table)
    console.print(f"total {summary['seconds']['total']:.0f} s; summary in {path}")
    return {"task": "road", **summary}
