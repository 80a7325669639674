"""Run a road study: every cell of a `RoadStudyConfig`, resumably; a failing cell is recorded and the rest go on.

Layout of `<out>/`:
  config.yaml                    the config as run (copied)
  models/<hash>/                 one fitted road model per distinct option set (with its training
                                 state: an interrupted fit resumes), shared by cells with equal options
  cells/<group>/<setting>/seed=<s>/eval/   the evaluation record (`oddspot road evaluate`'s files)
  cells/<group>/<setting>/seed=<s>/result.json
  results.csv, results.md        one row per cell and score; mean +- std over seeds

A cell is finished when its result.json has status "ok" and the same spec (options, seed, data,
scores); finished cells are skipped, others run. The test split is read by evaluation only.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from oddspot.experiments.cells import RESULT_FILE, cell_state, run_cells
from oddspot.experiments.config import spec_hash
from oddspot.experiments.road_config import RoadCell, RoadStudyConfig
from oddspot.experiments.road_tables import write_road_tables
from oddspot.experiments.tables import read_result

SCORE_KEYS = ("auroc", "ap", "fpr95_first", "fpr95_nearest")


def road_cell_spec(cfg: RoadStudyConfig, cell: RoadCell) -> dict[str, Any]:
    """Everything that determines a road cell's numbers (a change re-runs the cell)."""
    return {"task": "road", "group": cell.group, "setting": cell.setting, "seed": cell.seed, "options": cell.options,
            "data": str(cfg.data), "scores": list(cfg.scores)}


def road_cell_folder(cfg: RoadStudyConfig, cell: RoadCell) -> Path:
    return cfg.out / "cells" / cell.group / cell.setting / f"seed={cell.seed}"


def model_folder(cfg: RoadStudyConfig, cell: RoadCell) -> Path:
    """The fitted model of the cell's options: keyed by the options and data, so equal cells share it."""
    return cfg.out / "models" / spec_hash({"options": cell.options, "data": str(cfg.data)})


def road_cell_status(cfg: RoadStudyConfig) -> Iterator[tuple[RoadCell, str]]:
    """(cell, "done" | "failed" | "pending") for every cell of the study."""
    for cell in cfg.cells:
        yield cell, cell_state(road_cell_folder(cfg, cell), road_cell_spec(cfg, cell))


def prepare_road_data(cfg: RoadStudyConfig, echo: Callable[[str], Any]) -> None:
    """Build the toy streets when the config asks for them (reused when already there with the same options)."""
    if cfg.build_demo is None:
        if not cfg.data.exists():
            from oddspot.errors import OddspotError

            raise OddspotError(f"{cfg.path}: data folder {cfg.data} not found; fix `data.path` or add `data.build_demo`")
        return
    from oddspot.data.toy_streets import ToyStreetConfig, generate_toy_streets

    echo(f"toy streets in {cfg.data} ...")
    generate_toy_streets(cfg.data, ToyStreetConfig(**cfg.build_demo))


def cell_values(metrics: dict[str, Any], scores: tuple[str, ...]) -> dict[str, Any]:
    """What a road cell's table needs from its evaluation: mIoU and, per score, pooled and per-image metrics."""
    values: dict[str, Any] = {"miou": metrics["segmentation"].get("miou"), "scores": {}}
    for name in scores:
        r = metrics["anomaly"]["scores"][name]
        values["scores"][name] = {**{k: r["pooled"].get(k) for k in SCORE_KEYS},
                                  "per_image_auroc": r["per_image"].get("auroc"),
                                  "f1_at_threshold": r["threshold"].get("f1")}
    image = metrics.get("image") or {}
    values["image_auroc"] = image.get("auroc")
    return values


def run_road_cell(cfg: RoadStudyConfig, cell: RoadCell, folder: Path, log: Callable[[str], None]) -> dict[str, Any]:
    """Fit (or reuse) the cell's model, evaluate it into folder/eval; return the facts of result.json."""
    from oddspot.road.estimator import RoadModel
    from oddspot.road.evaluate import evaluate
    from oddspot.road.train import STATE_DIR
    from oddspot.runs.contract import MODEL_FILE

    run = model_folder(cfg, cell)
    t0 = time.perf_counter()
    if (run / MODEL_FILE).exists():
        model = RoadModel.load(run, device=cfg.device)
        reused = True
    else:
        model = RoadModel(device=cfg.device, **cell.options)
        model.fit(cfg.data, run, resume=(run / STATE_DIR / "last.json").exists(), log=log)
        model.save(run)
        reused = False
    t_fit = time.perf_counter() - t0
    t1 = time.perf_counter()
    metrics = evaluate(model, cfg.data, folder / "eval", scores=cfg.scores, panels=0, run=run, log=log)
    return {"values": cell_values(metrics, cfg.scores), "model": str(run), "model_reused": reused,
            "fit_seconds": round(t_fit, 3), "evaluate_seconds": round(time.perf_counter() - t1, 3)}


def run_road_study(cfg: RoadStudyConfig, echo: Callable[[str], Any] = print) -> dict[str, Any]:
    """Run every unfinished cell, then write results.csv and results.md."""
    cfg.out.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cfg.path, cfg.out / "config.yaml")
    prepare_road_data(cfg, echo)
    t_start = time.perf_counter()

    def run(cell: RoadCell, folder: Path) -> tuple[dict[str, Any], str]:
        facts = run_road_cell(cfg, cell, folder, lambda message: None)
        return facts, f"mIoU {facts['values']['miou']:.3f}"

    counts = run_cells(cfg.cells, lambda c: c.cell_id, lambda c: road_cell_folder(cfg, c),
                       lambda c: road_cell_spec(cfg, c), run, echo)
    results = [(cell, read_result(road_cell_folder(cfg, cell) / RESULT_FILE)) for cell in cfg.cells]
    paths = write_road_tables(cfg, results)
    echo(f"finished in {time.perf_counter() - t_start:.1f} s: {paths['results_md']}")
    return {**counts, **{k: str(v) for k, v in paths.items()}}
