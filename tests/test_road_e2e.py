"""End to end on tiny toy streets: fit (CLI, YAML options) and resume, evaluate into one record, predict."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from safetensors.numpy import load as st_load
from safetensors.torch import load_file as load_torch_tensors

from oddspot.cli import cli
from oddspot.data.image_io import read_image
from oddspot.data.toy_streets import ToyStreetConfig, generate_toy_streets
from oddspot.errors import OddspotError
from oddspot.records.evaluation import read_metrics
from oddspot.road.estimator import RoadConfig, RoadModel
from oddspot.road.evaluate import evaluate
from oddspot.road.model import ModelConfig
from oddspot.road.predict import predict
from oddspot.road.scorer import SCORE_NAMES

YAML = """\
model: {aspp_channels: 16, aspp_rates: [1, 2], low_level_channels: 8, decoder_channels: 16, aux_channels: 8}
train:
  epochs: 2
  batch_size: 4
  lr: 0.003
  freeze: stage2
  warmup_steps: 1
  augment: {crop_size: [64, 96], scale_range: [0.75, 1.5]}
scores: {val_pixels_per_image: 500}
"""

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


class Interrupt(Exception):
    pass


def quiet(message: str) -> None:
    pass


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    generate_toy_streets(root, ToyStreetConfig(height=64, width=128, n_train=8, n_val=3, n_test=3, seed=1))
    return root


@pytest.fixture(scope="module")
def options(tmp_path_factory):
    path = tmp_path_factory.mktemp("cfg") / "road.yaml"
    path.write_text(YAML)
    return path


@pytest.fixture(scope="module")
def run(toy, options, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    res = CliRunner().invoke(cli, ["road", "fit", str(toy), "--out", str(out), "--config", str(options), "--seed", "3",
                                   "--threads", "1", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert "best validation mIoU" in res.output
    return out


def config() -> RoadConfig:
    import yaml

    from oddspot.configs import from_mapping

    values = yaml.safe_load(YAML)
    values["train"]["seed"] = values["scores"]["seed"] = 3
    return from_mapping(RoadConfig, values, "test")


def test_run_folder_is_one_record(run):
    names = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
    assert names == {"model.json", "model.safetensors", "history.json", "state/last.safetensors", "state/last.json",
                     "state/best.safetensors"}
    meta = json.loads((run / "model.json").read_text())
    assert meta["config"]["train"]["seed"] == 3 and meta["config"]["scores"]["seed"] == 3
    assert meta["config"]["model"]["num_classes"] == 13 and meta["state"]["best"]["epoch"] in (1, 2)
    assert meta["state"]["training"]["epochs_run"] == 2 and len(meta["state"]["classes"]) == 13
    assert set(meta["postprocess"]["thresholds"]) == set(SCORE_NAMES)
    assert meta["postprocess"]["fusion"]["n_fit_pixels"] == 3 * 500
    assert meta["postprocess"]["image"]["rule"].startswith("quantile 0.95")
    tensors = st_load((run / "model.safetensors").read_bytes())
    assert not any(k.startswith("network.aux_head.") for k in tensors)
    model = RoadModel.load(run, device="cpu")
    assert model.scorer.mahalanobis.counts and model.config == config()


def test_resume_continues_exactly(toy, run, options, tmp_path):
    """An interrupted fit continued with `oddspot road fit --resume` ends bit for bit as the uninterrupted one."""
    out = tmp_path / "resumed"

    def stop_after_first(msg):
        if msg.startswith("epoch 1/"):
            raise Interrupt

    with pytest.raises(Interrupt):
        RoadModel(config(), device="cpu").fit(toy, out, log=stop_after_first)
    with pytest.raises(OddspotError, match="--resume"):
        RoadModel(config(), device="cpu").fit(toy, out, log=quiet)
    other = RoadModel(config(), device="cpu", train={**config().train.to_dict(), "epochs": 3})
    with pytest.raises(OddspotError, match="other options"):
        other.fit(toy, out, resume=True, log=quiet)
    res = CliRunner().invoke(cli, ["road", "fit", str(toy), "--out", str(out), "--config", str(options), "--seed", "3",
                                   "--threads", "1", "--device", "cpu", "--resume"])
    assert res.exit_code == 0, res.output
    for name in ("state/last.safetensors", "model.safetensors"):
        a, b = load_torch_tensors(run / name), load_torch_tensors(out / name)
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]), (name, k)
    assert json.loads((run / "model.json").read_text())["postprocess"] == json.loads((out / "model.json").read_text())["postprocess"]


def test_early_stopping_keeps_the_best_weights(toy, tmp_path):
    """patience 1: the first epoch without a validation mIoU gain ends training; the best epoch's weights are kept."""
    values = config().to_dict()
    values["train"].update(epochs=6, patience=1, lr=1e-9)  # no learning: epoch 2 cannot beat epoch 1
    model = RoadModel(device="cpu", **values).fit(toy, tmp_path / "run", log=quiet)
    training = model.state["training"]
    assert training["stopped_early"] is True and training["epochs_run"] == 2 and model.state["best"]["epoch"] == 1
    history = json.loads((tmp_path / "run" / "history.json").read_text())["epochs"]
    assert [h["epoch"] for h in history] == [1, 2] and history[1]["miou"] <= history[0]["miou"]
    best = load_torch_tensors(tmp_path / "run" / "state" / "best.safetensors")
    weights = model.network.state_dict()
    assert best and all(torch.equal(weights[k].cpu(), t) for k, t in best.items())


def test_class_count_mismatch_with_data(toy, tmp_path):
    with pytest.raises(OddspotError, match="13 expected"):
        RoadModel(RoadConfig(model=ModelConfig(num_classes=12))).fit(toy, tmp_path / "x", log=quiet)


def test_evaluate_writes_one_record(run, toy, tmp_path):
    model = RoadModel.load(run, device="cpu")
    out = tmp_path / "eval"
    m = evaluate(model, toy, out, batch_size=2, panels=2, run=run, log=quiet)
    assert read_metrics(out, task="road")["anomaly"]["n_pixels"] == m["anomaly"]["n_pixels"] == 3 * 64 * 128
    assert 0 <= m["segmentation"]["miou"] <= 1 and len(m["segmentation"]["iou"]) == 13
    for name in SCORE_NAMES:
        r = m["anomaly"]["scores"][name]
        assert 0 <= r["pooled"]["auroc"] <= 1 and 0 <= r["pooled"]["ap"] <= 1
        assert {"fpr95_first", "fpr95_nearest"} <= set(r["pooled"])
        assert r["per_image"]["n_images"] == 3
        assert [row["offset"] for row in r["sensitivity"]] == [-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0]
        assert r["threshold"]["rule"].startswith("fpr")
    rows = list(csv.DictReader((out / "scores.csv").open()))
    assert [r["label"] for r in rows] == ["1", "1", "1"] and all(int(r["valid_pixels"]) == 64 * 128 for r in rows)
    pred = model.predict([read_image(Path(rows[0]["path"]))])
    assert float(rows[0]["score"]) == pred.scores[0] and int(rows[0]["anomalous"]) == pred.decisions[0]
    curves = json.loads((out / "curves.json").read_text())
    assert set(curves["pixel"]) == set(SCORE_NAMES) and curves["pixel"]["fusion"]["roc"]["thresholds"][0] is None
    assert len(list((out / "panels").glob("*_panel.png"))) == 2


def test_predict_and_cli(run, toy, tmp_path):
    images = sorted((toy / "test" / "images" / "test").rglob("*.png"))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"nope")
    model = RoadModel.load(run, device="cpu")
    result = predict(model, [str(images[0]), str(bad)], tmp_path / "pred", save_scores=("msp",), log=quiet)
    assert result == {"images": 1, "errors": 1, "score": "fusion", "anomalous": result["anomalous"]}
    assert result["anomalous"] in (0, 1)
    stem = images[0].stem
    fused = np.load(tmp_path / "pred" / f"{stem}_fusion.npy")
    assert fused.shape == (64, 128) and fused.dtype == np.float32
    assert (tmp_path / "pred" / f"{stem}_msp.npy").exists()
    rows = list(csv.DictReader((tmp_path / "pred" / "scores.csv").open()))
    assert list(rows[0]) == ["path", "score", "normalized", "anomalous", "flagged_pixels"] and len(rows) == 1
    errors = list(csv.DictReader((tmp_path / "pred" / "errors.csv").open()))
    assert len(errors) == 1 and "broken.png" in errors[0]["path"]
    from PIL import Image

    panel = np.asarray(Image.open(tmp_path / "pred" / f"{stem}_panel.png"))
    assert panel.shape == (64, 5 * 128 + 8, 3)

    runner = CliRunner()
    res = runner.invoke(cli, ["road", "predict", str(run), str(images[1]), "-o", str(tmp_path / "p2"),
                              "--save-score", "max_logit", "--no-panels", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p2" / f"{images[1].stem}_max_logit.npy").exists()
    assert not list((tmp_path / "p2").glob("*_panel.png"))
    res = runner.invoke(cli, ["road", "predict", str(run), str(images[1]), "--out", str(tmp_path / "p3"),
                              "--save-score", "nonsense", "--threads", "1"])
    assert res.exit_code == 2 and "nonsense" in res.output
    (tmp_path / "flat").mkdir()
    res = runner.invoke(cli, ["road", "evaluate", str(run), str(tmp_path / "flat"), "--out", str(tmp_path / "e"),
                              "--threads", "1"])
    assert res.exit_code == 2 and "StreetHazards layout" in res.output
    res = runner.invoke(cli, ["road", "fit", str(toy), "--out", str(tmp_path / "r"), "--num-classes", "19", "--threads", "1"])
    assert res.exit_code == 2 and "19 classes, but 13 expected" in res.output
    res = runner.invoke(cli, ["road", "fit", str(toy), "--out", str(run), "--threads", "1"])
    assert res.exit_code == 2 and "already holds a fitted model" in res.output
