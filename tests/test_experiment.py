"""Experiment runner: config checks, grid expansion, tables, resume after an interrupted run,
reproducibility, failing cells recorded while the others go on."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from oddspot.errors import OddspotError
from oddspot.experiments import runner
from oddspot.experiments.config import load_config
from oddspot.experiments.runner import cell_status, run_experiment
from oddspot.experiments.tables import flatten_metrics, recovery_lines


def write_config(folder: Path, data: Path, **overrides) -> Path:
    cfg = {
        "name": "test study",
        "out": "out",
        "seed": 0,
        "bootstrap": 20,
        "data": {"path": str(data)},
        "shift": {"severity": "severe", "seed": 1},
        "categories": ["brick"],
        "protocols": ["clean", "shift-none", "shift-threshold", "global"],
        "detectors": {"patchcore": {"image_size": 64, "coreset_ratio": 0.25, "batch_size": 4}},
        "ablations": [{"name": "broken", "detector": "no-such-detector", "grid": {"alpha": [1]}}],
    }
    cfg.update(overrides)
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_grid_expansion_and_cell_ids(tmp_path):
    path = write_config(tmp_path, tmp_path / "data", categories=["a", "b"], protocols=["clean", "shift-refit"],
                        ablations=[{"name": "coreset", "grid": {"coreset_ratio": [0.01, 0.05, 0.1], "num_neighbors": [1, 3]}},
                                   {"name": "agg", "grid": {"scoring": ["max", "topk_mean", "reweighted"]},
                                    "protocols": ["clean", "shift-none"], "categories": ["a"]}])
    cfg = load_config(path)
    ids = [c.cell_id for c in cfg.cells]
    assert len(ids) == 2 * 2 + 3 * 2 * 2 + 3 * 2 * 1
    assert "main/shift-refit/patchcore/default/b" in ids
    assert "coreset/clean/patchcore/coreset_ratio=0.01,num_neighbors=3/a" in ids
    cell = next(c for c in cfg.cells if c.cell_id == "agg/shift-none/patchcore/scoring=topk_mean/a")
    # ablation values override the detector's base options, which are kept
    assert cell.option_dict == {"image_size": 64, "coreset_ratio": 0.25, "batch_size": 4, "scoring": "topk_mean"}
    assert cfg.out == (tmp_path / "out").resolve() and cfg.shift["path"] == cfg.out / "shifted"


@pytest.mark.parametrize("override, message", [
    ({"protocolz": ["clean"]}, "unknown key"),
    ({"protocols": ["clean", "shift-sideways"]}, "unknown protocol"),
    ({"shift": {"severity": "apocalyptic"}}, "shift.severity"),
    ({"ablations": [{"name": "x", "grid": {"coreset_ratio": 0.1}}]}, "non-empty lists"),
    ({"ablations": [{"name": "x", "grid": {"k": [1]}}, {"name": "x", "grid": {"k": [2]}}]}, "unique"),
    ({"seed": -1}, "seed"),
    ({"detectors": {"patchcore": {"coreset_ratio": "0.1"}}}, "detectors.patchcore`: coreset_ratio"),
    ({"ablations": [{"name": "x", "grid": {"image_size": [64, 8]}}]}, "ablations.0.`: image_size"),
    ({"ablations": [{"name": "x", "grid": {"num_neighbours": [1]}}]}, "unknown option"),
])
def test_bad_config_is_one_line_error_naming_the_file(tmp_path, override, message):
    path = write_config(tmp_path, tmp_path / "data", **override)
    with pytest.raises(OddspotError, match=message) as info:
        load_config(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)


def test_flatten_metrics_keeps_scalars_and_cis():
    metrics = {"image": {"auroc": 0.9, "ci": {"auroc": [0.8, 0.95], "level": 0.95, "n": 20, "method": "percentile"},
                         "at_threshold": {"f1": 0.5, "tp": 3}, "error_bound": {"auroc": 0.0}},
               "pixel": {"aupro": 0.7, "per_image": {"auroc": 0.88}}, "breakdowns": {"x": 1}}
    flat = flatten_metrics(metrics)
    assert flat == {"image_auroc": 0.9, "image_auroc_ci_lo": 0.8, "image_auroc_ci_hi": 0.95, "image_ci_level": 0.95,
                    "image_ci_n": 20, "image_at_threshold_f1": 0.5, "image_at_threshold_tp": 3, "pixel_aupro": 0.7,
                    "pixel_per_image_auroc": 0.88}


def test_recovery_statement_says_what_recovers_what():
    def row(protocol, auroc, f1):
        return {"group": "main", "detector": "patchcore", "category": "grass", "protocol": protocol, "status": "ok",
                "image_auroc": auroc, "image_at_threshold_f1": f1, "pixel_auroc": 0.9}

    rows = [row("clean", 0.95, 0.9), row("shift-none", 0.75, 0.4), row("shift-threshold", 0.75, 0.6),
            row("shift-refit", 0.85, 0.7)]
    text = "\n".join(recovery_lines(rows))
    assert "image AUROC by -0.200" in text and "recovering 50% of the AUROC lost" in text
    assert "changes F1 by +0.200" in text
    assert "loses image AUROC against clean on 1 of 1" in text and "shift-refit raises image AUROC over shift-none on 1 of 1" in text


def read_rows(path: Path) -> dict[str, dict[str, str]]:
    with path.open() as fh:
        return {r["cell_id"]: r for r in csv.DictReader(fh)}


TIMING = {"fit_seconds", "predict_seconds"}


@pytest.mark.slow
def test_resume_after_interruption_reproduces_and_skips(tiny_mvtec, tmp_path, monkeypatch):
    path = write_config(tmp_path, tiny_mvtec)
    cfg = load_config(path)
    assert len(cfg.cells) == 5

    real_run_cell = runner.run_cell
    calls: list[str] = []

    def interrupted(ws, cell, out):
        if len(calls) == 2:
            raise KeyboardInterrupt  # the user pressed Ctrl-C during the third cell
        calls.append(cell.cell_id)
        return real_run_cell(ws, cell, out)

    monkeypatch.setattr(runner, "run_cell", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_experiment(cfg, echo=lambda m: None)
    status = dict((c.cell_id, s) for c, s in cell_status(cfg))
    assert list(status.values()) == ["done", "done", "pending", "pending", "pending"]
    first = {cid: (cfg.out / "cells" / cid / "result.json").read_bytes() for cid in calls}

    resumed: list[str] = []

    def counting(ws, cell, out):
        resumed.append(cell.cell_id)
        return real_run_cell(ws, cell, out)

    monkeypatch.setattr(runner, "run_cell", counting)
    summary = run_experiment(cfg, echo=lambda m: None)
    assert resumed == [c.cell_id for c in cfg.cells[2:]]  # finished cells skipped
    assert summary["skipped"] == 2 and summary["failed"] == 1 and summary["ok"] == 4
    assert all((cfg.out / "cells" / cid / "result.json").read_bytes() == first[cid] for cid in calls)

    # the failing cell is recorded with its error, the others went on; it is retried next time
    rows = read_rows(cfg.out / "results.csv")
    broken = rows["broken/clean/no-such-detector/alpha=1/brick"]
    assert broken["status"] == "error" and "no-such-detector" in broken["error"]
    assert all(r["status"] == "ok" for cid, r in rows.items() if cid != broken["cell_id"])
    md = (cfg.out / "results.md").read_text()
    assert "## Failed cells" in md and "no-such-detector" in md and "## What the shift costs" in md
    assert dict((c.cell_id, s) for c, s in cell_status(cfg))[broken["cell_id"]] == "failed"

    # threshold columns come from the calibration; shift-threshold re-fits it on shifted validation data
    clean, none, thr = (rows[f"main/{p}/patchcore/default/brick"] for p in ("clean", "shift-none", "shift-threshold"))
    assert clean["image_threshold"] == none["image_threshold"] != thr["image_threshold"]
    assert none["image_auroc"] == thr["image_auroc"]  # same model, same scores: AUROC cannot change
    assert math.isfinite(float(clean["image_auroc_ci_lo"])) and int(clean["memory_bank_size"]) > 0
    for name in ("protocols_patchcore.png", "roc_patchcore.png"):
        assert (cfg.out / "plots" / name).stat().st_size > 1000
    # the split manifest is written once and shared by every model folder
    split = json.loads((cfg.out / "splits" / "brick.json").read_text())
    for model_split in (cfg.out / "models").rglob("split.json"):
        assert json.loads(model_split.read_text()) == split

    # a fresh run of the same config elsewhere gives the same numbers
    fresh = run_experiment(load_config(path, tmp_path / "again"), echo=lambda m: None)
    assert fresh["skipped"] == 0
    again = read_rows(tmp_path / "again" / "results.csv")
    for cid, r in rows.items():
        same = {k: v for k, v in r.items() if k not in TIMING and k != "error"}
        assert same == {k: v for k, v in again[cid].items() if k not in TIMING and k != "error"}

    # changing what determines a cell's numbers makes it pending again
    changed = load_config(write_config(tmp_path, tiny_mvtec, bootstrap=21))
    assert {s for _, s in cell_status(changed)} == {"pending"}


def test_cli_experiment_list_and_errors(tiny_mvtec, tmp_path):
    from oddspot.cli import cli

    path = write_config(tmp_path, tiny_mvtec)
    result = CliRunner().invoke(cli, ["experiment", str(path), "--list"])
    assert result.exit_code == 0, result.output
    assert "pending  main/clean/patchcore/default/brick" in result.output
    missing = write_config(tmp_path, tmp_path / "nowhere")
    bad = CliRunner().invoke(cli, ["experiment", str(missing)])
    assert bad.exit_code == 2 and "nowhere" in bad.output and "data.build_demo" in bad.output


def test_example_configs_parse():
    root = Path(__file__).resolve().parents[1] / "examples"
    study = load_config(root / "shift_study.yaml")
    protocols = {c.protocol for c in study.cells if c.group == "main"}
    assert protocols == {"clean", "shift-none", "shift-threshold", "shift-refit", "global"}
    assert {c.category for c in study.cells} == {"brick", "grass", "gravel"}
    assert sorted({c.setting for c in study.cells if c.group == "coreset"}) == [
        "coreset_ratio=0.01", "coreset_ratio=0.05", "coreset_ratio=0.1"]
    ablations = load_config(root / "ablations.yaml")
    groups = {c.group for c in ablations.cells}
    assert groups == {"main", "coreset", "layers", "aggregation", "image_size", "neighbours", "padim_channels"}
