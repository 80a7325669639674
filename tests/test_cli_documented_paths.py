"""CLI paths the README documents, each run once: every `--calibration` strategy, `fit --model padim`
and `--model cascade`, `evaluate --report`, and the `shift-refit` protocol of `oddspot experiment`."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import torch
import yaml
from click.testing import CliRunner

from oddspot.cli import cli

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]
SMALL = {"patchcore": {"image_size": 64, "coreset_ratio": 0.25, "batch_size": 4},
         "padim": {"image_size": 64, "n_features": 20, "batch_size": 4},
         "cascade": {"gate_options": {"image_size": 32, "coreset_ratio": 0.25, "batch_size": 4},
                     "localizer_options": {"image_size": 64, "coreset_ratio": 0.25, "batch_size": 4}}}


@pytest.fixture(autouse=True)
def same_threads():
    """Each verb sets torch's thread count from --threads; give it back."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def run_cli(*args) -> object:
    result = CliRunner().invoke(cli, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def fit(data: Path, folder: Path, model: str, *extra: str) -> dict:
    config = folder.parent / f"{folder.name}.yaml"
    config.write_text(yaml.safe_dump(SMALL[model]))
    run_cli("inspect", "fit", data, "-c", "brick", "-o", folder, "--model", model, "--config", config, "--threads", "1",
            *extra)
    return json.loads((folder / "model.json").read_text())


@pytest.mark.parametrize("strategy, extra, stored", [
    ("auto", [], "f1"),  # the validation split holds defects
    ("f1", [], "f1"),
    ("synthetic", [], "synthetic"),
    ("quantile", ["--quantile", "0.9"], "quantile"),
    ("fixed", ["--threshold", "3.5", "--pixel-threshold", "2.25"], "fixed"),
])
def test_every_calibration_strategy_at_the_cli(tiny_mvtec, tmp_path, strategy, extra, stored):
    meta = fit(tiny_mvtec, tmp_path / "run", "patchcore", "--calibration", strategy, *extra)
    post = meta["postprocess"]
    assert post["strategy"] == stored
    assert json.loads((tmp_path / "run" / "run.json").read_text())["calibration"] == stored
    if strategy == "fixed":
        assert (post["image_threshold"], post["pixel_threshold"]) == (3.5, 2.25)
    if strategy == "quantile":
        assert post["details"]["quantile"] == 0.9
    run_cli("inspect", "predict", tmp_path / "run", tiny_mvtec / "brick" / "test", "-o", tmp_path / "pred", "--threads", "1")
    rows = list(csv.DictReader((tmp_path / "pred" / "scores.csv").open()))
    assert len(rows) == 9 and {"normalized", "anomalous"} <= set(rows[0])
    decided = [int(r["anomalous"]) == int(float(r["score"]) >= post["image_threshold"]) for r in rows]
    assert all(decided)


@pytest.mark.parametrize("model", ["padim", "cascade"])
def test_other_models_fit_and_evaluate_with_a_report_at_the_cli(tiny_mvtec, tmp_path, model):
    meta = fit(tiny_mvtec, tmp_path / "run", model)
    assert (meta["task"], meta["kind"]) == ("inspect", model) and meta["postprocess"]["strategy"] == "f1"
    run_cli("inspect", "evaluate", tmp_path / "run", tiny_mvtec, "-c", "brick", "-o", tmp_path / "eval",
            "--bootstrap", "0", "--gallery", "2", "--report", "--threads", "1")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert metrics["task"] == "inspect" and 0.0 <= metrics["image"]["auroc"] <= 1.0
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "data:image/png;base64" in html and "brick" in html


def test_the_shift_refit_protocol_refits_on_the_shifted_data(tiny_mvtec, tmp_path):
    study = {"name": "refit", "out": str(tmp_path / "out"), "seed": 0, "bootstrap": 0,
             "data": {"path": str(tiny_mvtec)}, "shift": {"severity": "severe", "seed": 1},
             "categories": ["brick"], "protocols": ["clean", "shift-refit"], "detectors": {"patchcore": SMALL["patchcore"]}}
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump(study))
    result = run_cli("experiment", config, "--threads", "1")
    assert "2 cells ok" in result.stdout
    rows = {r["protocol"]: r for r in csv.DictReader((tmp_path / "out" / "results.csv").open())}
    clean, refit = rows["clean"], rows["shift-refit"]
    assert clean["status"] == refit["status"] == "ok"
    assert refit["calibrated_on"] == "shifted validation" and refit["n_train"] == clean["n_train"]
    cells = tmp_path / "out" / "cells"
    refit_result = json.loads((cells / "main" / "shift-refit" / "patchcore" / "default" / "brick" / "result.json").read_text())
    clean_result = json.loads((cells / "main" / "clean" / "patchcore" / "default" / "brick" / "result.json").read_text())
    assert refit_result["model_folder"] != clean_result["model_folder"]
    assert Path(refit_result["eval_data"]).name == "shifted" and Path(clean_result["eval_data"]) == tiny_mvtec
    fitted_on = json.loads((Path(refit_result["model_folder"]) / "run.json").read_text())
    assert Path(fitted_on["data"]).resolve() == Path(refit_result["eval_data"]).resolve()
