"""The inspect CLI end to end on a generated fixture, and every kind of bad input."""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
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
    assert sorted(p.name for p in fitted_run.iterdir()) == ["model.json", "model.safetensors", "run.json", "split.json"]
    run = json.loads((fitted_run / "run.json").read_text())
    assert run["split"] == "validation" and run["seed"] == 0 and run["calibration"] == "f1"


def test_model_json_is_format_2_with_calibration_and_tensor_hash(fitted_run, small_options):
    meta = json.loads((fitted_run / "model.json").read_text())
    assert list(meta) == ["format_version", "oddspot_version", "task", "kind", "config", "state", "postprocess", "files"]
    assert (meta["format_version"], meta["task"], meta["kind"]) == (2, "inspect", "patchcore")
    assert {k: meta["config"][k] for k in small_options} == small_options and meta["config"]["seed"] == 0
    assert meta["state"]["memory_bank_size"] > 0 and meta["state"]["map_display_max"] > 0
    post = meta["postprocess"]
    assert post["strategy"] == "f1" and post["image"]["low"] <= post["image_threshold"] <= post["image"]["high"]
    assert post["pixel_threshold"] == post["pixel"]["threshold"]
    data = (fitted_run / "model.safetensors").read_bytes()
    assert meta["files"] == {"model.safetensors": {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}}


def test_evaluate_writes_the_evaluation_record(fitted_run, tiny_mvtec, tmp_path):
    res = run_cli("inspect", "evaluate", fitted_run, tiny_mvtec, "--category", "brick", "--out", tmp_path,
                  "--bootstrap", "50", "--seed", "7", "--gallery", "2")
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert list(m)[:2] == ["task", "record_version"] and m["task"] == "inspect"
    assert m["run"]["seed"] == 7 and m["calibration"]["strategy"] == "f1"
    rows = list(csv.DictReader((tmp_path / "scores.csv").open()))
    assert list(rows[0]) == ["path", "label", "defect_type", "score", "normalized", "anomalous"]
    assert len(rows) == m["run"]["n_test"] and {"image", "pixel"} <= set(json.loads((tmp_path / "curves.json").read_text()))
    gallery = json.loads((tmp_path / "gallery" / "gallery.json").read_text())
    cards = [c for g in gallery["groups"] for c in g["cards"]]
    assert cards and all((tmp_path / "gallery" / f).is_file() for c in cards for f in c["files"].values())
    assert gallery["image_threshold"] == m["calibration"]["image_threshold"]
    assert 0.0 <= m["image"]["auroc"] <= 1.0 and 0.0 <= m["pixel"]["auroc"] <= 1.0
    assert {"aupro", "ap", "fpr95_first", "f1_max"} <= set(m["pixel"])
    assert m["run"]["split"] == "validation"
    split = json.loads((fitted_run / "split.json").read_text())
    assert m["run"]["n_test"] == len(split["test"])


@pytest.fixture(scope="module")
def standard_run(tiny_mvtec, small_options, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("standard_run")
    config = run.parent / "cfg_standard.yaml"
    config.write_text(yaml.safe_dump(small_options))
    res = run_cli("fit", tiny_mvtec, "--category", "brick", "--out", run, "--config", config, "--split", "standard")
    assert res.exit_code == 0, res.output
    return run


def test_standard_split_evaluates_all_test_images(standard_run, tiny_mvtec, tmp_path):
    res = run_cli("evaluate", standard_run, tiny_mvtec, "--category", "brick", "--out", tmp_path, "--bootstrap", "0")
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "metrics.json").read_text())["run"]["n_test"] == 9


def test_standard_split_refuses_a_run_calibrated_on_test_images(fitted_run, tiny_mvtec, tmp_path):
    calibrated_on = json.loads((fitted_run / "split.json").read_text())["validation"]
    assert any(k.startswith("test/") for k in calibrated_on)
    res = run_cli("evaluate", fitted_run, tiny_mvtec, "--category", "brick", "--out", tmp_path / "e", "--split", "standard")
    assert res.exit_code == 2 and "calibrated on" in res.output and "--split standard" in res.output
    assert len(res.output.strip().splitlines()) == 1 and not (tmp_path / "e" / "metrics.json").exists()


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


def _bad_input_cases(tiny_mvtec: Path, run: Path, standard: Path, tmp: Path):
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
        "mask size": (["evaluate", standard, wrong, "-c", "brick", "-o", tmp / "e1"], mask.name),
        "unknown option": (["fit", tiny_mvtec, "-c", "brick", "-o", tmp / "r5", "--coreset", "0.1"], "--coreset"),
        "bad config key": (["fit", tiny_mvtec, "-c", "brick", "-o", tmp / "r6", "--config", tmp / "bad.yaml"], "corset_ratio"),
        "bad config value": (["inspect", "fit", tiny_mvtec, "-c", "brick", "-o", tmp / "r7", "--config", tmp / "range.yaml"],
                             "range.yaml: coreset_ratio"),
        "unknown model": (["inspect", "fit", tiny_mvtec, "-c", "brick", "-o", tmp / "r8", "--model", "knn"], "knn"),
        "not a run": (["predict", empty, tiny_mvtec, "-o", tmp / "p"], "model.json"),
    }


def test_bad_inputs_give_one_line_error_and_exit_2(tiny_mvtec, fitted_run, standard_run, tmp_path):
    (tmp_path / "bad.yaml").write_text("corset_ratio: 0.1\n")
    (tmp_path / "range.yaml").write_text("coreset_ratio: 2.0\n")
    for name, (args, needle) in _bad_input_cases(tiny_mvtec, fitted_run, standard_run, tmp_path).items():
        res = run_cli(*args)
        assert res.exit_code == 2, (name, res.output)
        lines = res.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, res.stderr)
        assert needle in lines[0], (name, res.stderr)


def test_every_verb_has_help_and_the_common_options():
    res = run_cli("inspect", "--help")
    assert res.exit_code == 0
    assert all(f"  {verb} " in res.output for verb in ("fit", "predict", "evaluate", "demo", "data")), res.output
    for verb in ("fit", "predict", "evaluate", "demo", "data"):
        res = run_cli("inspect", verb, "--help")
        assert res.exit_code == 0 and "Usage" in res.output
        assert all(opt in res.output for opt in ("--out", "--config", "--seed", "--threads", "--device")), verb


def test_top_level_verbs_are_aliases_of_inspect():
    inspect_group = cli.commands["inspect"]
    for verb in ("fit", "predict", "evaluate", "demo"):
        assert cli.commands[verb] is inspect_group.commands[verb]
    assert "data" not in cli.commands
    assert run_cli("fit", "--help").output == run_cli("inspect", "fit", "--help").output.replace("cli inspect fit", "cli fit")


def test_tampered_tensor_file_is_refused_with_one_line(fitted_run, tiny_mvtec, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(fitted_run, run)
    data = bytearray((run / "model.safetensors").read_bytes())
    data[-3] ^= 0x01  # one byte of the memory bank
    (run / "model.safetensors").write_bytes(bytes(data))
    res = run_cli("inspect", "predict", run, tiny_mvtec / "brick" / "test" / "good", "-o", tmp_path / "p")
    assert res.exit_code == 2 and res.stdout == "", res.output
    lines = res.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), res.stderr
    assert "sha256" in lines[0] and "model.safetensors" in lines[0], res.stderr


def test_data_writes_a_dataset_that_fits(tmp_path):
    res = run_cli("inspect", "data", "-o", tmp_path / "d", "-c", "gravel", "--n-train", "3", "--n-test-good", "1",
                  "--n-test-bad", "2", "--tile", "48", "--seed", "5")
    assert res.exit_code == 0, res.output
    assert len(list((tmp_path / "d" / "gravel" / "train" / "good").iterdir())) == 3
    assert json.loads((tmp_path / "d" / "dataset.json").read_text())["seed"] == 5


def test_verb_config_file_sets_option_values(standard_run, tiny_mvtec, tmp_path):
    (tmp_path / "eval.yaml").write_text("category: brick\nbootstrap: 0\ngallery: 0\nsplit: standard\n")
    res = run_cli("inspect", "evaluate", standard_run, tiny_mvtec, "-o", tmp_path / "e", "--config", tmp_path / "eval.yaml")
    assert res.exit_code == 0, res.output
    m = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert m["run"]["n_test"] == 9 and not (tmp_path / "e" / "gallery").exists()


def test_report_needs_neither_model_nor_dataset_after_evaluate(fitted_run, tiny_mvtec, tmp_path):
    run, data = tmp_path / "run", tmp_path / "data"
    shutil.copytree(fitted_run, run)
    shutil.copytree(tiny_mvtec, data)
    res = run_cli("evaluate", run, data, "-c", "brick", "-o", tmp_path / "eval", "--bootstrap", "0", "--gallery", "2")
    assert res.exit_code == 0, res.output
    shutil.rmtree(run)
    shutil.rmtree(data)
    res = run_cli("report", tmp_path / "eval")
    assert res.exit_code == 0, res.output
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "brick" in html and "data:image/png;base64" in html


def test_uncalibrated_run_evaluates_with_a_gallery_at_test_f1_thresholds(tiny_mvtec, small_options, tmp_path):
    config = tmp_path / "cfg.yaml"
    config.write_text(yaml.safe_dump(small_options))
    run = tmp_path / "run"
    res = run_cli("fit", tiny_mvtec, "-c", "brick", "-o", run, "--config", config, "--split", "standard")
    assert res.exit_code == 0, res.output
    assert json.loads((run / "model.json").read_text())["postprocess"] is None
    res = run_cli("evaluate", run, tiny_mvtec, "-c", "brick", "-o", tmp_path / "eval", "--bootstrap", "0")
    assert res.exit_code == 0, res.output
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    gallery = json.loads((tmp_path / "eval" / "gallery" / "gallery.json").read_text())
    assert gallery["image_threshold"] == metrics["image"]["f1_max_threshold"]
