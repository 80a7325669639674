"""`oddspot <task> demo` runs end to end for every task, made tiny through the demo's own options
given in `--config` (the defaults stay the full demo of the README)."""

from __future__ import annotations

import inspect
import re

import pytest
import torch
import yaml
from click.testing import CliRunner

from oddspot.cli import cli
from oddspot.records.evaluation import read_metrics

TINY = {
    "inspect": {"category": ["brick"], "n_train": 4, "n_test_good": 2, "n_test_bad": 3, "tile": 64},
    "road": {"n_train": 6, "n_val": 2, "n_test": 2, "size": "64x128", "epochs": 1},
    "video": {"train_videos": 2, "test_videos": 1, "frames": 60, "size": "48x64", "epochs": 1},
}
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def same_threads():
    """The demo verb sets torch's thread count (--threads); the next tests keep theirs."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def _defaults(task: str) -> dict:
    """The values `oddspot <task> demo` runs with when given no option."""
    return cli.commands[task].commands["demo"].make_context("demo", []).params


def test_the_demo_options_default_to_the_full_demo():
    from oddspot.data.demo_dataset import TEXTURES, build_demo_dataset
    from oddspot.road.demo import DEMO_DATA as ROAD_DATA
    from oddspot.road.demo import DEMO_TRAIN
    from oddspot.video.autoencoder import AutoencoderConfig
    from oddspot.video.demo import DEMO_DATA as VIDEO_DATA

    dataset = {k: p.default for k, p in inspect.signature(build_demo_dataset).parameters.items()}
    got = _defaults("inspect")
    assert {k: got[k] for k in ("n_train", "n_test_good", "n_test_bad", "tile")} == \
        {k: dataset[k] for k in ("n_train", "n_test_good", "n_test_bad", "tile")}
    assert dataset["categories"] == TEXTURES and not got["categories"]  # none given: every texture
    got = _defaults("road")
    assert (got["n_train"], got["n_val"], got["n_test"], got["epochs"]) == \
        (ROAD_DATA["n_train"], ROAD_DATA["n_val"], ROAD_DATA["n_test"], DEMO_TRAIN["epochs"])
    assert got["size"] == f"{ROAD_DATA['height']}x{ROAD_DATA['width']}"
    got = _defaults("video")
    assert (got["train_videos"], got["test_videos"], got["frames"], got["epochs"]) == \
        (VIDEO_DATA["num_train"], VIDEO_DATA["num_test"], VIDEO_DATA["num_frames"], AutoencoderConfig().epochs)
    assert got["size"] == "x".join(map(str, VIDEO_DATA["size"]))


@pytest.mark.parametrize("task", sorted(TINY))
def test_a_tiny_demo_runs_end_to_end_and_writes_its_report(task, tmp_path):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(TINY[task]))
    out = tmp_path / "demo"
    result = CliRunner().invoke(cli, [task, "demo", "-o", str(out), "--config", str(config), "--seed", "3",
                                      "--threads", "1", "--device", "cpu"])
    assert result.exit_code == 0, result.output
    summary = read_metrics(out, task=task)
    assert summary["summary"] is True and summary["seed"] == 3
    report = out / "report.html"
    assert f"report: {report}" in result.stdout
    html = report.read_text()
    assert report.stat().st_size < 1_000_000 and "data:image/png;base64" in html
    assert not re.search(r"""(src|href)=["']https?://""", html), "the report must be self-contained"
    if task == "inspect":  # one category of 4 + 5 tiles of 64 px, as configured
        assert list(summary["categories"]) == ["brick"]
        assert len(list((out / "data" / "brick" / "train" / "good").iterdir())) == 4
        assert len(list((out / "data" / "brick" / "test").rglob("*.png"))) == 5
        assert 0.0 <= summary["mean"]["image_auroc"] <= 1.0
    elif task == "road":
        assert summary["seconds"]["total"] > 0 and "fusion" in summary["scores"]
        assert (out / "run" / "model.json").exists() and (out / "eval" / "metrics.json").exists()
        assert len(list((out / "data" / "test" / "images").rglob("*.png"))) == 2
    else:
        assert set(summary["detectors"]) == {"autoencoder", "motion"}
        assert summary["data"]["train_videos"] == 2 and summary["data"]["test_videos"] == 1
        assert summary["data"]["frames_per_video"] == 60 and summary["data"]["size"] == [48, 64]
        assert summary["detectors"]["autoencoder"]["config"]["epochs"] == 1
