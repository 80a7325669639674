"""The inspect CLI end to end on a generated fixture, and every kind of bad input."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image

from oddspot.cli import cli


def run_cli(*args: str):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def fitted_run(tiny_mvtec, small_options, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("run")
    config = run.parent / "cfg.yaml"
    config.write_text(yaml.safe_dump(small_options))
    res = run_cli("fit", tiny_mvtec, "--category", "brick", "--out", run, "--config", config)
    assert res.exit_code == 0, res.output
    return run


def test_fit_writes_model_split_and_run_info(fitted_run):
    for name in ("model.json", "memory_bank.safetensors", "split.json", "run.json"):
        assert (fitted_run / name).exists()
    assert json.loads((fitted_run / "run.json").read_text())["split"] == "validation"


def test_evaluate_writes_metrics(fitted_run, tiny_mvtec, tmp_path):
    res = run_cli("evaluate", fitted_run, tiny_mvtec, "--category", "brick", "--out", tmp_path, "--bootstrap", "50")
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert 0.0 <= m["image"]["auroc"] <= 1.0 and 0.0 <= m["pixel"]["auroc"] <= 1.0
    assert {"aupro", "ap", "fpr95_first", "f1_max"} <= set(m["pixel"])
    assert m["run"]["split"] == "validation"
    split = json.loads((fitted_run / "split.json").read_text())
    assert m["run"]["n_test"] == len(split["test"])


def test_standard_split_evaluates_all_test_images(fitted_run, tiny_mvtec, tmp_path):
    res = run_cli("evaluate", fitted_run, tiny_mvtec, "--category", "brick", "--out", tmp_path, "--split", "standard", "--bootstrap", "0")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "metrics.json").read_text())["run"]["n_test"] == 9


def test_predict_writes_scores_heatmaps_maps_and_skips_bad_file(fitted_run, tiny_mvtec, tmp_path):
    inputs = tmp_path / "in"
    shutil.copytree(tiny_mvtec / "brick" / "test", inputs)
    (inputs / "good" / "zz_broken.png").write_bytes(b"not an image")
    single = tiny_mvtec / "brick" / "train" / "good" / "000.png"
    out = tmp_path / "out"
    res = run_cli("predict", fitted_run, inputs, single, "--out", out, "--save-maps")
    assert res.exit_code == 0, res.output
    assert "zz_broken.png" in res.output
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert len(rows) == 10 and {"path", "score", "normalized", "anomalous"} == set(rows[0])
    assert (out / "masks" / "good" / "000.png.png").exists()
    assert not any("zz_broken" in r["path"] for r in rows)
    assert (out / "heatmaps" / "good" / "000.png.png").exists() and (out / "heatmaps" / "000.png.png").exists()
    amap = np.load(out / "maps" / "good" / "000.png.npy")
    assert amap.dtype == np.float32 and amap.shape == (64, 64)
    assert "zz_broken.png" in (out / "errors.csv").read_text()


def _bad_input_cases(tiny_mvtec: Path, run: Path, tmp: Path):
    empty = tmp / "empty"
    (empty / "c" / "train" / "good").mkdir(parents=True)
    trunc = tmp / "trunc"
    shutil.copytree(tiny_mvtec, trunc)
    victim = trunc / "brick" / "train" / "good" / "003.png"
    victim.write_bytes(victim.read_bytes()[:60])
    wrong = tmp / "wrongmask"
    shutil.copytree(tiny_mvtec, wrong)
    mask = next((wrong / "brick" / "ground_truth").rglob("*_mask.png"))
    Image.fromarray(np.zeros((10, 12), np.uint8)).save(mask)
    return {
        "missing path": (["fit", tmp / "nope", "-c", "brick", "-o", tmp / "r1"], "nope"),
        "empty train": (["fit", empty, "-c", "c", "-o", tmp / "r2"], "no training images"),
        "unknown category": (["fit", tiny_mvtec, "-c", "carpet", "-o", tmp / "r3"], "carpet"),
        "truncated image": (["fit", trunc, "-c", "brick", "-o", tmp / "r4"], "003.png"),
        "mask size": (["evaluate", run, wrong, "-c", "brick", "-o", tmp / "e1", "--split", "standard"], mask.name),
        "unknown option": (["fit", tiny_mvtec, "-c", "brick", "-o", tmp / "r5", "--coreset", "0.1"], "--coreset"),
        "bad config key": (["fit", tiny_mvtec, "-c", "brick", "-o", tmp / "r6", "--config", tmp / "bad.yaml"], "corset_ratio"),
        "not a run": (["predict", tmp, tiny_mvtec, "-o", tmp / "p"], "model.json"),
    }


def test_bad_inputs_give_one_line_error_and_exit_2(tiny_mvtec, fitted_run, tmp_path):
    (tmp_path / "bad.yaml").write_text("corset_ratio: 0.1\n")
    for name, (args, needle) in _bad_input_cases(tiny_mvtec, fitted_run, tmp_path).items():
        proc = subprocess.run([sys.executable, "-m", "oddspot", *map(str, args)], capture_output=True, text=True)
        assert proc.returncode == 2, (name, proc.stdout, proc.stderr)
        assert "Traceback" not in proc.stderr, name
        assert needle in proc.stderr, (name, proc.stderr)
        lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
        assert len(lines) <= 3, (name, proc.stderr)


def test_every_verb_has_help():
    for verb in ("fit", "predict", "evaluate", "demo"):
        res = run_cli(verb, "--help")
        assert res.exit_code == 0 and "Usage" in res.output
