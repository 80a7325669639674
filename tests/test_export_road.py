"""Exported road model: OpenVINO and ONNX graphs give torch's maps, classes, scores and decisions, without torch.

The model is the tiny fitted one of `model_cases` (toy streets of 64 x 128, no `eval_size`), fitted
once per module. Tolerances (fp32): image scores within 1e-4 relative; every score map within 1e-3
of the torch map's largest magnitude (the fusion map holds negative z-scores, so "max" is max |map|);
predicted classes (argmax) equal on >= 99.9% of pixels; masks equal except at pixels within that
map tolerance of the pixel threshold (near-ties); normalized scores and decisions equal.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from model_cases import road_deeplabv3plus
from torchless import run_without_torch

from oddspot.errors import OddspotError
from oddspot.export.folder import export_run
from oddspot.road.config import SCORE_NAMES, STAGES
from oddspot.road.estimator import RoadModel
from oddspot.road.inference import run_model
from oddspot.runs.contract import load_record, save_record
from oddspot.runs.registry import load_model
from oddspot.runtime.engine import set_threads

pytestmark = pytest.mark.usefixtures("one_thread")

FORMATS = ("openvino", "onnx")
MAP_TOL = 1e-3


@pytest.fixture(scope="module", autouse=True)
def engine_threads():
    set_threads(1)
    yield
    set_threads(None)


def _close_maps(got: np.ndarray, want: np.ndarray, what: str) -> None:
    assert got.shape == want.shape, what
    scale = float(np.abs(want).max())
    err = float(np.abs(got - want).max()) / scale
    assert err <= MAP_TOL, f"{what}: {err:.2e} of max |map|"


def _with_config(run: Path, out: Path, **train: object) -> Path:
    """A copy of the run whose config.train has the given fields (the fitted numbers unchanged)."""
    record = load_record(run)
    record.config["train"].update(train)
    save_record(out, record)
    return out


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> dict:
    """The fitted torch model saved as a run, the inputs (one of another size), and torch's outputs."""
    tmp = tmp_path_factory.mktemp("export-road")
    case = road_deeplabv3plus(tmp)
    model = case.model
    run = tmp / "run"
    model.save(run)
    other = np.ascontiguousarray(case.inputs[0][5:61, 3:123])  # 56 x 120: not the network's 64 x 128
    np.savez(tmp / "inputs.npz", *case.inputs)
    return {"tmp": tmp, "model": model, "run": run, "inputs": case.inputs, "other": other, "data": case.data,
            "expected": model.predict(case.inputs), "scenes": [model.analyze(im) for im in case.inputs],
            "npz": tmp / "inputs.npz"}


@pytest.fixture(scope="module")
def exported(fitted) -> dict[str, Path]:
    out = {}
    for fmt in FORMATS:
        out[fmt] = fitted["tmp"] / f"exported-{fmt}"
        info = export_run(fitted["run"], fmt, "fp32", out[fmt])
        assert info["graphs"] == ["network"] and info["calibration_images"] == 0
    return out


def test_the_shared_head_keeps_the_torch_scores(fitted):
    """The numpy head computes what the torch scores (`RoadScorer.maps`) compute on the torch network's outputs."""
    model, image = fitted["model"], fitted["inputs"][0]
    network, scorer = model._fitted()
    out = run_model(network, image[None], features=scorer.features)
    logits = out["logits"]
    reference = scorer.maps(logits, out["features"])
    scene = fitted["scenes"][0]
    assert set(scene.maps) == set(SCORE_NAMES)
    for name, want in reference.items():
        # float32 rounding only; the fusion divides energy by its validation std (under 1e-3 in this barely
        # trained model), which magnifies that rounding a thousandfold: it gets the maps' tolerance
        tol = MAP_TOL if name == "fusion" else 2e-5
        np.testing.assert_allclose(scene.maps[name], want[0].numpy(), rtol=0, atol=tol * float(want.abs().max()), err_msg=name)
    assert np.array_equal(scene.classes, logits[0].argmax(0).numpy())


@pytest.mark.parametrize("fmt", FORMATS)
def test_exported_model_predicts_what_torch_predicts(fitted, exported, fmt):
    model = load_model(exported[fmt])
    assert (model.task, model.kind, model.input_size) == ("road", "deeplabv3plus", (64, 128))
    assert model.runtime == {"openvino": "openvino fp32", "onnx": "onnxruntime fp32"}[fmt]
    want = fitted["expected"]
    got = model.predict(fitted["inputs"])
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-4, atol=0)
    np.testing.assert_allclose(got.normalized, want.normalized, rtol=1e-4, atol=1e-6)
    assert np.array_equal(got.decisions, want.decisions)
    threshold = fitted["model"].pixel_threshold["threshold"]
    for i, (g, w) in enumerate(zip(got.maps, want.maps)):
        _close_maps(g, w, f"fusion map {i}")
        near = np.abs(w - threshold) <= MAP_TOL * np.abs(w).max()
        assert np.array_equal(got.masks[i][~near], want.masks[i][~near])
    for image, scene in zip(fitted["inputs"], fitted["scenes"]):
        again = model.analyze(image)
        for name in SCORE_NAMES:
            _close_maps(again.maps[name], scene.maps[name], name)
        assert (again.classes == scene.classes).mean() >= 0.999


def test_control_a_perturbed_network_is_caught(fitted, exported, tmp_path):
    """The comparison can fail: the same graph with one changed fitted number gives other maps and scores."""
    record = load_record(exported["onnx"])
    record.tensors["mahalanobis.means"] = record.tensors["mahalanobis.means"] + 0.5
    save_record(tmp_path / "changed", record)
    got = load_model(tmp_path / "changed").predict(fitted["inputs"])
    with pytest.raises(AssertionError):
        _close_maps(got.maps[0], fitted["expected"].maps[0], "fusion map 0")


def test_exported_model_with_eval_size_resizes_like_torch(fitted, tmp_path):
    """With train.eval_size the graph takes that size, and images of any size are resized as torch resizes them."""
    run = _with_config(fitted["run"], tmp_path / "run", eval_size=[48, 80])
    torch_model = load_model(run, device="cpu")
    export_run(run, "onnx", "fp32", tmp_path / "onnx")
    model = load_model(tmp_path / "onnx")
    assert model.graphs["network"].input_shape == (1, 48, 80, 3)
    images = [fitted["inputs"][1], fitted["other"]]
    want, got = torch_model.predict(images), model.predict(images)
    np.testing.assert_allclose(got.scores, want.scores, rtol=1e-4, atol=0)
    for i, (g, w) in enumerate(zip(got.maps, want.maps)):
        assert g.shape == images[i].shape[:2]
        _close_maps(g, w, f"fusion map {i}")
    for image in images:
        a, b = model.analyze(image), torch_model.analyze(image)
        _close_maps(a.maps["mahalanobis"], b.maps["mahalanobis"], "mahalanobis")
        assert (a.classes == b.classes).mean() >= 0.999


def test_other_sizes_run_at_the_training_size(fitted, exported, tmp_path):
    """Without eval_size the graph takes the training images' size: an image of another size is scored as a
    torch model with that eval_size scores it, its maps at its own size."""
    assert fitted["model"].state["image_size"] == [64, 128]
    torch_at_size = load_model(_with_config(fitted["run"], tmp_path / "run", eval_size=[64, 128]), device="cpu")
    model = load_model(exported["onnx"])
    got, want = model.analyze(fitted["other"]), torch_at_size.analyze(fitted["other"])
    assert got.maps["fusion"].shape == (56, 120)
    for name in SCORE_NAMES:
        _close_maps(got.maps[name], want.maps[name], name)
    # control: the torch model without eval_size runs this image at its own size, and differs
    native = fitted["model"].analyze(fitted["other"]).maps["fusion"]
    assert np.abs(native - want.maps["fusion"]).max() > 10 * MAP_TOL * np.abs(want.maps["fusion"]).max()


def test_exported_model_loads_and_predicts_without_torch(fitted, exported):
    code = """
        import json, sys
        import numpy as np
        from oddspot.road.predict import predict
        from oddspot.runs.registry import load_model

        npz, out, *folders = sys.argv[1:]
        with np.load(npz) as z:
            images = [z[f"arr_{i}"] for i in range(len(z.files))]
        scores = {f: load_model(f).predict(images).scores.tolist() for f in folders}
        predict(load_model(folders[0]), [npz.replace("inputs.npz", "images")], out, save_scores=["msp"], log=lambda m: None)
        print(json.dumps(scores))
    """
    from PIL import Image

    folder = fitted["tmp"] / "images"
    folder.mkdir(exist_ok=True)
    for i, image in enumerate(fitted["inputs"]):
        Image.fromarray(image).save(folder / f"street{i}.png")
    out = fitted["tmp"] / "predicted"
    folders = [str(exported[f]) for f in FORMATS]
    result = run_without_torch(code, str(fitted["npz"]), str(out), *folders)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "TORCH-FREE-OK"
    scores = json.loads(lines[-2])
    for folder in folders:
        np.testing.assert_allclose(scores[folder], fitted["expected"].scores, rtol=1e-4, atol=0, err_msg=folder)
    assert (out / "scores.csv").read_text().count("street") == 2
    assert (out / "street0_msp.npy").exists() and (out / "street0_panel.png").exists()


def test_exported_model_saves_a_copy_that_loads_and_scores_alike(fitted, exported, tmp_path):
    model = load_model(exported["onnx"])
    model.save(tmp_path / "copy")
    again = load_model(tmp_path / "copy")
    assert load_record(tmp_path / "copy").tensors.keys() == load_record(exported["onnx"]).tensors.keys()
    np.testing.assert_array_equal(again.predict(fitted["inputs"]).scores, model.predict(fitted["inputs"]).scores)


def test_int8_exports_loads_and_ranks_like_fp32(fitted, exported, tmp_path):
    """int8 (ONNX, calibrated on the run's own training images): finite maps that follow the fp32 ones."""
    info = export_run(fitted["run"], "onnx", "int8", tmp_path / "int8", samples=3)
    assert info["calibration_images"] == 3
    meta = json.loads((tmp_path / "int8" / "model.json").read_text())
    assert meta["graph"]["calibration"]["source"] == "the run's training images"
    int8, fp32 = load_model(tmp_path / "int8"), load_model(exported["onnx"])
    assert int8.runtime == "onnxruntime int8"
    for image in fitted["inputs"]:
        a, b = int8.analyze(image, ("fusion",)).maps["fusion"], fp32.analyze(image, ("fusion",)).maps["fusion"]
        assert np.isfinite(a).all()
        assert np.corrcoef(a.ravel(), b.ravel())[0, 1] > 0.8
    assert np.isfinite(int8.predict(fitted["inputs"]).scores).all()


def test_int8_without_training_data_asks_for_calibration(fitted, tmp_path):
    record = load_record(fitted["run"])
    record.state["data"] = str(tmp_path / "gone")
    save_record(tmp_path / "run", record)
    with pytest.raises(OddspotError, match="gone"):
        export_run(tmp_path / "run", "onnx", "int8", tmp_path / "int8", samples=2)


def test_graph_holds_no_auxiliary_head(fitted, exported):
    """The auxiliary head exists for training only: none of its weights are in the graph, the classifier's are."""
    import onnx

    graph = onnx.load(str(exported["onnx"] / "network.onnx")).graph
    shapes = {tuple(t.dims) for t in graph.initializer}
    network = fitted["model"].network
    aux = [tuple(m.weight.shape) for m in network.aux_head.modules() if isinstance(m, torch.nn.Conv2d)]
    others = {tuple(p.shape) for name, p in network.named_parameters() if not name.startswith("aux_head.")}
    assert aux and not set(aux) & others  # the aux convolutions' shapes are theirs alone here, so the check means something
    assert tuple(network.classifier.weight.shape) in shapes  # control: a layer the model uses is found
    assert not set(aux) & shapes


def test_exported_size_without_eval_size_or_recorded_size_comes_from_the_data(fitted, tmp_path):
    from oddspot.export.graphs_road import network_input_size

    record = load_record(fitted["run"])
    del record.state["image_size"]  # a run fitted before the size was recorded
    save_record(tmp_path / "old", record)
    assert network_input_size(load_model(tmp_path / "old", device="cpu")) == (64, 128)
    record.state["data"] = str(tmp_path / "gone")
    save_record(tmp_path / "moved", record)
    with pytest.raises(OddspotError, match="eval-size"):
        export_run(tmp_path / "moved", "onnx", "fp32", tmp_path / "onnx")


def test_damaged_exported_records_are_one_line_errors(fitted, exported, tmp_path):
    from oddspot.runtime.road import ExportedRoadModel

    record = load_record(exported["onnx"])
    record.config["train"]["eval_size"] = [32, 64]  # the graph takes 64 x 128
    with pytest.raises(OddspotError, match="eval_size") as err:
        ExportedRoadModel.from_record(record)
    assert "\n" not in str(err.value)
    record = load_record(exported["onnx"])
    record.graph["graphs"]["network"]["input_shape"] = [1, 32, 64, 3]  # not the graph's real input
    model = ExportedRoadModel.from_record(record)
    with pytest.raises(OddspotError, match="export the model again") as err:
        model.predict(fitted["inputs"][:1])
    assert "\n" not in str(err.value)
    record = load_record(exported["onnx"])
    record.tensors["sml.std"] = -record.tensors["sml.std"]
    with pytest.raises(OddspotError, match="sml.std"):
        ExportedRoadModel.from_record(record)
    with pytest.raises(OddspotError, match="cannot be fitted"):
        ExportedRoadModel.from_record(load_record(exported["onnx"])).fit(fitted["data"])
    shutil.rmtree(tmp_path, ignore_errors=True)


def test_config_stages_are_the_backbone_stages():
    from oddspot.features.efficientnet_lite import EfficientNetLite0

    assert set(STAGES) == set(EfficientNetLite0.LAYERS) - {"head"}


def test_torch_model_reloads_with_the_recorded_image_size(fitted):
    again = RoadModel.load(fitted["run"], device="cpu")
    assert again.state["image_size"] == [64, 128]
    np.testing.assert_array_equal(again.predict(fitted["inputs"]).scores, fitted["expected"].scores)
