"""Run a study: every cell of the config, resumably; a failing cell is recorded and the rest go on.

Layout of `<out>/`:
  config.yaml            the config as run (copied)
  splits/<cat>.json      one split manifest per category, shared by every model
  shifted/               the shifted dataset (unless `shift.path` points elsewhere)
  models/...             fitted / calibrated run folders, shared between cells
  cells/<cell id>/       evaluate outputs (metrics.json, curves.json, scores.csv) and result.json
  results.csv, results.md, plots/*.png

A cell is finished when its result.json exists with status "ok" and the same spec (everything
that determines its numbers); finished cells are skipped, others (new, changed or failed) run.
"""

from __future__ import annotations

import shutil
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from oddspot import __version__
from oddspot.data.demo_dataset import build_demo_dataset
from oddspot.errors import OddspotError
from oddspot.experiments.config import SHIFT_PROTOCOLS, Cell, ExperimentConfig
from oddspot.experiments.protocols import Workspace, run_cell
from oddspot.experiments.tables import flatten_metrics, read_result, write_tables
from oddspot.files import atomic_write_text, write_json

RESULT_FILE = "result.json"
RESULT_VERSION = 1


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


def is_done(cfg: ExperimentConfig, cell: Cell) -> bool:
    """True when the cell finished with the same spec in an earlier run."""
    result = read_result(cell_folder(cfg, cell) / RESULT_FILE)
    return result is not None and result.get("status") == "ok" and result.get("spec") == cell_spec(cfg, cell)


def cell_status(cfg: ExperimentConfig) -> Iterator[tuple[Cell, str]]:
    """(cell, "done" | "failed" | "pending") for every cell of the config."""
    for cell in cfg.cells:
        result = read_result(cell_folder(cfg, cell) / RESULT_FILE)
        if is_done(cfg, cell):
            yield cell, "done"
        elif result is not None and result.get("status") == "error" and result.get("spec") == cell_spec(cfg, cell):
            yield cell, "failed"
        else:
            yield cell, "pending"


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


def run_experiment(cfg: ExperimentConfig, echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """Run every unfinished cell, then write results.csv / results.md and the plots."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cfg.path, cfg.out / "config.yaml")
    ws = prepare_data(cfg, echo)
    ok = skipped = failed = 0
    t_start = time.perf_counter()
    for i, cell in enumerate(cfg.cells, 1):
        where = f"[{i}/{len(cfg.cells)}] {cell.cell_id}"
        folder = cell_folder(cfg, cell)
        if is_done(cfg, cell):
            skipped += 1
            ok += 1
            echo(f"{where}: done earlier, skipped")
            continue
        t0 = time.perf_counter()
        spec = cell_spec(cfg, cell)
        try:
            facts = run_cell(ws, cell, folder)
        except Exception as exc:  # a failing cell is recorded, the study goes on
            failed += 1
            message = f"{type(exc).__name__}: {exc}".splitlines()[0]
            folder.mkdir(parents=True, exist_ok=True)
            atomic_write_text(folder / "error.txt", traceback.format_exc())
            write_json(folder / RESULT_FILE, {"result_version": RESULT_VERSION, "status": "error", "spec": spec,
                                              "error": message, "oddspot_version": __version__})
            echo(f"{where}: FAILED ({message}); details in {folder / 'error.txt'}")
            continue
        metrics = facts.pop("metrics")
        (folder / "error.txt").unlink(missing_ok=True)
        write_json(folder / RESULT_FILE, {
            "result_version": RESULT_VERSION, "status": "ok", "spec": spec, "error": None,
            "oddspot_version": __version__, "cell_seconds": round(time.perf_counter() - t0, 3),
            **facts, "values": flatten_metrics(metrics)})
        ok += 1
        echo(f"{where}: image AUROC {metrics['image']['auroc']:.4f} ({time.perf_counter() - t0:.1f} s)")
    results = [(cell, read_result(cell_folder(cfg, cell) / RESULT_FILE)) for cell in cfg.cells]
    paths = write_tables(cfg, results)
    try:
        from oddspot.experiments.plots import write_plots

        paths["plots"] = write_plots(cfg, results, lambda c: cell_folder(cfg, c))
    except Exception as exc:  # a plot must not lose the tables
        echo(f"plots skipped: {type(exc).__name__}: {exc}")
        paths["plots"] = []
    echo(f"finished in {time.perf_counter() - t_start:.1f} s: {paths['results_md']}")
    return {"ok": ok, "skipped": skipped, "failed": failed, **{k: str(v) if isinstance(v, Path) else v for k, v in paths.items()}}
