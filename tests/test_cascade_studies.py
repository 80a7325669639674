"""Cascade studies: the supervised gate (trained on normals + synthetic anomalies) and the gate sweep."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score

from oddspot import inspect
from oddspot.cli import cli
from oddspot.detectors.cascade import Cascade, fit_logistic
from oddspot.detectors.cascade_head import classifier_logit, gate_features
from oddspot.errors import OddspotError
from oddspot.inspect.gate_sweep import placed_scores
from oddspot.runs.registry import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

GATE = {"image_size": 32, "batch_size": 4, "coreset_ratio": 0.25}
LOCALIZER = {"coreset_ratio": 0.25, "image_size": 64, "batch_size": 4}


@pytest.fixture(scope="module")
def run(tiny_mvtec, tmp_path_factory):
    """A supervised-gate cascade fitted and calibrated by `oddspot fit` on the tiny dataset."""
    out = tmp_path_factory.mktemp("cascade") / "run"
    inspect.fit(tiny_mvtec, "brick", out, model="cascade",
                options={"gate": "supervised", "gate_options": GATE, "localizer_options": LOCALIZER})
    return out


def test_logistic_regression_equals_sklearn():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(40, 5)) * [1, 10, 0.1, 3, 1] + [0, 5, 1, 0, 2]
    y = (x[:, 0] + 0.1 * x[:, 1] + rng.normal(size=40) > 0.5).astype(float)
    got = fit_logistic(x, y, l2=1.0)
    z = (x - np.asarray(got["mean"])) / np.asarray(got["scale"])
    ref = LogisticRegression(C=1.0, tol=1e-12, max_iter=10_000).fit(z, y)
    np.testing.assert_allclose(got["coef"], ref.coef_[0], atol=1e-6)
    assert got["intercept"] == pytest.approx(ref.intercept_[0], abs=1e-6)


def test_supervised_gate_is_saved_and_scores_by_its_classifier(run, tiny_mvtec):
    saved = json.loads((run / "model.json").read_text())
    assert saved["config"]["gate"] == "supervised"
    clf = saved["state"]["classifier"]
    assert clf["n_synthetic"] == clf["n_normal"] > 0 and clf["features"][0] == "gate_score"
    model = load_model(run, "inspect")
    images = [p for p in sorted((tiny_mvtec / "brick" / "test").rglob("*.png"))]
    from oddspot.data.image_io import read_image

    imgs = [read_image(p) for p in images[:5]]
    gate = model.gate.predict(imgs, maps=True)
    by_hand = []
    for s, m in zip(gate.scores, gate.maps):  # the pooled features, one image at a time
        v = np.sort(m.ravel().astype(np.float64))
        k = max(1, v.size // 100)
        f = np.array([s, v[-1], v.mean(), v.std(), v[-k:].mean()])
        by_hand.append((f - clf["mean"]) / clf["scale"] @ clf["coef"] + clf["intercept"])
    _, g = model.gate_pass(imgs, maps=False)
    np.testing.assert_allclose(g, by_hand, rtol=1e-9)
    np.testing.assert_allclose(classifier_logit(clf, gate_features(gate.scores, gate.maps)), g)
    again = load_model(run, "inspect").predict(imgs)
    np.testing.assert_array_equal(again.scores, model.predict(imgs).scores)


def test_supervised_gate_is_trained_on_cross_fitted_normals_and_synthetic_anomalies(tiny_mvtec):
    from oddspot.data.image_io import read_image
    from oddspot.data.synthetic import synthesize_anomaly
    from oddspot.detectors.patchcore import PatchCore

    train = [read_image(p) for p in sorted((tiny_mvtec / "brick" / "train" / "good").glob("*.png"))[:6]]
    model = Cascade(gate="supervised", gate_options=GATE, localizer_options=LOCALIZER, seed=4).fit(train)
    rng = np.random.default_rng(4)
    made = [synthesize_anomaly(image, rng)[0] for image in train]
    rows, labels = [], []
    for fit_half, held in ((1, 0), (0, 1)):  # the recipe, by hand: each half scored by a gate fitted on the other
        gate = PatchCore(backbone=model.backbone, seed=4, **GATE).fit(train[fit_half::2])
        pred = gate.predict(train[held::2] + made[held::2], maps=True)
        rows.append(gate_features(pred.scores, pred.maps))
        labels += [0] * len(train[held::2]) + [1] * len(made[held::2])
    expected = fit_logistic(np.concatenate(rows), np.asarray(labels, float), 1.0)
    clf = model.state["classifier"]
    np.testing.assert_allclose(clf["coef"], expected["coef"], rtol=1e-6, atol=1e-9)
    assert (clf["n_normal"], clf["n_synthetic"]) == (6, 6)


def test_supervised_gate_refuses_normals_only_and_damaged_files(run, tmp_path):
    tiny = [np.full((8, 8, 3), 100, np.uint8)]
    model = Cascade(gate="supervised", gate_options=GATE, localizer_options=LOCALIZER)
    with pytest.raises(OddspotError, match="no synthetic anomalies"):
        model._fit_classifier(tiny)
    with pytest.raises(OddspotError, match="cascade gate 'sometimes' unknown"):
        Cascade(gate="sometimes")
    import shutil

    for change, needle in ((lambda m: m["state"]["classifier"]["scale"].__setitem__(0, -1.0), "scale"),
                           (lambda m: m["state"]["classifier"].pop("coef"), "classifier must hold"),
                           (lambda m: m["config"].__setitem__("gate", "unsupervised"), "state.classifier must be")):
        folder = tmp_path / needle.replace(" ", "_")
        shutil.copytree(run, folder)
        meta = json.loads((folder / "model.json").read_text())
        change(meta)
        (folder / "model.json").write_text(json.dumps(meta))
        with pytest.raises(OddspotError, match=needle):
            load_model(folder, "inspect")


def test_older_records_without_the_gate_field_load_as_unsupervised(run, tmp_path):
    import shutil

    folder = tmp_path / "old"
    shutil.copytree(run, folder)
    meta = json.loads((folder / "model.json").read_text())
    del meta["config"]["gate"]
    del meta["state"]["classifier"]
    (folder / "model.json").write_text(json.dumps(meta))
    assert load_model(folder, "inspect").config.gate == "unsupervised"


def test_placed_scores_equal_the_cascade_prediction(run, tiny_mvtec):
    from oddspot.data.image_io import read_image

    model = load_model(run, "inspect")
    imgs = [read_image(p) for p in sorted((tiny_mvtec / "brick" / "test").rglob("*.png"))]
    _, g = model.gate_pass(imgs, maps=False)
    loc = model.localizer.predict(imgs, maps=False).scores
    th = model.state["thresholds"]
    q = np.sort(g)
    for low, high in ((q[1], q[-2]), (q[0], q[0]), (th["low"], th["high"])):
        th["low"], th["high"] = float(low), float(high)
        scores, call = placed_scores(g, loc, np.array([low]), np.array([high]), th)
        pred = model.predict(imgs, maps=False)
        np.testing.assert_allclose(scores[0], pred.scores, rtol=1e-12)
        assert call[0].sum() == model.last_call["n_localizer"]


def test_sweep_gate_writes_results_and_plot(run, tiny_mvtec, tmp_path):
    out = tmp_path / "sweep"
    result = CliRunner().invoke(cli, ["sweep-gate", str(run), str(tiny_mvtec), "-c", "brick", "-o", str(out),
                                      "--steps", "3", "--threads", "1"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader((out / "results.csv").open()))
    assert rows[0].keys() >= {"low", "high", "call_rate", "latency_ms", "image_auroc", "image_f1_max"}
    assert sum(r["fitted"] == "1" for r in rows) == 1
    rates = [float(r["call_rate"]) for r in rows]
    assert max(rates) == 1.0 and min(rates) < 1.0
    assert (out / "tradeoff.png").read_bytes()[:4] == b"\x89PNG"
    facts = json.loads((out / "sweep.json").read_text())
    # the all-localizer setting's AUROC is the localizer's own AUROC on the same images
    ev = inspect.evaluate(run, tiny_mvtec, "brick", tmp_path / "ev", bootstrap=0, gallery=0)
    labels = [int(r.label) for r in inspect.split_test_refs(run, tiny_mvtec, "brick", None)[0]]
    assert facts["n_images"] == len(labels) == ev["image"]["n_images"]
    fitted = next(r for r in rows if r["fitted"] == "1")
    assert float(fitted["call_rate"]) == pytest.approx(ev["cascade"]["localizer_call_rate"])
    model = load_model(run, "inspect")
    refs = inspect.split_test_refs(run, tiny_mvtec, "brick", None)[0]
    loc = model.localizer.predict([r.load().image for r in refs], maps=False).scores
    full = next(r for r in rows if float(r["call_rate"]) == 1.0)
    assert float(full["image_auroc"]) == pytest.approx(roc_auc_score(labels, loc))
    bad = CliRunner().invoke(cli, ["sweep-gate", str(run), str(tiny_mvtec), "-c", "brick", "-o", str(out),
                                   "--steps", "0"])
    assert bad.exit_code == 2 and "--steps" in bad.output


@pytest.mark.slow
def test_exported_supervised_cascade_scores_as_torch(run, tiny_mvtec, tmp_path):
    pytest.importorskip("onnxruntime")
    from oddspot.data.image_io import read_image
    from oddspot.export.folder import export_run

    export_run(run, "onnx", "fp32", tmp_path / "onnx")
    exported = load_model(tmp_path / "onnx")
    assert type(exported).__name__ == "ExportedCascade" and exported.config.gate == "supervised"
    imgs = [read_image(p) for p in sorted((tiny_mvtec / "brick" / "test").rglob("*.png"))]
    torch_model = load_model(run, "inspect")
    _, g_torch = torch_model.gate_pass(imgs, maps=False)
    _, g_onnx = exported.gate_pass(imgs, maps=False)
    np.testing.assert_allclose(g_onnx, g_torch, rtol=1e-4, atol=1e-4)
    ref = torch_model.predict(imgs, maps=False)
    got = exported.predict(imgs, maps=False)
    assert exported.last_call["n_localizer"] == torch_model.last_call["n_localizer"]
    np.testing.assert_allclose(got.scores, ref.scores, rtol=1e-4)
