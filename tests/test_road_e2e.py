"""End to end on tiny toy streets: train (and resume), evaluate with the metrics engine, predict, CLI."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from oddspot.cli import cli
from oddspot.data.toy_streets import ToyStreetConfig, generate_toy_streets
from oddspot.errors import OddspotError
from oddspot.road.augment import AugmentConfig
from oddspot.road.checkpoint import load_tensors
from oddspot.road.evaluate import evaluate
from oddspot.road.model import ModelConfig
from oddspot.road.predict import predict
from oddspot.road.scorer import SCORE_NAMES, RoadScorer, ScoreConfig
from oddspot.road.train import TrainConfig, train

pytestmark = pytest.mark.slow

MODEL = ModelConfig(aspp_channels=16, aspp_rates=(1, 2), low_level_channels=8, decoder_channels=16, aux_channels=8)
TRAIN = TrainConfig(epochs=2, batch_size=4, lr=3e-3, freeze="stage2", warmup_steps=1, seed=3,
                    augment=AugmentConfig(crop_size=(64, 96), scale_range=(0.75, 1.5)))
SCORES = ScoreConfig(val_pixels_per_image=500, seed=3)


pytestmark = pytest.mark.usefixtures("one_thread")


class Interrupt(Exception):
    pass


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    generate_toy_streets(root, ToyStreetConfig(height=64, width=128, n_train=8, n_val=3, n_test=3, seed=1))
    return root


@pytest.fixture(scope="module")
def run(toy, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "run"
    summary = train(toy, out, MODEL, TRAIN, SCORES, log=lambda m: None)
    assert summary["epochs_run"] == 2
    return out


def test_run_folder_has_no_pickles_and_loads(run):
    names = {p.relative_to(run).as_posix() for p in run.rglob("*") if p.is_file()}
    assert {"config.json", "model.safetensors", "history.json", "state/last.safetensors", "state/last.json",
            "scores/scores.json", "scores/sml.json", "scores/fusion.json", "scores/mahalanobis.json",
            "scores/mahalanobis.safetensors", "train_summary.json"} <= names
    cfg = json.loads((run / "config.json").read_text())
    assert cfg["format_version"] == 1 and cfg["model"]["num_classes"] == 13 and cfg["seed"] == 3
    assert not any(k.startswith("aux_head.") for k in load_tensors(run / "model.safetensors"))
    scorer = RoadScorer.load(run)
    assert set(scorer.thresholds) == set(SCORE_NAMES)
    assert scorer.mahalanobis.counts and scorer.fusion.n_fit == 3 * 500


def test_resume_continues_exactly(toy, run, tmp_path):
    out = tmp_path / "resumed"

    def stop_after_first(msg):
        if msg.startswith("epoch 1/"):
            raise Interrupt

    with pytest.raises(Interrupt):
        train(toy, out, MODEL, TRAIN, SCORES, log=stop_after_first)
    with pytest.raises(OddspotError, match="--resume"):
        train(toy, out, MODEL, TRAIN, SCORES, log=lambda m: None)
    with pytest.raises(OddspotError, match="other options"):
        train(toy, out, MODEL, TrainConfig(epochs=3, augment=TRAIN.augment), SCORES, resume=True, log=lambda m: None)
    train(toy, out, MODEL, TRAIN, SCORES, resume=True, log=lambda m: None)
    a, b = load_tensors(run / "state" / "last.safetensors"), load_tensors(out / "state" / "last.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        torch.testing.assert_close(a[k], b[k], msg=k)


def test_class_count_mismatch_with_data(toy, tmp_path):
    with pytest.raises(OddspotError, match="13 expected"):
        train(toy, tmp_path / "x", ModelConfig(num_classes=12), TRAIN, SCORES, log=lambda m: None)


def test_evaluate_streams_every_test_pixel(run, toy, tmp_path):
    m = evaluate(run, toy, tmp_path / "eval", batch_size=2, log=lambda s: None)
    assert (tmp_path / "eval" / "metrics.json").exists()
    assert m["anomaly"]["n_pixels"] == 3 * 64 * 128
    assert 0 <= m["segmentation"]["miou"] <= 1 and len(m["segmentation"]["iou"]) == 13
    for name in SCORE_NAMES:
        r = m["anomaly"]["scores"][name]
        assert 0 <= r["pooled"]["auroc"] <= 1 and 0 <= r["pooled"]["ap"] <= 1
        assert {"fpr95_first", "fpr95_nearest"} <= set(r["pooled"])
        assert r["per_image"]["n_images"] == 3
        assert [row["offset"] for row in r["sensitivity"]] == [-1.0, -0.5, -0.25, 0.0, 0.25, 0.5, 1.0]
        assert r["threshold"]["rule"].startswith("fpr")


def test_predict_and_cli(run, toy, tmp_path):
    images = sorted((toy / "test" / "images" / "test").rglob("*.png"))
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"nope")
    rec = predict(run, [str(images[0]), str(bad)], tmp_path / "pred", score="fusion", save_scores=("fusion", "msp"),
                  log=lambda s: None)
    assert len(rec["images"]) == 1 and len(rec["skipped"]) == 1 and "broken.png" in rec["skipped"][0]
    stem = images[0].stem
    fused = np.load(tmp_path / "pred" / f"{stem}_fusion.npy")
    assert fused.shape == (64, 128) and fused.dtype == np.float32
    from PIL import Image

    panel = np.asarray(Image.open(tmp_path / "pred" / f"{stem}_panel.png"))
    assert panel.shape == (64, 5 * 128 + 8, 3)

    runner = CliRunner()
    res = runner.invoke(cli, ["road", "predict", str(run), str(images[1]), "--out", str(tmp_path / "p2"),
                              "--score", "max_logit", "--no-panels", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p2" / f"{images[1].stem}_max_logit.npy").exists()
    res = runner.invoke(cli, ["road", "predict", str(run), str(images[1]), "--out", str(tmp_path / "p3"),
                              "--score", "nonsense", "--threads", "1"])
    assert res.exit_code == 2 and "nonsense" in res.output
    res = runner.invoke(cli, ["road", "evaluate", str(run), str(tmp_path), "--out", str(tmp_path / "e"), "--threads", "1"])
    assert res.exit_code == 2 and "StreetHazards layout" in res.output
    res = runner.invoke(cli, ["road", "train", str(toy), "--out", str(tmp_path / "r"), "--num-classes", "19", "--threads", "1"])
    assert res.exit_code == 2 and "19 classes, but 13 expected" in res.output
