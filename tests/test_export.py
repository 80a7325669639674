"""Export of a fitted PatchCore to OpenVINO / ONNX, its torch-free runtime, and runtime choice on predict."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from oddspot.cli import cli
from oddspot.data.image_io import list_images, read_image
from torchless import cli_without_torch, run_without_torch

pytest.importorskip("openvino")
pytest.importorskip("onnxruntime")


@pytest.fixture(scope="module")
def fitted(tiny_mvtec, small_options, tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("export")
    config = tmp / "model.yaml"
    config.write_text(yaml.safe_dump(small_options))
    run = tmp / "run"
    result = CliRunner().invoke(cli, ["fit", str(tiny_mvtec), "-c", "brick", "-o", str(run), "--config", str(config)])
    assert result.exit_code == 0, result.output
    return run


@pytest.fixture(scope="module")
def test_images(tiny_mvtec) -> list[np.ndarray]:
    return [read_image(p) for p in list_images(tiny_mvtec / "brick" / "test", recursive=True)]


@pytest.fixture(scope="module")
def exported(fitted, tmp_path_factory) -> dict[str, Path]:
    from oddspot.export.folder import export_run

    out = {}
    for fmt in ("openvino", "onnx"):
        out[fmt] = tmp_path_factory.mktemp("exp") / fmt
        export_run(fitted, fmt, "fp32", out[fmt])
    return out


def _scores_csv(path: Path) -> dict[str, float]:
    lines = path.read_text().splitlines()[1:]
    return {line.split(",")[0]: float(line.split(",")[1]) for line in lines}


@pytest.mark.parametrize("fmt", ["openvino", "onnx"])
def test_fp32_export_equals_torch(fitted, exported, test_images, fmt):
    from oddspot.runs.registry import load_model

    torch_model, graph_model = load_model(fitted), load_model(exported[fmt])
    a, b = torch_model.predict(test_images), graph_model.predict(test_images)
    assert graph_model.runtime == {"openvino": "openvino fp32", "onnx": "onnxruntime fp32"}[fmt]
    np.testing.assert_allclose(b.scores, a.scores, rtol=1e-4)
    for ma, mb in zip(a.maps, b.maps):
        assert ma.shape == mb.shape
        assert np.abs(ma - mb).max() / ma.max() < 1e-3
    # decisions agree except for a score within the tolerance of the threshold
    threshold = torch_model.postprocess.image_threshold
    clear = np.abs(a.scores - threshold) > 1e-4 * np.abs(threshold)
    assert clear.any()
    assert np.array_equal(a.decisions[clear], b.decisions[clear])


def test_exported_score_does_not_depend_on_its_batch(exported, test_images):
    from oddspot.runs.registry import load_model

    model = load_model(exported["openvino"])
    together = model.predict(test_images).scores
    alone = np.array([model.predict([image]).scores[0] for image in test_images])
    assert np.array_equal(together, alone)


def test_exported_folder_predicts_without_torch(fitted, exported, tiny_mvtec, tmp_path):
    images = str(tiny_mvtec / "brick" / "test")
    ref = CliRunner().invoke(cli, ["predict", str(fitted), images, "-o", str(tmp_path / "torch"), "--runtime", "torch"])
    assert ref.exit_code == 0, ref.output
    for fmt, folder in exported.items():
        result = cli_without_torch("predict", str(folder), images, "-o", str(tmp_path / fmt), "--no-heatmaps")
        assert result.returncode == 0, result.stderr
        assert result.stdout.rstrip().endswith("TORCH-FREE-OK")
        got, want = _scores_csv(tmp_path / fmt / "scores.csv"), _scores_csv(tmp_path / "torch" / "scores.csv")
        assert got.keys() == want.keys()
        for key in want:
            assert abs(got[key] - want[key]) <= 1e-4 * abs(want[key]), (fmt, key)
        assert not (tmp_path / fmt / "heatmaps").exists()


def test_control_torch_blocker_catches_a_torch_import():
    result = run_without_torch("import oddspot.detectors.patchcore")
    assert result.returncode != 0 and "blocked" in result.stderr


def test_runtime_auto_exports_once_and_again_after_a_refit(fitted, tiny_mvtec, small_options, tmp_path):
    import shutil

    run = tmp_path / "run"
    shutil.copytree(fitted, run, ignore=shutil.ignore_patterns("exports"))
    images = str(tiny_mvtec / "brick" / "test" / "good")
    first = CliRunner().invoke(cli, ["predict", str(run), images, "-o", str(tmp_path / "a")])
    assert first.exit_code == 0, first.output
    assert "exporting" in first.output and "(runtime: openvino fp32)" in first.output
    assert (run / "exports" / "openvino-fp32" / "model.json").is_file()
    second = CliRunner().invoke(cli, ["predict", str(run), images, "-o", str(tmp_path / "b")])
    assert second.exit_code == 0 and "exporting" not in second.output
    config = tmp_path / "model.yaml"
    config.write_text(yaml.safe_dump({**small_options, "coreset_ratio": 0.5}))
    refit = CliRunner().invoke(cli, ["fit", str(tiny_mvtec), "-c", "brick", "-o", str(run), "--config", str(config)])
    assert refit.exit_code == 0, refit.output
    third = CliRunner().invoke(cli, ["predict", str(run), images, "-o", str(tmp_path / "c")])
    assert third.exit_code == 0 and "exporting" in third.output  # the cache belonged to the old model


def test_damaged_graph_is_refused_in_one_line(exported, tiny_mvtec, tmp_path):
    import shutil

    folder = tmp_path / "exp"
    shutil.copytree(exported["openvino"], folder)
    data = bytearray((folder / "trunk.bin").read_bytes())
    data[100] ^= 0xFF
    (folder / "trunk.bin").write_bytes(bytes(data))
    result = CliRunner().invoke(cli, ["predict", str(folder), str(tiny_mvtec / "brick" / "test"), "-o", str(tmp_path / "o")])
    assert result.exit_code == 2
    assert "trunk.bin: size or sha256 does not match" in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("args, message", [
    (["--runtime", "onnxruntime"], "runs with --runtime openvino"),
    (["--runtime", "torch"], "runs with --runtime openvino"),
])
def test_exported_folder_runs_on_its_own_runtime(exported, tiny_mvtec, tmp_path, args, message):
    result = CliRunner().invoke(cli, ["predict", str(exported["openvino"]), str(tiny_mvtec / "brick" / "test"),
                                      "-o", str(tmp_path / "o"), *args])
    assert result.exit_code == 2 and message in result.output


def test_bad_export_options_are_one_line_errors(fitted, tmp_path, tiny_mvtec):
    runner = CliRunner()
    bf16 = runner.invoke(cli, ["export", str(fitted), "--format", "onnx", "--precision", "bf16", "-o", str(tmp_path / "x")])
    assert bf16.exit_code == 2 and "bf16 is an OpenVINO precision" in bf16.output
    torch_int8 = runner.invoke(cli, ["predict", str(fitted), str(tiny_mvtec / "brick" / "test"), "-o", str(tmp_path / "y"),
                                     "--runtime", "torch", "--precision", "int8"])
    assert torch_int8.exit_code == 2 and "torch runtime computes in fp32" in torch_int8.output
    again = runner.invoke(cli, ["export", str(fitted / "exports" / "openvino-fp32"), "-o", str(tmp_path / "z")])
    assert again.exit_code == 2


def test_graph_stops_at_the_deepest_layer_used(fitted, tmp_path):
    import onnx

    from oddspot.export.folder import export_run

    export_run(fitted, "onnx", "fp32", tmp_path / "onnx")
    graph = onnx.load_from_string((tmp_path / "onnx" / "trunk.onnx").read_bytes()).graph
    channels = {tuple(init.dims)[0] for init in graph.initializer if len(init.dims) == 4}
    assert 112 in channels  # stage5, the deepest layer PatchCore uses
    assert not channels & {192, 320, 1152, 1280}  # stage6, stage7 and the head never run, so are not exported


@pytest.mark.slow
def test_int8_exports_load_and_onnx_int8_tracks_fp32(fitted, test_images, tmp_path):
    from oddspot.export.folder import export_run
    from oddspot.runs.registry import load_model

    want = load_model(fitted).predict(test_images).scores
    for fmt, runtime in (("onnx", "onnxruntime int8"), ("openvino", "openvino int8")):
        info = export_run(fitted, fmt, "int8", tmp_path / fmt, samples=8)
        assert info["calibration_images"] == 8
        model = load_model(tmp_path / fmt)
        assert model.runtime == runtime
        got = model.predict(test_images).scores
        assert np.isfinite(got).all() and not np.array_equal(got, want)
        if fmt == "onnx":  # OpenVINO int8 is not faithful on this backbone (README, Deploy): only loading is checked
            assert np.corrcoef(got, want)[0, 1] > 0.8


def test_the_command_line_starts_without_numpy_torch_or_pil():
    code = "import sys, oddspot.cli; print(sorted(m for m in ('numpy', 'torch', 'PIL', 'rich') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_hnsw_search_on_predict_scores_no_lower_than_exact(fitted, tiny_mvtec, tmp_path):
    images = str(tiny_mvtec / "brick" / "test")
    for search in ("exact", "hnsw"):
        result = CliRunner().invoke(cli, ["predict", str(fitted), images, "-o", str(tmp_path / search), "--search", search,
                                          "--no-heatmaps"])
        assert result.exit_code == 0, result.output
    exact, hnsw = _scores_csv(tmp_path / "exact" / "scores.csv"), _scores_csv(tmp_path / "hnsw" / "scores.csv")
    assert all(hnsw[k] >= exact[k] - 1e-6 for k in exact)
