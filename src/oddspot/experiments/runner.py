"""Run a study: every cell of the config, resumably; a failing cell is recorded and the rest go on.

Layout of `<out>/`:
  config.yaml            the config as run (copied)
  splits/<cat>.json      one split manifest per category, shared by every model
  shifted/               the shifted dataset (unless `shift.path` points elsewhere)
  models/...             fitted / calibrated run folders, shared between cells
  cells/<cell id>/       evaluate outputs (metrics.json, curves.json, scores.csv) and result.json
  results.csv, results.md, plots/*.png

Cells run through `experiments.cells.run_cells` (resumable, one result.json each), as a road
study's do.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from oddspot.data.demo_dataset import build_demo_dataset
from oddspot.errors import OddspotError
from oddspot.experiments.cells import RESULT_FILE, cell_state, run_cells
from oddspot.experiments.config import SHIFT_PROTOCOLS, Cell, ExperimentConfig
from oddspot.experiments.protocols import Workspace, run_cell
from oddspot.experiments.road_config import RoadCell, RoadStudyConfig
from oddspot.experiments.road_runner import road_cell_status, run_road_study
from oddspot.experiments.tables import flatten_metrics, read_result, write_tables



def cell_spec(cfg: ExperimentConfig, cell: Cell) -> dict[str, Any]:
    """Everything that determines a cell's numbers (a change re-runs the cell)."""
    spec: dict[str, Any] = {
        "group": cell.group, "protocol": cell.protocol, "detector": cell.detector, "setting": cell.setting,
        "options": cell.option_dict, "category": cell.category, "seed": cfg.seed, "bootstrap": cfg.bootstrap,
        "split": cfg.split, "data": str(cfg.data),
    }
    if cell.protocol in SHIFT_PROTOCOLS:
        spec["shift"] = {k: str(v) if k == "path" else v for k, v in cfg.shift.items()}
    if cell.protocol == "global":
        spec["global_categories"] = list(cfg.global_categories)
    return spec


def cell_folder(cfg: ExperimentConfig, cell: Cell) -> Path:
    return cfg.out / "cells" / cell.cell_id


def cell_status(cfg: ExperimentConfig | RoadStudyConfig) -> Iterator[tuple[Cell | RoadCell, str]]:
    """(cell, "done" | "failed" | "pending") for every cell of the config."""
    if isinstance(cfg, RoadStudyConfig):
        yield from road_cell_status(cfg)
        return
    for cell in cfg.cells:
        yield cell, cell_state(cell_folder(cfg, cell), cell_spec(cfg, cell))


def prepare_data(cfg: ExperimentConfig, echo: Callable[[str], Any]) -> Workspace:
    """Build the demo data if the config asks for it and it is missing; write the shifted copy if needed."""
    if not cfg.data.exists():
        if cfg.build_demo is None:
            raise OddspotError(f"{cfg.path}: data folder {cfg.data} not found; fix `data.path` or add `data.build_demo`")
        echo(f"building the demo dataset in {cfg.data} ...")
        opts = dict(cfg.build_demo)
        cats = tuple(opts.pop("categories", cfg.categories))
        build_demo_dataset(cfg.data, cats, **{"seed": cfg.seed, **opts})
    ws = Workspace(cfg)
    if cfg.needs_shift():
        echo(f"shifted data: {ws.shifted} (severity {cfg.shift['severity']}, seed {cfg.shift['seed']})")
        ws.ensure_shifted()
    return ws


def run_experiment(cfg: ExperimentConfig | RoadStudyConfig, echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """Run every unfinished cell, then write results.csv / results.md and the plots (a road study: its tables)."""
    if isinstance(cfg, RoadStudyConfig):
        return run_road_study(cfg, echo)
    cfg.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cfg.path, cfg.out / "config.yaml")
    ws = prepare_data(cfg, echo)
    t_start = time.perf_counter()

    def run(cell: Cell, folder: Path) -> tuple[dict[str, Any], str]:
        facts = run_cell(ws, cell, folder)
        metrics = facts.pop("metrics")
        return {**facts, "values": flatten_metrics(metrics)}, f"image AUROC {metrics['image']['auroc']:.4f}"

    counts = run_cells(cfg.cells, lambda c: c.cell_id, lambda c: cell_folder(cfg, c), lambda c: cell_spec(cfg, c),
                       run, echo)
    results = [(cell, read_result(cell_folder(cfg, cell) / RESULT_FILE)) for cell in cfg.cells]
    paths = write_tables(cfg, results)
    try:
        from oddspot.experiments.plots import write_plots

        paths["plots"] = write_plots(cfg, results, lambda c: cell_folder(cfg, c))
    except Exception as exc:  # a plot must not lose the tables
        echo(f"plots skipped: {type(exc).__name__}: {exc}")
        paths["plots"] = []
    echo(f"finished in {time.perf_counter() - t_start:.1f} s: {paths['results_md']}")
    return {**counts, **{k: str(v) if isinstance(v, Path) else v for k, v in paths.items()}}
