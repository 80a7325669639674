"""Exported video models (motion, autoencoder): OpenVINO and ONNX graphs give torch's frame scores, without torch.

The models are the contract suite's tiny ones (`model_cases`: 48 x 64 synthetic videos, one
epoch), fitted once per module. Tolerances (fp32), per test video:
- motion: raw frame scores (nearest-neighbour distances, all positive) within 1e-4 relative;
- autoencoder: the graph's per-component mean errors within 1e-4 relative; the frame score is a
  weighted sum of z-scores that can cross zero, so it is held within 1e-4 of the video's largest
  |score| (relative to the scale, not to each near-zero value);
- both: normalized scores to the same tolerance, decisions equal except for frames whose
  normalized score is within that tolerance of the threshold (near-ties), maps within 1e-3 of
  the torch map's maximum.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model_cases import FACTORIES
from torchless import run_without_torch

from oddspot.errors import OddspotError
from oddspot.export.folder import export_run
from oddspot.runs.contract import load_record
from oddspot.runs.registry import load_model
from oddspot.video.datasets import open_video_dataset
from oddspot.video.motion import MotionDetector, adaptive_average
from oddspot.video.motion_head import MotionConfig, MotionHead, block_flow

pytestmark = pytest.mark.usefixtures("one_thread")

KINDS = ("motion", "autoencoder")
RUNTIME = {"openvino": "openvino", "onnx": "onnxruntime"}
EXPORTS = [(kind, fmt) for kind in KINDS for fmt in ("openvino", "onnx")]
CLASSES = {"motion": "ExportedMotionDetector", "autoencoder": "ExportedFrameAutoencoder"}
GRAPHS = {"motion": "trunk", "autoencoder": "network"}


@pytest.fixture(scope="module")
def fitted(tmp_path_factory) -> dict:
    """Both kinds fitted and saved as runs, the test videos, and torch's predictions (with maps) on them."""
    tmp = tmp_path_factory.mktemp("export-video")
    out: dict = {"tmp": tmp, "models": {}, "runs": {}, "expected": {}}
    for kind in KINDS:
        case = FACTORIES[("video", kind)](tmp / kind)
        out["models"][kind] = case.model
        out["runs"][kind] = tmp / kind / "run"
        case.model.save(out["runs"][kind])
        out["expected"][kind] = case.model.predict(case.inputs, with_maps=True)
        out["data"], out["videos"] = case.data, case.inputs
    return out


@pytest.fixture(scope="module")
def exported(fitted) -> dict[tuple[str, str], Path]:
    out = {}
    for kind, fmt in EXPORTS:
        out[(kind, fmt)] = fitted["tmp"] / "exported" / f"{kind}-{fmt}"
        export_run(fitted["runs"][kind], fmt, "fp32", out[(kind, fmt)])
    return out


def score_tolerance(kind: str, ref: np.ndarray) -> dict[str, float]:
    return {"rtol": 1e-4, "atol": 0.0 if kind == "motion" else 1e-4 * float(np.abs(ref).max())}


def assert_matches_torch(kind: str, got: list, expected: list, threshold: float | None, where: str) -> None:
    assert [p.name for p in got] == [p.name for p in expected], where
    for pred, ref in zip(got, expected):
        assert np.ptp(ref.scores) > 0, where  # frames differ: equal scores are not a constant coincidence
        np.testing.assert_allclose(pred.scores, ref.scores, **score_tolerance(kind, ref.scores), err_msg=f"{where}: scores")
        tol = score_tolerance(kind, ref.normalized)
        np.testing.assert_allclose(pred.normalized, ref.normalized, **tol, err_msg=f"{where}: normalized")
        assert threshold is not None and ref.decisions is not None and pred.decisions is not None
        near = np.abs(ref.normalized - threshold) <= tol["rtol"] * abs(threshold) + tol["atol"]
        assert np.array_equal(pred.decisions[~near], ref.decisions[~near]), where
        assert len(pred.maps) == len(ref.maps)
        for i, (m, r) in enumerate(zip(pred.maps, ref.maps)):
            assert m.shape == r.shape and m.dtype == np.float32, (where, i)
            assert float(np.abs(m - r).max()) <= 1e-3 * float(np.abs(r).max()), (where, i)


@pytest.mark.parametrize("kind,fmt", EXPORTS)
def test_exported_model_predicts_what_torch_predicts(fitted, exported, kind, fmt):
    model = load_model(exported[(kind, fmt)], task="video", device="cpu")
    assert (model.task, model.kind, type(model).__name__) == ("video", kind, CLASSES[kind])
    assert model.runtime == f"{RUNTIME[fmt]} fp32"
    assert sorted(model.graph_meta["graphs"]) == [GRAPHS[kind]]
    expected = fitted["expected"][kind]
    got = model.predict(fitted["videos"], with_maps=True)
    assert_matches_torch(kind, got, expected, model.post.threshold, f"{kind} {fmt}")
    if kind == "autoencoder":  # the graph's own outputs, before the transforms: within 1e-4 relative
        frames = np.asarray(fitted["videos"][0].frames(model.size))
        ours, torchs = model.component_maps(frames), fitted["models"][kind].component_maps(frames)
        for c in model.components:
            np.testing.assert_allclose(ours[c].mean(axis=(1, 2)), torchs[c].mean(axis=(1, 2)), rtol=1e-4, atol=0, err_msg=c)
    else:  # control: a head that is slightly off (feature scale 1% larger) fails the same comparison
        model.feature_scale *= 1.01
        with pytest.raises(AssertionError):
            assert_matches_torch(kind, model.predict(fitted["videos"], with_maps=True), expected, model.post.threshold, "control")


def test_exported_autoencoder_saves_a_copy_that_loads_and_scores_alike(fitted, exported, tmp_path):
    folder = exported[("autoencoder", "onnx")]
    model = load_model(folder)
    model.save(tmp_path / "copy")
    again = load_model(tmp_path / "copy")
    assert sorted(p.name for p in (tmp_path / "copy").iterdir()) == sorted(p.name for p in folder.iterdir())
    assert sorted(again.to_record().tensors) == sorted(fitted["models"]["autoencoder"].to_record().tensors)
    a, b = again.predict(fitted["videos"]), model.predict(fitted["videos"])
    assert all(np.array_equal(x.scores, y.scores) for x, y in zip(a, b))


def test_exported_video_models_load_and_predict_without_torch(fitted, exported):
    folders = [str(exported[("motion", "openvino")]), str(exported[("autoencoder", "onnx")])]
    code = """
        import json, sys
        from oddspot.runs.registry import load_model
        from oddspot.video.datasets import open_video_dataset
        videos = open_video_dataset(sys.argv[1], "test")
        out = {}
        for folder in sys.argv[2:]:
            model = load_model(folder, task="video")
            out[folder] = [p.scores.tolist() for p in model.predict(videos)]
        assert "scipy" not in sys.modules, "scipy was imported"  # the runtime install has no scipy either
        print(json.dumps(out))
    """
    result = run_without_torch(code, str(fitted["data"]), *folders)
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == "TORCH-FREE-OK"
    scores = json.loads(lines[-2])
    for kind, folder in zip(KINDS, folders):
        for got, ref in zip(scores[folder], fitted["expected"][kind], strict=True):
            np.testing.assert_allclose(got, ref.scores, **score_tolerance(kind, ref.scores), err_msg=folder)


def test_int8_motion_exports_loads_and_ranks_like_fp32(fitted, tmp_path):
    run = fitted["runs"]["motion"]
    with pytest.raises(OddspotError, match=r"^int8 export of a video model needs --calibration DIR"):
        export_run(run, "onnx", "int8", tmp_path / "none")  # a video run does not record its data
    info = export_run(run, "onnx", "int8", tmp_path / "int8", calibration=fitted["data"] / "training" / "frames", samples=12)
    assert info["calibration_images"] == 12
    model = load_model(tmp_path / "int8")
    assert model.runtime == "onnxruntime int8"
    for pred, ref in zip(model.predict(fitted["videos"]), fitted["expected"]["motion"]):
        assert np.all(np.isfinite(pred.scores)) and not np.allclose(pred.scores, ref.scores, rtol=1e-4)  # really quantized
        assert np.corrcoef(pred.scores, ref.scores)[0, 1] > 0.9


def test_graphs_hold_no_layer_deeper_than_the_model_uses(fitted, exported):
    """Both graphs run EfficientNet-Lite0 up to stage3 (40 channels, expanded to 240 inside its blocks): no weight of
    stage4 (480 expanded channels) or deeper, nor of the 1280-channel head or the classifier, is in them."""
    import onnx

    for kind in KINDS:
        backbone = fitted["models"][kind].backbone
        widest = max(max(p.shape) for p in backbone.model.parameters())
        assert widest >= 1280  # control: the whole network holds the head, so the check below can fail
        graph = onnx.load(str(exported[(kind, "onnx")] / f"{GRAPHS[kind]}.onnx")).graph
        dims = [max(t.dims) for t in graph.initializer if t.dims]
        assert dims and max(dims) <= 240, (kind, max(dims))


def test_motion_with_grids_that_do_not_divide_exports_and_matches(fitted, tmp_path):
    """At 36 x 52, stage2 is 9 x 13 and stage3 5 x 7: bringing stage2 to stage3's grid is no whole-factor pooling."""
    train = open_video_dataset(fitted["data"], "train")
    model = MotionDetector(size=(36, 52), coreset_ratio=0.25, sigma=1.0).fit(train)
    assert model.deep_features(np.zeros((1, 36, 52, 3), np.uint8)).shape[1:3] == (5, 7)
    model.save(tmp_path / "run")
    export_run(tmp_path / "run", "onnx", "fp32", tmp_path / "out")
    ref, got = model.predict(fitted["videos"]), load_model(tmp_path / "out").predict(fitted["videos"])
    for pred, r in zip(got, ref):
        np.testing.assert_allclose(pred.scores, r.scores, rtol=1e-4, atol=0)


def test_adaptive_average_is_adaptive_average_pooling():
    x = torch.from_numpy(np.random.default_rng(0).normal(size=(2, 3, 13, 15)).astype(np.float32))
    for hw in ((5, 7), (13, 5), (1, 1), (13, 15)):
        torch.testing.assert_close(adaptive_average(x, hw), F.adaptive_avg_pool2d(x, hw), rtol=1e-6, atol=1e-6)
    with pytest.raises(AssertionError):  # control: a plain average over equal slices is not the same pooling
        torch.testing.assert_close(adaptive_average(x, (5, 7)), F.avg_pool2d(x, 3, 2)[..., :5, :7], rtol=1e-6, atol=1e-6)


def check_upsample(mode: str) -> None:
    """Maps as torch and scipy made them: bilinear upsampling, then scipy's Gaussian filter (edges per `mode`)."""
    from scipy.ndimage import gaussian_filter

    patches = np.random.default_rng(1).random((2, 5, 7)).astype(np.float32)
    for sigma in (0.0, 1.5, 8.0):  # 8: the radius (32) is longer than the frame's sides (20, 28)
        head = MotionHead.__new__(MotionHead)
        head.init_head(MotionConfig(size=(20, 28), map_sigma=sigma))
        up = F.interpolate(torch.from_numpy(patches[:, None]), size=(20, 28), mode="bilinear", align_corners=False)[:, 0].numpy()
        ref = gaussian_filter(up, sigma=(0, sigma, sigma), mode=mode) if sigma > 0 else up
        np.testing.assert_allclose(head._upsample(patches), ref, rtol=1e-5, atol=1e-6, err_msg=f"sigma {sigma}")


def test_numpy_maps_are_the_torch_and_scipy_maps():
    check_upsample("reflect")
    with pytest.raises(AssertionError):  # control: mirrored edges without repeat are another filter
        check_upsample("mirror")


def _torch_block_flow(frames, foreground, grid, max_shift):
    """The block matching as torch computed it before the numpy head (sparse gather, index_add), for reference."""
    k = torch.tensor([1.0, 2.0, 1.0]) / 4.0
    kernel = (k[:, None] * k[None, :])[None, None]
    prev2, prev, cur = (F.conv2d(F.pad(f[:, None], (1, 1, 1, 1), mode="replicate"), kernel)[:, 0] for f in frames)
    n, h, w = cur.shape
    gh, gw = grid
    my, mx = max_shift
    dy, dx = torch.meshgrid(torch.arange(-my, my + 1), torch.arange(-mx, mx + 1), indexing="ij")
    dy, dx = dy.reshape(-1), dx.reshape(-1)
    fi, ys, xs = foreground.nonzero(as_tuple=True)
    c = cur[fi, ys, xs][:, None]
    y1, x1 = (ys[:, None] - dy).clamp(0, h - 1), (xs[:, None] - dx).clamp(0, w - 1)
    y2, x2 = (ys[:, None] - 2 * dy).clamp(0, h - 1), (xs[:, None] - 2 * dx).clamp(0, w - 1)
    cost = (c - prev[fi[:, None], y1, x1]).abs() + (c - prev2[fi[:, None], y2, x2]).abs()
    cell = fi * (gh * gw) + (ys * gh // h) * gw + (xs * gw // w)
    total = torch.zeros((n * gh * gw, dy.numel())).index_add_(0, cell, cost)
    count = torch.bincount(cell, minlength=n * gh * gw).float()
    total += 1e-3 * (dy.abs() + dx.abs()).float()[None] * count[:, None]
    best = total.argmin(dim=1)
    flow = torch.stack([dy[best], dx[best]], dim=-1).float() * (count >= 0.05 * (h * w) / (gh * gw))[:, None]
    return flow.reshape(n, gh, gw, 2)


def test_numpy_block_flow_is_the_torch_block_flow_to_the_bit():
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (3, 24, 32)).astype(np.float32) for _ in range(3)]
    frames[1][:, 4:12, 6:14] = frames[2][:, 4:12, 8:16]  # something moves two pixels per step
    frames[0][:, 4:12, 4:12] = frames[2][:, 4:12, 8:16]
    for fraction in (0.0, 0.1, 0.6, 1.0):
        fg = rng.random((3, 24, 32)) < fraction
        ours = block_flow(tuple(frames), fg, (3, 4), (1, 6))
        ref = _torch_block_flow(tuple(torch.from_numpy(f) for f in frames), torch.from_numpy(fg), (3, 4), (1, 6)).numpy()
        assert ours.dtype == np.float32 and np.array_equal(ours, ref), fraction
        assert fraction < 0.5 or np.abs(ours).sum() > 0  # control: cells with foreground do move


def test_damaged_exported_video_records_are_one_line_errors(exported):
    from oddspot.runtime.video import ExportedFrameAutoencoder, ExportedMotionDetector

    record = load_record(exported[("motion", "onnx")])
    record.config = {**record.config, "size": [40, 64]}
    with pytest.raises(OddspotError, match=r"the trunk graph takes \[1, 48, 64, 3\], but config.size is \[40, 64\]; "
                                           r"export the model again$"):
        ExportedMotionDetector.from_record(record)
    record = load_record(exported[("motion", "onnx")])
    record.tensors = {**record.tensors, "bank": record.tensors["bank"][:, :-1].copy()}
    with pytest.raises(OddspotError, match=r"tensor 'bank' has shape \(\d+, \d+\), expected \(rows >= 1, \d+\)"):
        ExportedMotionDetector.from_record(record)
    record = load_record(exported[("autoencoder", "onnx")])
    record.tensors = {**record.tensors, "encoder.enc1.0.weight": np.zeros(3, np.float32)}
    with pytest.raises(OddspotError, match=r"unexpected tensor 'encoder.enc1.0.weight'"):
        ExportedFrameAutoencoder.from_record(record)
    record = load_record(exported[("autoencoder", "onnx")])
    record.state = {**record.state, "transforms": {}}
    with pytest.raises(OddspotError, match="transforms must hold one entry per score component"):
        ExportedFrameAutoencoder.from_record(record)
    with pytest.raises(OddspotError, match="exported models run on the CPU"):
        ExportedFrameAutoencoder.from_record(load_record(exported[("autoencoder", "onnx")]), device="cuda")
    with pytest.raises(OddspotError, match="cannot be fitted"):
        load_model(exported[("motion", "onnx")]).fit([])


def test_video_evaluate_runs_on_the_chosen_runtime_and_records_it(fitted, tmp_path):
    """`video evaluate --runtime`: the exported model (cached in RUN/exports) evaluates the labelled videos
    as torch does, and metrics.json says which runtime ran."""
    from click.testing import CliRunner

    from oddspot.cli import cli

    run, data = fitted["runs"]["motion"], fitted["data"]
    metrics = {}
    for runtime in ("torch", "openvino"):
        res = CliRunner().invoke(cli, ["video", "evaluate", str(run), str(data), "-o", str(tmp_path / runtime),
                                       "--runtime", runtime, "--threads", "1"])
        assert res.exit_code == 0, res.output
        metrics[runtime] = json.loads((tmp_path / runtime / "metrics.json").read_text())
    assert metrics["torch"]["runtime"] == "torch" and metrics["openvino"]["runtime"] == "openvino fp32"
    assert metrics["openvino"]["micro_auroc"] == pytest.approx(metrics["torch"]["micro_auroc"], abs=1e-6)
    assert metrics["openvino"]["frames"] == metrics["torch"]["frames"]
