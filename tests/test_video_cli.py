"""End-to-end through the CLI: data -> video fit -> video evaluate / predict; the verbs and their common
options; errors are one line, exit 2."""

from __future__ import annotations

import csv
import json
import shutil

import pytest
from click.testing import CliRunner

from oddspot.cli import cli
from oddspot.records.evaluation import read_metrics

VERBS = ("fit", "predict", "evaluate", "demo", "data")
COMMON = ("--out", "--config", "--seed", "--threads", "--device")


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    """A tiny synthetic dataset and a motion model fitted on it through the CLI."""
    tmp = tmp_path_factory.mktemp("video_cli")
    runner = CliRunner()
    data, run = tmp / "data", tmp / "run"
    r = runner.invoke(cli, ["video", "data", "--out", str(data), "--seed", "2", "--train-videos", "1", "--test-videos", "2",
                            "--frames", "64", "--size", "48x64"])
    assert r.exit_code == 0, r.output
    (tmp / "motion.yaml").write_text("coreset_ratio: 0.5\nsigma: 2.0\nsize: [48, 64]\nseed: 3\n")
    r = runner.invoke(cli, ["video", "fit", str(data), "-o", str(run), "--model", "motion", "--config", str(tmp / "motion.yaml"),
                            "--coreset-ratio", "0.25", "--sigma", "1", "--threads", "1"])
    assert r.exit_code == 0, r.output
    return tmp, data, run


def test_help_lists_verbs_and_common_options():
    runner = CliRunner()
    r = runner.invoke(cli, ["video", "--help"])
    assert r.exit_code == 0 and all(verb in r.output for verb in VERBS)
    for verb in VERBS:
        r = runner.invoke(cli, ["video", verb, "--help"])
        assert r.exit_code == 0 and all(option in r.output for option in COMMON), verb


@pytest.mark.slow
def test_fit_writes_the_run_contract(fitted):
    _, _, run = fitted
    meta = json.loads((run / "model.json").read_text())
    assert meta["format_version"] == 2 and meta["task"] == "video" and meta["kind"] == "motion"
    # flags override the YAML, which overrides the defaults; --seed not given: the YAML's seed stays
    assert meta["config"]["coreset_ratio"] == 0.25 and meta["config"]["sigma"] == 1.0 and meta["config"]["seed"] == 3
    assert meta["postprocess"]["threshold_quantile"] == 0.995 and isinstance(meta["postprocess"]["threshold"], float)
    assert (run / "model.safetensors").exists() and not (run / "weights.safetensors").exists()


@pytest.mark.slow
def test_evaluate_writes_the_evaluation_record(fitted):
    tmp, data, run = fitted
    runner = CliRunner()
    out = tmp / "eval"
    r = runner.invoke(cli, ["video", "evaluate", str(run), str(data), "--out", str(out), "--skip-first", "4"])
    assert r.exit_code == 0, r.output
    ev = read_metrics(out, task="video")
    assert ev["skip_first"] == 4 and ev["frames"] == 2 * (64 - 4)
    assert 0.0 <= ev["micro_auroc"] <= 1.0 and set(ev["per_video"]) == {"01", "02"}
    assert ev["protocol"] == "trained" and ev["kind"] == "motion"
    assert set(ev["decision"]) >= {"threshold", "precision", "recall", "f1"}
    rows = _rows(out / "scores.csv")
    assert len(rows) == 2 * 64 and {r["anomalous"] for r in rows} <= {"0", "1"}
    assert (out / "curves.json").exists() and (out / "score_curves.png").stat().st_size > 0
    assert not (out / "evaluation.json").exists()
    legacy = runner.invoke(cli, ["video", "evaluate", str(run), str(data), "--out", str(tmp / "legacy"),
                                 "--protocol", "legacy_minmax_per_video"])
    assert legacy.exit_code == 0 and "legacy_minmax_per_video" in legacy.output
    assert read_metrics(tmp / "legacy")["decision"]["threshold"] is None


@pytest.mark.slow
def test_predict_scores_unlabeled_frames(fitted):
    tmp, data, run = fitted
    runner = CliRunner()
    one = tmp / "unlabeled" / "cam1"
    shutil.copytree(data / "testing" / "frames" / "01", one)
    r = runner.invoke(cli, ["video", "predict", str(run), str(one), "--out", str(tmp / "p1")])
    assert r.exit_code == 0, r.output
    rows = _rows(tmp / "p1" / "scores.csv")
    assert list(rows[0]) == ["video", "frame", "path", "score", "normalized", "anomalous"]
    assert len(rows) == 64 and {r["video"] for r in rows} == {"cam1"} and rows[5]["path"].endswith("0005.png")
    assert {r["anomalous"] for r in rows} <= {"0", "1"} and _rows(tmp / "p1" / "errors.csv") == []
    # a folder of videos: one good, one without frames, one with a broken frame; the good one is still scored
    shutil.copytree(data / "testing" / "frames" / "02", tmp / "unlabeled" / "cam2")
    (tmp / "unlabeled" / "empty").mkdir()
    (tmp / "unlabeled" / "cam2" / "0003.png").write_bytes(b"not a png")
    r = runner.invoke(cli, ["video", "predict", str(run), str(tmp / "unlabeled"), "--out", str(tmp / "p2")])
    assert r.exit_code == 0, r.output
    assert {r["video"] for r in _rows(tmp / "p2" / "scores.csv")} == {"cam1"}
    errors = _rows(tmp / "p2" / "errors.csv")
    assert sorted(e["video"] for e in errors) == ["cam2", "empty"] and "0003.png" in errors[0]["error"] + errors[1]["error"]


def test_errors_are_one_line(tmp_path):
    runner = CliRunner()

    def one_line(args, *needles):
        r = runner.invoke(cli, args)
        lines = [line for line in r.output.splitlines() if line.strip()]
        assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), r.output
        assert all(n in lines[0] for n in needles), lines[0]

    data = tmp_path / "data"
    data.mkdir()
    one_line(["video", "fit", str(tmp_path / "missing"), "--out", str(tmp_path / "run")], "missing")
    one_line(["video", "evaluate", str(tmp_path / "norun"), str(data), "--out", str(tmp_path / "o")], "norun")
    one_line(["video", "predict", str(tmp_path / "norun"), str(data), "--out", str(tmp_path / "o")], "norun")
    (data / "training" / "frames").mkdir(parents=True)
    one_line(["video", "fit", str(data), "--out", str(tmp_path / "run"), "--size", "big"], "HEIGHTxWIDTH")
    one_line(["video", "fit", str(data), "--out", str(tmp_path / "run"), "--epochs", "2"], "--epochs", "autoencoder")
    (tmp_path / "bad.yaml").write_text("coreset: 0.1\n")
    one_line(["video", "fit", str(data), "--out", str(tmp_path / "run"), "--config", str(tmp_path / "bad.yaml")],
             "bad.yaml", "coreset")
    one_line(["video", "fit", str(data), "--out", str(tmp_path / "run"), "--holdout-fraction", "1.5"], "--holdout-fraction")
    one_line(["video", "data", "--out", str(tmp_path / "d"), "--frames", "10"], "--frames")
