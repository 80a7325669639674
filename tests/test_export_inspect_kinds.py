"""Exported inspect PaDiM and Cascade: OpenVINO and ONNX graphs give torch's scores, maps and decisions, without torch.

Models are tiny (64 px localizers, 32 px gate, 20 PaDiM channels) and fitted once per module on
the demo dataset; inputs include images of other sizes, so the numpy resizing before the graph is
compared with torch's too. Tolerances (fp32): image scores within 1e-4 relative, maps within
1e-3 of the torch map's maximum, decisions equal, masks equal except at pixels within that map
tolerance of the pixel threshold (near-ties), the cascade's gate calling the localizer on the
same images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from model_cases import _calibrated, _mvtec_images
from torchless import run_without_torch

from oddspot.detectors.cascade import Cascade
from oddspot.detectors.padim import PaDiM
from oddspot.detectors.patchcore import PatchCore
from oddspot.errors import OddspotError
from oddspot.export.folder import export_run
from oddspot.runs.contract import load_record
from oddspot.runs.registry import load_model

pytestmark = pytest.mark.usefixtures("one_thread")

GATE = {"image_size": 32, "batch_size": 4, "coreset_ratio": 0.25}
PADIM = {"n_features": 20, "image_size": 64, "batch_size": 4}
PATCHCORE = {"coreset_ratio": 0.25, "image_size": 64, "batch_size": 4}
RUNTIME = {"openvino": "openvino", "onnx": "onnxruntime"}
# (run, format) pairs exported: each kind on both formats, the cascade with either localizer.
EXPORTS = [("padim", "openvino"), ("padim", "onnx"), ("cascade_patchcore", "openvino"), ("cascade_padim", "onnx")]


def _gate_between(cascade: Cascade, images: list[np.ndarray]) -> None:
    """Thresholds half-way between gate scores so one image falls below, one above, the rest go to the localizer."""
    g = np.sort(cascade.gate.predict(images, maps=False).scores)
    th = cascade.state["thresholds"]
    th["low"], th["high"] = float(g[:2].mean()), float(g[-2:].mean())
    assert np.diff(g).min() > 1e-3 * g.max()  # no gate score near a threshold: torch and graphs decide alike


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> dict:
    """Fitted, calibrated torch models saved as runs, the inputs, and torch's predictions on them."""
    from PIL import Image

    tmp = tmp_path_factory.mktemp("export-kinds")
    train, test, labels, root = _mvtec_images(tmp)
    resized = [np.asarray(Image.fromarray(test[i]).resize(size, Image.BILINEAR)) for i, size in ((0, (96, 80)), (3, (50, 70)))]
    inputs = test + resized
    padim = _calibrated(PaDiM(**PADIM).fit(train), test, labels)
    backbone = padim.backbone
    models = {"padim": padim}
    for loc, options in (("padim", PADIM), ("patchcore", PATCHCORE)):
        cascade = Cascade(localizer=loc, localizer_options=options, gate_options=GATE, backbone=backbone).fit(train)
        cascade.fit_gate(test, labels)
        _gate_between(cascade, inputs)
        models[f"cascade_{loc}"] = _calibrated(cascade, test, labels)
    runs = {}
    for name, model in models.items():
        runs[name] = tmp / "runs" / name
        model.save(runs[name])
    expected, called = {}, {}
    for name, model in models.items():
        expected[name] = model.predict(inputs)
        called[name] = getattr(model, "last_call", {}).get("n_localizer")
    np.savez(tmp / "inputs.npz", *inputs)
    return {"tmp": tmp, "models": models, "runs": runs, "inputs": inputs, "expected": expected, "called": called,
            "backbone": backbone, "train": root / "brick" / "train" / "good", "train_images": train, "npz": tmp / "inputs.npz"}


@pytest.fixture(scope="module")
def exported(fitted) -> dict[tuple[str, str], Path]:
    out = {}
    for name, fmt in EXPORTS:
        out[(name, fmt)] = fitted["tmp"] / "exported" / f"{name}-{fmt}"
        export_run(fitted["runs"][name], fmt, "fp32", out[(name, fmt)])
    return out


def assert_matches_torch(pred, ref, pixel_threshold: float, where: str) -> None:
    """fp32 agreement with torch: scores, maps, normalized scores, decisions, masks away from the threshold."""
    np.testing.assert_allclose(pred.scores, ref.scores, rtol=1e-4, atol=0, err_msg=f"{where}: scores")
    np.testing.assert_allclose(pred.normalized, ref.normalized, rtol=1e-4, atol=1e-6, err_msg=f"{where}: normalized")
    assert np.array_equal(pred.decisions, ref.decisions), where
    assert 0 < ref.decisions.sum() < len(ref.decisions)  # control: both decisions occur, so equality can fail
    for i, (m, r) in enumerate(zip(pred.maps, ref.maps)):
        assert m.shape == r.shape and m.dtype == np.float32, (where, i)
        tol = 1e-3 * float(np.abs(r).max())
        assert float(np.abs(m - r).max()) <= tol, (where, i, float(np.abs(m - r).max()), tol)
    assert len(pred.masks) == len(ref.masks)
    for i, (m, r, rmap) in enumerate(zip(pred.masks, ref.masks, ref.maps)):
        near = np.abs(rmap - np.float32(pixel_threshold)) <= 1e-3 * float(np.abs(rmap).max())
        assert np.array_equal(m[~near], r[~near]), (where, i)
        assert near.mean() < 0.05, (where, i)  # control: few pixels are excluded as near-ties
    assert any(r.any() for r in ref.masks)  # some defect pixels to disagree on


@pytest.mark.parametrize("name,fmt", EXPORTS)
def test_exported_model_predicts_what_torch_predicts(fitted, exported, name, fmt):
    model = load_model(exported[(name, fmt)])
    kind = "padim" if name == "padim" else "cascade"
    assert (model.task, model.kind) == ("inspect", kind)
    assert type(model).__name__ == {"padim": "ExportedPaDiM", "cascade": "ExportedCascade"}[kind]
    assert model.runtime == f"{RUNTIME[fmt]} fp32"
    assert sorted(model.graph_meta["graphs"]) == (["trunk"] if kind == "padim" else ["gate", "localizer"])
    ref = fitted["expected"][name]
    pred = model.predict(fitted["inputs"])
    assert_matches_torch(pred, ref, fitted["models"][name].postprocess.pixel_threshold, f"{name} {fmt}")
    if kind == "cascade":
        n = len(fitted["inputs"])
        called = fitted["called"][name]
        assert model.last_call["n_localizer"] == called and 0 < called < n  # both paths scored
        assert type(model.localizer).__name__ == ("ExportedPaDiM" if name.endswith("padim") else "ExportedPatchCore")
    # one image at a time scores exactly as the whole list does (per-item graph calls)
    alone = np.concatenate([model.predict([image], maps=False).scores for image in fitted["inputs"]])
    assert np.array_equal(alone, pred.scores)


def test_exported_cascade_saves_a_copy_that_loads_and_scores_alike(fitted, exported, tmp_path):
    model = load_model(exported[("cascade_padim", "onnx")])
    model.save(tmp_path / "copy")
    again = load_model(tmp_path / "copy")
    images = fitted["inputs"]
    assert np.array_equal(again.predict(images, maps=False).scores, model.predict(images, maps=False).scores)
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == sorted(
        p.name for p in exported[("cascade_padim", "onnx")].iterdir())


def test_exported_models_load_and_predict_without_torch(fitted, exported):
    folders = [str(exported[key]) for key in EXPORTS]
    code = """
        import json, sys
        import numpy as np
        from oddspot.runs.registry import load_model
        with np.load(sys.argv[1]) as z:
            images = [z[f"arr_{i}"] for i in range(len(z.files))]
        out = {}
        for folder in sys.argv[2:]:
            model = load_model(folder)
            out[folder] = model.predict(images).scores.tolist()
        print(json.dumps(out))
    """
    result = run_without_torch(code, str(fitted["npz"]), *folders)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "TORCH-FREE-OK"
    scores = json.loads(lines[-2])
    for (name, _), folder in zip(EXPORTS, folders):
        np.testing.assert_allclose(scores[folder], fitted["expected"][name].scores, rtol=1e-4, atol=0, err_msg=folder)


def test_int8_padim_exports_loads_and_ranks_like_fp32(fitted, exported, tmp_path):
    out = tmp_path / "int8"
    info = export_run(fitted["runs"]["padim"], "onnx", "int8", out, calibration=fitted["train"], samples=8)
    assert info["calibration_images"] == 8
    model = load_model(out)
    assert model.runtime == "onnxruntime int8"
    scores = model.predict(fitted["inputs"], maps=False).scores
    fp32 = fitted["expected"]["padim"].scores
    assert np.all(np.isfinite(scores)) and not np.allclose(scores, fp32, rtol=1e-4)  # really quantized
    assert np.corrcoef(scores, fp32)[0, 1] > 0.9


def _initializer_sizes(path: Path) -> int:
    import onnx

    return sum(int(np.prod(t.dims)) for t in onnx.load(str(path)).graph.initializer)


def _backbone_parameters(backbone, up_to: str | None) -> int:
    """Parameters of the backbone's modules up to `up_to` (a module path such as '_blocks.10'), or all."""
    total, counting = 0, True
    for name, module in backbone.model.named_children():
        children = module.named_children() if name == "_blocks" else [("", module)]
        for sub, m in children:
            if counting:
                total += sum(p.numel() for p in m.parameters())
            if up_to is not None and f"{name}.{sub}".rstrip(".") == up_to:
                counting = False
    return total


def test_graphs_hold_no_layer_deeper_than_the_model_uses(fitted, exported):
    backbone = fitted["backbone"]
    used = _backbone_parameters(backbone, backbone.module_name("stage5"))  # deepest layer of PaDiM and PatchCore here
    full = _backbone_parameters(backbone, None)
    assert full > 3 * used  # control: the head (conv_head, fc) and stages 6-7 hold most weights, so the check can fail
    graphs = [exported[("padim", "onnx")] / "trunk.onnx", exported[("cascade_padim", "onnx")] / "gate.onnx",
              exported[("cascade_padim", "onnx")] / "localizer.onnx"]
    for path in graphs:
        size = _initializer_sizes(path)
        assert size <= used + 1000, (path.name, size, used)  # + the kept-channel indices; BN folds into convolutions


def _exports_and_matches(model, fitted: dict, tmp: Path, fmt: str) -> None:
    """Save `model`, export it to `fmt` fp32, and compare the exported model's scores and maps with torch's."""
    model.save(tmp / "run")
    export_run(tmp / "run", fmt, "fp32", tmp / "out")
    ref, pred = model.predict(fitted["inputs"]), load_model(tmp / "out").predict(fitted["inputs"])
    np.testing.assert_allclose(pred.scores, ref.scores, rtol=1e-4, atol=0)
    for m, r in zip(pred.maps, ref.maps):
        assert float(np.abs(m - r).max()) <= 1e-3 * float(r.max())


def test_padim_with_grids_that_do_not_divide_exports_and_matches(fitted, tmp_path):
    model = PaDiM(n_features=12, image_size=36, batch_size=4, backbone=fitted["backbone"]).fit(fitted["train_images"])
    assert model.state["grid"] == [5, 5]  # stage2 is 9 x 9: pooled 9 -> 5 is not a whole factor
    _exports_and_matches(model, fitted, tmp_path, "onnx")


def test_patchcore_on_the_stride_4_grid_exports_and_matches(fitted, tmp_path):
    # stage2 + stage3: the coarser map is brought up to the stride-4 grid of the first layer
    model = PatchCore(layers=("stage2", "stage3"), **PATCHCORE, backbone=fitted["backbone"]).fit(fitted["train_images"])
    assert model.state["grid"] == [16, 16] and model.state["feature_dim"] == 24 + 40  # Lite0: 64 px / 4; 24 + 40 channels
    _exports_and_matches(model, fitted, tmp_path, "openvino")


def test_damaged_exported_records_are_one_line_errors(exported):
    from oddspot.runtime.cascade import ExportedCascade
    from oddspot.runtime.padim import ExportedPaDiM

    record = load_record(exported[("cascade_padim", "onnx")])
    graphs = record.graph["graphs"]
    record.graph = {**record.graph, "graphs": {"trunk": graphs["gate"]}}
    with pytest.raises(OddspotError, match=r"graph.graphs must name gate, localizer; export the model again$"):
        ExportedCascade.from_record(record)
    record.graph = {**record.graph, "graphs": {"gate": graphs["localizer"], "localizer": graphs["gate"]}}
    with pytest.raises(OddspotError, match=r"the trunk graph takes \[1, 64, 64, 3\], but config.image_size is 32.*"
                                           r"\(in the cascade's gate\)$"):
        ExportedCascade.from_record(record)
    record = load_record(exported[("padim", "onnx")])
    record.config = {**record.config, "image_size": 96}
    with pytest.raises(OddspotError, match=r"the trunk graph takes \[1, 64, 64, 3\], but config.image_size is 96"):
        ExportedPaDiM.from_record(record)
    with pytest.raises(OddspotError, match="carries its own network"):
        ExportedPaDiM.from_record(load_record(exported[("padim", "onnx")]), backbone=object())
    with pytest.raises(OddspotError, match="cannot be fitted"):
        load_model(exported[("padim", "onnx")]).fit([])


def test_torch_padim_and_cascade_keep_their_scores_through_the_shared_heads(fitted):
    """The heads hold numpy state: a reloaded torch model scores exactly as the fitted one (contiguous tensors)."""
    for name in ("padim", "cascade_patchcore"):
        again = load_model(fitted["runs"][name])
        assert isinstance(again, PaDiM if name == "padim" else Cascade)
        assert np.array_equal(again.predict(fitted["inputs"], maps=False).scores, fitted["expected"][name].scores), name
    assert isinstance(fitted["models"]["cascade_patchcore"].localizer, PatchCore)


def test_padim_grid_alignment_is_adaptive_average_pooling_in_any_ratio():
    """`align` pools with matrices where adaptive pooling's ONNX export would fail: the same bins, same numbers."""
    import torch
    import torch.nn.functional as F

    from oddspot.detectors.padim import align

    x = torch.randn(2, 3, 9, 11, generator=torch.Generator().manual_seed(0))
    for grid in ((5, 4), (3, 1), (4, 10)):
        np.testing.assert_allclose(align(x, grid).numpy(), F.adaptive_avg_pool2d(x, grid).numpy(), rtol=1e-6, atol=1e-6)
    up = align(x, (12, 13))
    assert up.shape == (2, 3, 12, 13) and torch.equal(up, F.interpolate(x, size=(12, 13), mode="bilinear"))
