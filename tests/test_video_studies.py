"""Studies on fitted video models: TTA and a score power at predict/evaluate, several models in one table."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from oddspot.cli import cli
from oddspot.data.synthetic_video import generate_video_dataset
from oddspot.errors import OddspotError
from oddspot.runs.registry import load_model
from oddspot.video import pipeline
from oddspot.video.autoencoder import AutoencoderConfig, FrameAutoencoder
from oddspot.video.autoencoder_head import AutoencoderHead
from oddspot.video.datasets import open_video_dataset
from oddspot.video.motion import MotionConfig, MotionDetector
from oddspot.video.postprocess import frame_power, temporal_smooth
from oddspot.video.tta import TTA_VIEWS, apply_view

SIZE = (48, 64)


def _rows(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def _auroc(scores, labels) -> float:
    """AUROC by counting pairs (ties count half), the definition."""
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A tiny dataset and two scratch autoencoders fitted on it (seeds 0 and 1), saved as run folders."""
    torch.set_num_threads(1)
    tmp = tmp_path_factory.mktemp("studies")
    data = tmp / "data"
    generate_video_dataset(data, seed=4, num_train=1, num_test=2, num_frames=60, size=SIZE)
    folders = []
    for seed in (0, 1):
        model = FrameAutoencoder(AutoencoderConfig(size=SIZE, encoder="scratch", epochs=1, sigma=1.0, seed=seed,
                                                   batch_size=16))
        pipeline.fit(data, tmp / f"ae{seed}", model, warn=lambda _: None)
        folders.append(tmp / f"ae{seed}")
    return tmp, data, folders


def test_tta_at_evaluate_equals_a_hand_loop_over_the_views(runs):
    tmp, data, (run, _) = runs
    model = load_model(run, task="video")
    views = TTA_VIEWS["hflip"]
    m = pipeline.evaluate(run, data, tmp / "ev_tta", tta="hflip", warn=lambda _: None)
    rows = _rows(tmp / "ev_tta" / "scores.csv")
    weights = (model.config.pixel_weight, *model.config.feature_weights)
    all_scores, all_labels = [], []
    for video in open_video_dataset(data, "test"):
        frames = np.asarray(video.frames(SIZE))
        per_view = [model.component_maps(apply_view(frames, v, spatial=(1, 2))) for v in views]
        reference = np.zeros(len(frames))
        for c, w in zip(model.components, weights):
            mean_error = np.mean([pv[c].reshape(len(frames), -1).mean(axis=1) for pv in per_view], axis=0)
            reference += w * model.transforms[c](mean_error)
        got = np.array([float(r["score"]) for r in rows if r["video"] == video.video_id])
        np.testing.assert_allclose(got, reference, rtol=1e-5, atol=1e-6)
        normalized = (temporal_smooth(reference, model.config.sigma) - model.post.mean) / model.post.std
        all_scores += list(normalized)
        all_labels += list(video.labels)
    assert m["micro_auroc"] == pytest.approx(_auroc(all_scores, all_labels), abs=1e-6)
    saved = json.loads((tmp / "ev_tta" / "metrics.json").read_text())
    assert saved["tta"] == "hflip" and saved["tta_views"] == list(views) and saved["power"] == 1.0
    assert saved["decision"]["threshold"] is None and "decisions_withheld" in saved
    assert all(r["anomalous"] == "" for r in rows)


def test_tta_maps_of_the_head_equal_the_networks_own(runs):
    """The torch-free head's view loop (what an exported model runs) equals the network averaging the views."""
    _, data, (run, _) = runs
    model = load_model(run, task="video")
    frames = np.asarray(open_video_dataset(data, "test")[0].frames(SIZE))[:6]
    views = TTA_VIEWS["flips"]
    head = AutoencoderHead.view_maps(model, frames, views)
    network = model.view_maps(frames, views)
    for c in model.components:
        np.testing.assert_allclose(head[c], network[c], rtol=1e-5, atol=1e-6)
    fitted_with = FrameAutoencoder(AutoencoderConfig(size=SIZE, encoder="scratch", tta=views))
    with pytest.raises(OddspotError, match="fitted without TTA"):
        AutoencoderHead.view_maps(fitted_with, frames, TTA_VIEWS["all"])


def test_power_equals_score_to_the_gamma(runs):
    _, data, (run, _) = runs
    model = load_model(run, task="video")
    video = open_video_dataset(data, "test")[0]
    plain = model.predict([video])[0]
    powered = model.predict([video], power=2.5)[0]
    reference = np.array([(s ** 2.5 if s >= 0 else -((-s) ** 2.5)) for s in plain.scores])
    np.testing.assert_allclose(powered.scores, reference, rtol=1e-12)
    np.testing.assert_allclose(powered.normalized, model.post(reference))
    assert plain.decisions is not None and powered.decisions is None
    same = model.predict([video], power=1.0)[0]
    np.testing.assert_array_equal(same.scores, plain.scores)
    np.testing.assert_array_equal(same.decisions, plain.decisions)
    for bad in (0.0, -1.0, float("nan"), 11.0):
        with pytest.raises(OddspotError, match="--power"):
            model.predict([video], power=bad)
    signed = np.array([-2.0, -0.5, 0.0, 0.5, 3.0])  # standardized scores can be negative: the sign is kept
    np.testing.assert_allclose(frame_power(signed, 3.0), [-8.0, -0.125, 0.0, 0.125, 27.0])


def test_tta_on_the_motion_model_fails_loudly():
    motion = MotionDetector(MotionConfig(size=SIZE))
    with pytest.raises(OddspotError, match="does not apply to the motion model"):
        pipeline.study_settings(motion, "hflip")
    assert pipeline.study_settings(motion, "none")["views"] is None
    assert pipeline.study_settings(motion, "model", 2.0)["decisions"] is False


def test_several_models_in_one_table(runs):
    tmp, data, (run0, run1) = runs
    out = tmp / "table"
    res = CliRunner().invoke(cli, ["video", "evaluate", str(run0), str(data), "--run", str(run1), "-o", str(out),
                                   "--power", "2", "--threads", "1"])
    assert res.exit_code == 0, res.output
    assert "ae0" in res.output and "ae1" in res.output and "micro AUROC" in res.output
    table = _rows(out / "models.csv")
    assert [r["model"] for r in table] == ["ae0", "ae1"]
    for r in table:
        metrics = json.loads((out / r["model"] / "metrics.json").read_text())
        assert metrics["power"] == 2.0 and float(r["power"]) == 2.0
        scores = _rows(out / r["model"] / "scores.csv")
        assert float(r["micro_auroc"]) == pytest.approx(
            _auroc([float(s["normalized"]) for s in scores], [int(s["label"]) for s in scores]), abs=1e-9)
        per_video = [_auroc([float(s["normalized"]) for s in scores if s["video"] == v],
                            [int(s["label"]) for s in scores if s["video"] == v]) for v in sorted({s["video"] for s in scores})]
        assert float(r["macro_auroc"]) == pytest.approx(np.mean(per_video), abs=1e-9)
        assert float(r["micro_ap"]) == pytest.approx(metrics["ap"]) and float(r["macro_ap"]) == pytest.approx(metrics["macro_ap"])
    assert table[0]["micro_auroc"] != table[1]["micro_auroc"]  # two different models
    from oddspot.report import write_report

    html = write_report(out, warn=lambda _: None).read_text()
    assert "ae0" in html and "ae1" in html and "score power" in html


def test_study_options_are_checked_first(runs, tmp_path):
    _, data, (run, _) = runs
    runner = CliRunner()
    res = runner.invoke(cli, ["video", "evaluate", str(run), str(data), "-o", str(tmp_path / "o"), "--power", "0"])
    assert res.exit_code == 2 and "--power" in res.output
    res = runner.invoke(cli, ["video", "evaluate", str(run), str(data), "-o", str(tmp_path / "o"), "--engine", "ray",
                              "--tta", "all"])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1 and "--tta" in res.output
