"""Decisions end to end: PaDiM, calibrated PatchCore and the cascade on a generated fixture."""

from __future__ import annotations

import csv
import subprocess
import sys
import warnings

import numpy as np
import pytest

from oddspot import inspect
from oddspot.data.mvtec import read_mvtec
from oddspot.detectors.cascade import Cascade, GateCollapseWarning
from oddspot.detectors.padim import PaDiM
from oddspot.runs.registry import load_model

FAST = {"image_size": 64, "coreset_ratio": 0.25, "batch_size": 4}


@pytest.fixture(scope="module")
def calibrated_run(tiny_mvtec, tmp_path_factory):
    run = tmp_path_factory.mktemp("cal")
    info = inspect.fit(tiny_mvtec, "brick", run, options=FAST)
    assert info["calibration"] == "f1"
    return run


def test_padim_detects_and_round_trips(tiny_mvtec, tmp_path):
    refs = read_mvtec(tiny_mvtec, "brick")
    test = [r.load() for r in refs["test"]]
    model = PaDiM(image_size=64, n_features=40, batch_size=4).fit([r.load().image for r in refs["train"]])
    pred = model.predict([s.image for s in test])
    labels = np.array([s.label for s in test])
    assert pred.scores[labels == 1].mean() > pred.scores[labels == 0].mean()
    assert pred.maps[0].shape == test[0].image.shape[:2]
    model.save(tmp_path)
    again = PaDiM.load(tmp_path)
    assert np.array_equal(again.channels, model.channels) and len(model.channels) == 40
    assert np.array_equal(again.predict([s.image for s in test], maps=False).scores, pred.scores)
    one = np.array([model.predict([s.image], maps=False).scores[0] for s in test])
    assert np.array_equal(one, pred.scores)


def test_shuffled_and_regrouped_batches_give_identical_scores_and_decisions(calibrated_run, tiny_mvtec):
    detector = load_model(calibrated_run, "inspect")
    cal = detector.postprocess
    images = [r.load().image for r in read_mvtec(tiny_mvtec, "brick")["test"]]
    base = detector.predict(images, maps=False).scores
    order = np.random.default_rng(3).permutation(len(images))
    for group in (1, 2, 5):
        parts = [detector.predict([images[i] for i in order[lo:lo + group]], maps=False).scores
                 for lo in range(0, len(order), group)]
        regrouped = np.concatenate(parts)
        assert np.array_equal(regrouped, base[order])
        assert np.array_equal(cal.decide(regrouped), cal.decide(base)[order])
        assert np.array_equal(cal.image(regrouped), cal.image(base)[order])


def test_fresh_process_predict_decides_identically(calibrated_run, tiny_mvtec, tmp_path):
    folder = tiny_mvtec / "brick" / "test"
    inspect.predict(calibrated_run, [folder], tmp_path / "here")
    subprocess.run([sys.executable, "-m", "oddspot", "predict", str(calibrated_run), str(folder), "-o", str(tmp_path / "fresh"),
                    "--runtime", "torch"],
                   check=True, capture_output=True)
    here = list(csv.DictReader((tmp_path / "here" / "scores.csv").open()))
    fresh = list(csv.DictReader((tmp_path / "fresh" / "scores.csv").open()))
    assert set(here[0]) == {"path", "score", "normalized", "anomalous"}
    assert here == fresh
    assert (tmp_path / "here" / "masks" / "good" / "000.png.png").exists()


def test_evaluate_reports_decisions_at_the_calibrated_threshold(calibrated_run, tiny_mvtec, tmp_path):
    m = inspect.evaluate(calibrated_run, tiny_mvtec, "brick", tmp_path, bootstrap=0, gallery=0)
    assert m["calibration"]["strategy"] == "f1"
    assert {"precision", "recall", "f1"} <= set(m["image"]["at_threshold"])
    assert m["pixel"]["at_threshold"]["f1"] >= 0.0


@pytest.mark.parametrize("strategy", ["synthetic", "quantile"])
def test_no_anomaly_strategies_recalibrate_a_run(calibrated_run, tiny_mvtec, tmp_path, strategy):
    cal = inspect.recalibrate(calibrated_run, tiny_mvtec, "brick", tmp_path / strategy, strategy=strategy)
    assert cal.strategy == strategy and load_model(tmp_path / strategy).postprocess.strategy == strategy
    assert load_model(calibrated_run).postprocess.strategy == "f1"


def test_cascade_gate_keeps_validation_recall_and_round_trips(tiny_mvtec, tmp_path):
    refs = read_mvtec(tiny_mvtec, "brick")
    train = [r.load().image for r in refs["train"]]
    val = [r.load() for r in refs["test"]]
    labels = np.array([s.label for s in val])
    cascade = Cascade(localizer_options=FAST, gate_options={"image_size": 32, "coreset_ratio": 0.25, "batch_size": 4})
    cascade.fit(train)
    th = cascade.fit_gate([s.image for s in val], labels)
    gate = cascade.gate.predict([s.image for s in val], maps=False).scores
    assert np.all(gate[labels == 1] >= th["low"])  # no validation defect is called normal by the gate
    pred = cascade.predict([s.image for s in val])
    assert cascade.last_call["n_localizer"] == int(np.sum((gate >= th["low"]) & (gate <= th["high"])))
    assert len(pred.maps) == len(val) and pred.maps[0].shape == val[0].image.shape[:2]
    cascade.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]  # no sub-folders
    again = Cascade.load(tmp_path)
    assert again.gate.backbone is again.localizer.backbone is again.backbone
    assert np.array_equal(again.predict([s.image for s in val], maps=False).scores, pred.scores)


def test_cascade_warns_when_gate_collapses(tiny_mvtec):
    refs = read_mvtec(tiny_mvtec, "brick")
    images = [r.load().image for r in refs["train"]]
    cascade = Cascade(localizer_options=FAST, gate_options={"image_size": 32, "coreset_ratio": 0.25, "batch_size": 4},
                      low_margin=0.0, high_margin=0.0)
    cascade.fit(images[:5])
    held_out = images[5:]  # "anomalies" drawn from the same normal images: the gate cannot separate them
    gate = cascade.gate.predict(held_out, maps=False).scores
    order = np.argsort(gate)
    labels = np.zeros(5, int)
    labels[order[0]] = 1  # lowest score anomalous, highest normal: the gate can decide nothing
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        th = cascade.fit_gate(held_out, labels)
    assert th["validation_call_rate"] == 1.0
    assert any(issubclass(w.category, GateCollapseWarning) for w in caught)
