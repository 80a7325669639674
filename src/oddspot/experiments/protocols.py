"""The five study protocols, built on the inspect task (`oddspot.inspect`: fit / recalibrate / evaluate).

- clean: fit on train, calibrate on validation, test on test (all clean data).
- shift-none: the clean model and its clean threshold, tested on the shifted test split.
- shift-threshold: the clean model, its calibration re-fitted on the shifted validation split.
- shift-refit: a model re-fitted on the shifted train split, calibrated on shifted validation.
- global: one model fitted on the union of several categories' train splits, calibrated on
  each category's validation split and tested on each category's test split.

Every model and calibration lives in a folder keyed by what made it (detector, options, data,
category), so cells that need the same model share it, and a finished folder is reused when the
study is run again. All folders of a category start from the same split manifest, written once
per category, so no split is ever regenerated.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np

from oddspot import __version__
from oddspot import inspect as task
from oddspot.data.mvtec import category_root, read_mvtec
from oddspot.data.splits import load_or_create_manifest, select
from oddspot.errors import OddspotError
from oddspot.experiments.config import Cell, ExperimentConfig, spec_hash
from oddspot.files import read_json, write_json
from oddspot.runs.contract import read_model_json

DONE_FILE = "done.json"


class Workspace:
    """Shared models, calibrations and split manifests of one study, under `<out>/`."""

    def __init__(self, cfg: ExperimentConfig) -> None:
        self.cfg = cfg
        self.out = cfg.out
        self.clean = cfg.data
        self.shifted = Path(cfg.shift["path"])

    # split manifests ---------------------------------------------------------------------------
    def split_file(self, category: str) -> Path:
        """The category's split manifest (created once from the clean data, then copied everywhere)."""
        path = self.out / "splits" / f"{category}.json"
        refs = read_mvtec(self.clean, category)
        load_or_create_manifest(path, refs, category_root(self.clean, category), self.cfg.split, self.cfg.seed)
        return path

    def _seed_split(self, folder: Path, category: str) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(self.split_file(category), folder / task.SPLIT_FILE)

    # models ------------------------------------------------------------------------------------
    def _folder(self, kind: str, cell: Cell, data_name: str, category: str, extra: dict[str, Any] | None = None) -> tuple[Path, dict[str, Any]]:
        spec = {"kind": kind, "detector": cell.detector, "options": cell.option_dict, "data": data_name,
                "category": category, "seed": self.cfg.seed, "split": self.cfg.split, **(extra or {})}
        key = spec_hash({k: v for k, v in spec.items() if k not in ("kind", "data", "category", "union")})
        # keyed by the options, not the setting's name, so equal settings of different ablations share a model
        return self.out / "models" / cell.detector / key / f"{kind}-{data_name}" / category, spec

    def _source(self, cell: Cell) -> str:
        return f"{self.cfg.path}: options of {cell.detector} in cell {cell.cell_id}"

    @staticmethod
    def _done(folder: Path, spec: dict[str, Any]) -> bool:
        path = folder / DONE_FILE
        if not path.exists():
            return False
        try:
            return read_json(path, "the cell runs again").get("spec") == spec
        except OddspotError:
            return False

    @staticmethod
    def _finish(folder: Path, spec: dict[str, Any]) -> None:
        write_json(folder / DONE_FILE, {"spec": spec, "oddspot_version": __version__})

    def _fit(self, cell: Cell, data: Path, data_name: str, category: str) -> Path:
        folder, spec = self._folder("fit", cell, data_name, category)
        if not self._done(folder, spec):
            if folder.exists():
                shutil.rmtree(folder)
            self._seed_split(folder, category)
            task.fit(data, category, folder, cell.detector, cell.option_dict, self.cfg.split, self.cfg.seed,
                     source=self._source(cell))
            self._finish(folder, spec)
        return folder

    def clean_model(self, cell: Cell) -> Path:
        """Fitted on clean train, calibrated on clean validation."""
        return self._fit(cell, self.clean, "clean", cell.category)

    def refit_model(self, cell: Cell) -> Path:
        """Fitted on shifted train, calibrated on shifted validation (same split manifest)."""
        return self._fit(cell, self.shifted, "shifted", cell.category)

    def recalibrated_model(self, cell: Cell) -> Path:
        """The clean model with its calibration re-fitted on the shifted validation split."""
        source = self.clean_model(cell)
        folder, spec = self._folder("recalibrated", cell, "shifted", cell.category)
        if not self._done(folder, spec):
            if folder.exists():
                shutil.rmtree(folder)
            task.recalibrate(source, self.shifted, cell.category, folder, seed=self.cfg.seed)
            self._finish(folder, spec)
        return folder

    def global_model(self, cell: Cell) -> Path:
        """One model on the union of the global categories' train splits, calibrated per category."""
        cats = list(self.cfg.global_categories)
        union, spec = self._folder("global", cell, "clean", "+".join(cats))
        if not self._done(union, spec):
            if union.exists():
                shutil.rmtree(union)
            images, counts = [], {}
            for cat in cats:
                root = category_root(self.clean, cat)
                refs = read_mvtec(self.clean, cat)
                manifest = read_json(self.split_file(cat), "delete the experiment's splits/ folder to redraw them")
                train = select(refs, root, manifest["train"])
                counts[cat] = len(train)
                images += task.load_images(train)
            detector = task.build_detector(cell.detector, cell.option_dict, self.cfg.seed, source=self._source(cell))
            t0 = time.perf_counter()
            detector.fit(images)
            seconds = time.perf_counter() - t0
            union.mkdir(parents=True, exist_ok=True)
            detector.save(union)
            write_json(union / task.RUN_FILE, {
                "oddspot_version": __version__, "data": str(self.clean), "categories": cats, "model": cell.detector,
                "split": self.cfg.split, "seed": self.cfg.seed, "n_train": len(images), "n_train_per_category": counts,
                "fit_seconds": round(seconds, 3)})
            self._finish(union, spec)
        folder, cal_spec = self._folder("global-calibrated", cell, "clean", cell.category, {"union": spec})
        if not self._done(folder, cal_spec):
            if folder.exists():
                shutil.rmtree(folder)
            shutil.copytree(union, folder, ignore=shutil.ignore_patterns(DONE_FILE))
            self._seed_split(folder, cell.category)
            task.recalibrate(folder, self.clean, cell.category, folder, seed=self.cfg.seed)
            self._finish(folder, cal_spec)
        return folder

    # shifted data ------------------------------------------------------------------------------
    def ensure_shifted(self) -> None:
        """Write the shifted copy of the clean data unless an identical one is already there."""
        from oddspot.data.shift import MANIFEST_FILE, read_shift_manifest, shift_dataset

        want = {k: self.cfg.shift[k] for k in ("severity", "only", "seed")}
        if (self.shifted / MANIFEST_FILE).exists():
            have = read_shift_manifest(self.shifted)
            got = {k: have.get(k) for k in want}
            if got != want or Path(have.get("source", "")).resolve() != self.clean.resolve():
                raise OddspotError(f"{self.shifted}: holds a shift of {have.get('source')} with {got}, not {want}; "
                                   "delete it or set `shift.path` to another folder")
            return
        shift_dataset(self.clean, self.shifted, want["severity"], want["only"], want["seed"])


def run_cell(ws: Workspace, cell: Cell, out: Path) -> dict[str, Any]:
    """Run one cell: get (or reuse) its model, evaluate it, return the facts of the result row."""
    data = ws.clean
    if cell.protocol == "clean":
        run = ws.clean_model(cell)
    elif cell.protocol == "shift-none":
        run, data = ws.clean_model(cell), ws.shifted
    elif cell.protocol == "shift-threshold":
        run, data = ws.recalibrated_model(cell), ws.shifted
    elif cell.protocol == "shift-refit":
        run, data = ws.refit_model(cell), ws.shifted
    elif cell.protocol == "global":
        run = ws.global_model(cell)
    else:
        raise OddspotError(f"protocol {cell.protocol!r} unknown")
    metrics = task.evaluate(run, data, cell.category, out, bootstrap=ws.cfg.bootstrap, seed=ws.cfg.seed, gallery=0)
    run_info = task.read_run_info(run)
    state = read_model_json(run)["state"]
    calibration = metrics.get("calibration") or {}
    return {
        "metrics": metrics,
        "model_folder": str(run),
        "eval_data": str(data),
        "fit_seconds": run_info.get("fit_seconds"),
        "n_train": run_info.get("n_train"),
        "predict_seconds": metrics["run"]["predict_seconds"],
        "memory_bank_size": state.get("memory_bank_size"),
        "image_threshold": calibration.get("image_threshold"),
        "pixel_threshold": calibration.get("pixel_threshold"),
        "calibration_strategy": calibration.get("strategy"),
        "calibrated_on": _calibrated_on(cell),
    }


def _calibrated_on(cell: Cell) -> str:
    return {"clean": "clean validation", "shift-none": "clean validation", "shift-threshold": "shifted validation",
            "shift-refit": "shifted validation", "global": "clean validation (per category)"}[cell.protocol]


def finite(value: Any) -> bool:
    """True for a real, finite number."""
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))
