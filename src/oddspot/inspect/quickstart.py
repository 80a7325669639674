"""`oddspot inspect data` and `oddspot inspect demo`: the whole inspect life cycle on real photos, offline.

`data` writes the demo's MVTec-layout texture dataset (scikit-image photos, synthetic defects);
`demo` builds it, fits PatchCore per category, evaluates, writes heatmaps and a summary
metrics.json, and prints a table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from rich.console import Console
from rich.table import Table

from oddspot.data.demo_dataset import TEXTURES, build_demo_dataset
from oddspot.files import claim_folder, staged_output
from oddspot.inspect.evaluation import GALLERY_PER_GROUP, evaluate
from oddspot.inspect.fitting import fit
from oddspot.inspect.scoring import predict
from oddspot.records.evaluation import write_metrics

DATASET_FILE = "dataset.json"


@staged_output("out")
def data(out: str | Path, seed: int = 0, categories: tuple[str, ...] = TEXTURES, **dataset_options: Any) -> Path:
    """Write the demo's texture dataset (MVTec AD layout, one category per photo) under `out`."""
    return build_demo_dataset(out, categories, seed=seed, **dataset_options)


def demo(out: str | Path = "runs/demo", seed: int = 0, categories: tuple[str, ...] = TEXTURES,
         console: Console | None = None, gallery: int = GALLERY_PER_GROUP, device: str | None = None,
         **dataset_options: Any) -> dict[str, Any]:
    """Build the texture dataset (unless present), fit and evaluate PatchCore per category, write
    heatmaps and the summary `out/metrics.json`, print the table; returns the summary."""
    console = console or Console()
    out = claim_folder(out)  # filled step by step: the dataset is reused, each sub-folder committed whole
    folder = out / "data"
    if not (folder / DATASET_FILE).exists():
        console.print(f"building demo dataset in {folder} ...")
        data(folder, seed, categories, **dataset_options)
    results: dict[str, Any] = {}

    def warn(line: str) -> None:
        console.print(f"[yellow]{line}")

    for cat in categories:
        console.print(f"[bold]{cat}[/]: fitting PatchCore ...")
        run = out / "runs" / cat
        fit(folder, cat, run, seed=seed, device=device)
        results[cat] = evaluate(run, folder, cat, out / "eval" / cat, bootstrap=200, seed=seed, gallery=gallery,
                                warn=warn, device=device)
        predict(run, [folder / cat / "test"], out / "heatmaps" / cat, warn=warn, device=device)
    mean = {
        "image_auroc": float(np.mean([r["image"]["auroc"] for r in results.values()])),
        "pixel_auroc": float(np.mean([r["pixel"]["auroc"] for r in results.values()])),
    }
    summary = {"summary": True, "categories": results, "mean": mean, "seed": seed}
    write_metrics(out, "inspect", summary)
    table = Table(title="oddspot demo: PatchCore on scikit-image textures")
    for col in ("category", "image AUROC", "image AP", "pixel AUROC", "AUPRO"):
        table.add_column(col, justify="right" if col != "category" else "left")
    for cat, r in results.items():
        table.add_row(cat, f"{r['image']['auroc']:.3f}", f"{r['image']['ap']:.3f}",
                      f"{r['pixel']['auroc']:.3f}", f"{r['pixel']['aupro']:.3f}")
    table.add_row("[bold]mean", f"[bold]{mean['image_auroc']:.3f}", "", f"[bold]{mean['pixel_auroc']:.3f}", "")
    console.print(table)
    return summary
