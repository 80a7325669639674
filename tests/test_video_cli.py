"""End-to-end through the CLI: generate -> video fit -> video evaluate; errors are one line, exit 2."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from oddspot.cli import cli


@pytest.mark.slow
def test_generate_fit_evaluate(tmp_path):
    runner = CliRunner()
    data, run, out = tmp_path / "data", tmp_path / "run", tmp_path / "eval"
    r = runner.invoke(cli, ["video", "generate", str(data), "--seed", "2", "--train-videos", "1", "--test-videos", "2",
                            "--frames", "64", "--size", "48x64"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(cli, ["video", "fit", str(data), "--out", str(run), "--model", "motion", "--size", "48x64",
                            "--coreset-ratio", "0.25", "--sigma", "1"])
    assert r.exit_code == 0, r.output
    meta = json.loads((run / "model.json").read_text())
    assert meta["kind"] == "motion" and meta["config"]["seed"] == 0 and meta["config"]["coreset_ratio"] == 0.25
    assert (run / "weights.safetensors").exists()
    r = runner.invoke(cli, ["video", "evaluate", str(run), str(data), "--out", str(out), "--skip-first", "4"])
    assert r.exit_code == 0, r.output
    ev = json.loads((out / "evaluation.json").read_text())
    assert ev["skip_first"] == 4 and ev["frames"] == 2 * (64 - 4)
    assert 0.0 <= ev["micro_auroc"] <= 1.0 and set(ev["per_video"]) == {"01", "02"}
    assert ev["protocol"] == "trained" and ev["detector"] == "motion"
    assert (out / "score_curves.png").stat().st_size > 0
    legacy = runner.invoke(cli, ["video", "evaluate", str(run), str(data), "--out", str(tmp_path / "legacy"),
                                 "--protocol", "legacy_minmax_per_video"])
    assert legacy.exit_code == 0 and "legacy_minmax_per_video" in legacy.output


def test_errors_are_one_line(tmp_path):
    runner = CliRunner()
    r = runner.invoke(cli, ["video", "fit", str(tmp_path / "missing"), "--out", str(tmp_path / "run")])
    assert r.exit_code == 2
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and "missing" in lines[0]
    r = runner.invoke(cli, ["video", "evaluate", str(tmp_path / "norun"), str(tmp_path), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "model.json" in r.output
    (tmp_path / "training" / "frames").mkdir(parents=True)
    r = runner.invoke(cli, ["video", "fit", str(tmp_path), "--out", str(tmp_path / "run"), "--size", "big"])
    assert r.exit_code == 2 and "HEIGHTxWIDTH" in r.output
