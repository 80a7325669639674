"""Road studies in `oddspot experiment`: config checks, a tiny grid over seeds, mean ± std tables, resume."""

from __future__ import annotations

import csv
import json
import re
import statistics

import pytest
from click.testing import CliRunner

from oddspot.cli import cli
from oddspot.errors import OddspotError
from oddspot.experiments.config import load_config
from oddspot.experiments.road_config import RoadStudyConfig
from oddspot.experiments.road_tables import fmt_mean_std, mean_std

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = """\
task: road
name: tiny road study
out: out
seeds: [0, 1]
scores: [msp, sml_full, heat]
data:
  path: data
  build_demo: {height: 32, width: 64, n_train: 2, n_val: 1, n_test: 2, seed: 1}
base:
  model: {aspp_channels: 8, aspp_rates: [1], low_level_channels: 8, decoder_channels: 8, aux_channels: 8}
  train: {epochs: 1, batch_size: 2, freeze: stage2, warmup_steps: 1, augment: {crop_size: [32, 64]}}
  scores: {val_pixels_per_image: 200, mahalanobis_images: 2}
ablations:
  - name: augment
    grid: {augment: ["off"]}
"""


def write(tmp_path, text, name="study.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_config_builds_the_grid_and_checks_every_option(tmp_path):
    text = TINY.replace('grid: {augment: ["off"]}',
                        'grid: {augment: ["off", default], train.augment.crop_size: [[32, 64], [16, 32]]}')
    cfg = load_config(write(tmp_path, text))
    assert isinstance(cfg, RoadStudyConfig)
    ids = [c.cell_id for c in cfg.cells]
    assert len(ids) == (1 + 2 * 2) * 2 and ids[0] == "main/base/seed=0" and ids[1] == "main/base/seed=1"
    off = next(c for c in cfg.cells if c.setting == "augment=off,crop_size=16x32" and c.seed == 1)
    aug = off.options["train"]["augment"]
    assert not any(aug[k] for k in ("scale", "flip", "rotate", "colour", "blur")) and aug["crop_size"] == [16, 32]
    assert off.options["train"]["seed"] == 1 and off.options["scores"]["seed"] == 1
    assert off.options["model"]["aspp_channels"] == 8  # the base applies to every cell

    bad = {
        "unknown key(s) colour": TINY.replace("seeds: [0, 1]", "seeds: [0, 1]\ncolour: red"),
        "preset 'wild' unknown": TINY.replace('["off"]', '["wild"]'),
        "scale range": TINY.replace('["off"]', '["off"], train.augment.scale_range: [[2.0, 1.0]]'),
        "`seeds` must be": TINY.replace("seeds: [0, 1]", "seeds: [0, 0]"),
        "`scores` must list": TINY.replace("scores: [msp, sml_full, heat]", "scores: [msp, magic]"),
        "heat_reliability": TINY.replace("mahalanobis_images: 2}", "mahalanobis_images: 2, heat_reliability: x}"),
        "`task` 'video' unknown": TINY.replace("task: road", "task: video"),
    }
    for message, text in bad.items():
        with pytest.raises(OddspotError, match=re.escape(message)) as err:
            load_config(write(tmp_path, text, "bad.yaml"))
        assert "\n" not in str(err.value)


def test_mean_std_is_the_sample_statistics():
    values = [0.7, 0.9, 0.8]
    mean, std, n = mean_std(values + [float("nan"), None])
    assert n == 3 and mean == pytest.approx(statistics.mean(values)) and std == pytest.approx(statistics.stdev(values))
    assert fmt_mean_std([0.5]) == "0.500" and fmt_mean_std([]) == "–"


@pytest.mark.slow
def test_tiny_study_runs_tabulates_over_seeds_and_resumes(tmp_path):
    path = write(tmp_path, TINY)
    result = CliRunner().invoke(cli, ["experiment", str(path), "--threads", "1"])
    assert result.exit_code == 0, result.output
    out = tmp_path / "out"
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert {r["status"] for r in rows} == {"ok"} and len(rows) == 4 * 3  # 2 settings x 2 seeds x 3 scores
    md = (out / "results.md").read_text()
    for score in ("msp", "sml_full", "heat"):
        assert f"### `{score}`" in md
        mine = [float(r["auroc"]) for r in rows if r["score"] == score and r["setting"] == "base"]
        line = next(ln for ln in md[md.index(f"### `{score}`"):].splitlines() if ln.startswith("| main | base |"))
        assert f"{statistics.mean(mine):.3f} ± {statistics.stdev(mine):.3f}" in line
    miou = [json.loads((out / "cells" / "augment" / "augment=off" / f"seed={s}" / "result.json").read_text())
            ["values"]["miou"] for s in (0, 1)]
    assert fmt_mean_std(miou) in md
    metrics = json.loads((out / "cells" / "main" / "base" / "seed=0" / "eval" / "metrics.json").read_text())
    assert metrics["anomaly"]["scores"]["heat"]["threshold"]["test_normalization"] is False

    again = CliRunner().invoke(cli, ["experiment", str(path), "--threads", "1"])
    assert again.exit_code == 0 and "4 cells ok (4 already done)" in again.output
    listed = CliRunner().invoke(cli, ["experiment", str(path), "--list"])
    assert listed.output.count("done") == 4
