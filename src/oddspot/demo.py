"""`oddspot demo`: the whole inspect life cycle on real photos, offline, in a few minutes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from oddspot import inspection
from oddspot.data.demo_dataset import TEXTURES, build_demo_dataset
from oddspot.files import write_json


def run_inspect_demo(out: str | Path = "runs/demo", seed: int = 0, categories: tuple[str, ...] = TEXTURES,
                     console: Console | None = None, **dataset_options: Any) -> dict[str, Any]:
    """Generate the texture dataset, fit PatchCore per category, evaluate, write heatmaps and metrics.json."""
    console = console or Console()
    out = Path(out)
    data = out / "data"
    if not (data / "dataset.json").exists():
        console.print(f"building demo dataset in {data} ...")
        build_demo_dataset(data, categories, seed=seed, **dataset_options)
    results: dict[str, Any] = {}
    for cat in categories:
        console.print(f"[bold]{cat}[/]: fitting PatchCore ...")
        run = out / "runs" / cat
        inspection.fit(data, cat, run, seed=seed)
        results[cat] = inspection.evaluate(run, data, cat, out / "eval" / cat, bootstrap=200, seed=seed)
        inspection.predict(run, [data / cat / "test"], out / "heatmaps" / cat)
    mean = {
        "image_auroc": float(np.mean([r["image"]["auroc"] for r in results.values()])),
        "pixel_auroc": float(np.mean([r["pixel"]["auroc"] for r in results.values()])),
    }
    metrics = {"categories": results, "mean": mean, "seed": seed}
    write_json(out / "metrics.json", metrics)
    table = Table(title="oddspot demo: PatchCore on scikit-image textures")
    for col in ("category", "image AUROC", "image AP", "pixel AUROC", "AUPRO"):
        table.add_column(col, justify="right" if col != "category" else "left")
    for cat, r in results.items():
        table.add_row(cat, f"{r['image']['auroc']:.3f}", f"{r['image']['ap']:.3f}",
                      f"{r['pixel']['auroc']:.3f}", f"{r['pixel']['aupro']:.3f}")
    table.add_row("[bold]mean", f"[bold]{mean['image_auroc']:.3f}", "", f"[bold]{mean['pixel_auroc']:.3f}", "")
    console.print(table)
    from oddspot.report import write_report

    report = write_report(out, warn=lambda line: console.print(f"[yellow]{line}"))
    console.print(f"metrics: {out / 'metrics.json'}   heatmaps: {out / 'heatmaps'}   report: {report}")
    return metrics
