"""Inputs that must not break a batch: images over the pixel budget (checked from the header),
file names that are not UTF-8, `--out` folders that clash with the inputs, and exit codes when
some or all inputs fail."""

from __future__ import annotations

import csv
import json
import os
import shutil
import struct
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from PIL import Image, ImageFile

from oddspot.cli import cli
from oddspot.data.image_io import (
    DEFAULT_MAX_PIXELS,
    check_max_pixels,
    max_pixels,
    pixel_budget,
    read_image,
    read_mask,
)
from oddspot.errors import OddspotError
from oddspot.files import safe_text, write_json
from oddspot.paths import check_out, inside
from oddspot.records.evaluation import write_csv

pytestmark = pytest.mark.usefixtures("one_thread")
NON_UTF8 = os.fsdecode(b"caf\xe9-\xff.png")  # a Latin-1 file name, as Linux hands it to Python


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares width x height but holds almost no data: what a decoder sees first of a bomb."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def one_line_error(result, *needles: str) -> str:
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2, result.output
    assert lines and lines[-1].startswith("error:") and "Traceback" not in result.output, result.output
    assert all(n in lines[-1] for n in needles), lines[-1]
    return lines[-1]


def rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# --- the pixel budget --------------------------------------------------------------------------


def test_a_bomb_is_refused_from_its_header_without_decoding(tmp_path, monkeypatch):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(20000, 20000))

    def no_decoding(self):
        raise AssertionError("pixel data decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # PIL's DecompressionBombWarning must not escape either
        with pytest.raises(OddspotError) as info:
            read_image(bomb)
        with pytest.raises(OddspotError, match="mask has 400.0 Mpx"):
            read_mask(bomb)
    message = str(info.value)  # PIL refuses this one on open; the message still names the size and the budget
    assert "bomb.png" in message and "400.0 Mpx" in message and "budget of 64 Mpx" in message and "\n" not in message
    tall = tmp_path / "tall.png"
    tall.write_bytes(png_header(9000, 9000))  # 81 Mpx: under PIL's limit, over the budget
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(OddspotError, match=r"tall.png: image is 9000x9000 \(81.0 Mpx\), over the pixel budget of 64 Mpx"):
            read_image(tall)


def test_pil_own_bomb_limit_is_a_one_line_error_too(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png_header(20000, 20000))
    with pixel_budget(check_max_pixels(2 * 89_478_485)), pytest.raises(OddspotError, match="bomb.png: image has 400.0 Mpx"):
        read_image(bomb)


def test_budget_is_scoped_checked_and_applies_to_masks(tmp_path):
    image = tmp_path / "a.png"
    Image.fromarray(np.full((30, 40), 200, np.uint8)).save(image)
    assert max_pixels() == DEFAULT_MAX_PIXELS
    with pixel_budget(1200):
        assert read_image(image).shape == (30, 40, 3) and read_mask(image).all()
        with pixel_budget(1199):
            with pytest.raises(OddspotError, match=r"40x30 .*pixel budget"):
                read_image(image)
            with pytest.raises(OddspotError, match="mask is 40x30"):
                read_mask(image)
        assert max_pixels() == 1200
    assert max_pixels() == DEFAULT_MAX_PIXELS
    for bad in (0, -5, True, 2.5, "64", 10**12):
        with pytest.raises(OddspotError, match="--max-pixels"):
            check_max_pixels(bad)


def test_large_images_are_read_at_a_reduced_scale_when_asked(tmp_path):
    path = tmp_path / "big.jpg"
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 255, (800, 1000, 3), dtype=np.uint8)).save(path, quality=90)
    assert read_image(path).shape == (800, 1000, 3)
    assert read_image(path, reduce_to=100_000).shape == (400, 500, 3)  # 1/2 keeps >= 100k pixels, 1/4 would not
    assert read_image(path, reduce_to=10_000).shape == (100, 125, 3)  # at most 1/8
    assert read_image(path, reduce_to=10**7).shape == (800, 1000, 3)
    png = tmp_path / "big.png"
    full = rng.integers(0, 255, (800, 1000, 3), dtype=np.uint8)
    Image.fromarray(full).save(png)
    reduced = read_image(png, reduce_to=100_000)  # decoded whole, then averaged over 2 x 2 blocks
    block_mean = full.reshape(400, 2, 500, 2, 3).astype(np.float64).mean(axis=(1, 3))
    assert reduced.shape == (400, 500, 3) and np.abs(reduced - block_mean).max() <= 0.5


# --- names and paths ----------------------------------------------------------------------------


def test_non_utf8_names_are_written_escaped_in_csv_and_json(tmp_path):
    assert safe_text("plain é.png") == "plain é.png"
    assert safe_text(NON_UTF8) == "caf\\xe9-\\xff.png"
    write_csv(tmp_path / "s.csv", ["path", "score"], [(NON_UTF8, 1.0)])
    write_json(tmp_path / "s.json", {NON_UTF8: [NON_UTF8, {"p": NON_UTF8}], "n": 1})
    text = (tmp_path / "s.csv").read_bytes().decode("utf-8")
    assert "caf\\xe9-\\xff.png" in text
    obj = json.loads((tmp_path / "s.json").read_bytes().decode("utf-8"))
    assert obj == {"caf\\xe9-\\xff.png": ["caf\\xe9-\\xff.png", {"p": "caf\\xe9-\\xff.png"}], "n": 1}
    assert "\\ud" not in (tmp_path / "s.json").read_text()


def test_check_out_refuses_files_inputs_and_overlaps(tmp_path):
    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (tmp_path / "file.txt").write_text("x")
    check_out(None, [data])
    check_out(tmp_path / "out", [data, None])
    check_out(data.parent / "data-out", [data])  # a name that starts like the input is not inside it
    for out, needle in [(tmp_path / "file.txt", "is a file"), (data, "is the input"), (data / "sub" / "o", "inside the input"),
                        (tmp_path, "holds the input")]:
        with pytest.raises(OddspotError, match=needle):
            check_out(out, [data])
    (tmp_path / "link").symlink_to(data)
    with pytest.raises(OddspotError, match="inside the input"):
        check_out(tmp_path / "link" / "o", [data])


def test_outputs_never_leave_out(tmp_path):
    out = tmp_path / "out"
    (out / "heatmaps").mkdir(parents=True)
    assert inside(out, "heatmaps/a/b.png") == out / "heatmaps" / "a" / "b.png"
    for rel in ("../x.png", "/etc/x.png", "heatmaps/../../x.png"):
        with pytest.raises(OddspotError, match="would leave"):
            inside(out, rel)
    (out / "heatmaps" / "esc").symlink_to(tmp_path)
    with pytest.raises(OddspotError, match="through a link"):
        inside(out, "heatmaps/esc/x.png")


# --- inspect ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def inspect_run(tiny_mvtec, small_options, tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("inputs-run") / "run"
    config = run.parent / "options.yaml"
    config.write_text(yaml.safe_dump(small_options))
    res = CliRunner().invoke(cli, ["fit", str(tiny_mvtec), "-c", "brick", "-o", str(run), "--config", str(config)])
    assert res.exit_code == 0, res.output
    return run


@pytest.fixture()
def folder_with_bomb(tiny_mvtec, tmp_path) -> Path:
    """Three good tiles (one with a non-UTF-8 name) and a 300 x 300 'bomb' for a 20000-pixel budget."""
    folder = tmp_path / "inputs"
    folder.mkdir()
    tiles = sorted((tiny_mvtec / "brick" / "test" / "good").glob("*.png"))
    for name, tile in zip(("a.png", "b.png", NON_UTF8), tiles):
        shutil.copy(tile, folder / name)
    Image.fromarray(np.full((300, 300, 3), 90, np.uint8)).save(folder / "bomb.png")
    return folder


def test_inspect_predict_skips_the_image_over_budget_and_scores_the_others(inspect_run, folder_with_bomb, tmp_path):
    out = tmp_path / "pred"
    res = CliRunner().invoke(cli, ["predict", str(inspect_run), str(folder_with_bomb), "-o", str(out),
                                   "--max-pixels", "20000", "--save-maps"])
    assert res.exit_code == 0, res.output
    assert "scored 3 images, 1 skipped" in res.output and "errors.csv" in res.output
    scored = rows(out / "scores.csv")
    assert sorted(Path(r["path"]).name for r in scored) == ["a.png", "b.png", "caf\\xe9-\\xff.png"]
    (error,) = rows(out / "errors.csv")
    assert error["path"].endswith("bomb.png") and "300x300" in error["error"] and "0.02 Mpx" in error["error"]
    assert (out / "heatmaps" / f"{NON_UTF8}.png").is_file() and (out / "maps" / "a.png.npy").is_file()


def test_inspect_predict_with_no_readable_image_exits_2(inspect_run, folder_with_bomb, tmp_path):
    out = tmp_path / "pred"
    res = CliRunner().invoke(cli, ["predict", str(inspect_run), str(folder_with_bomb), "-o", str(out), "--max-pixels", "100"])
    one_line_error(res, "none of the 4 images could be read", "errors.csv")
    assert len(rows(out / "errors.csv")) == 4


def test_inspect_out_must_be_a_folder_apart_from_the_inputs(inspect_run, folder_with_bomb, tmp_path):
    (tmp_path / "taken.txt").write_text("x")
    for out in (tmp_path / "taken.txt", folder_with_bomb / "pred", inspect_run, tmp_path):
        res = CliRunner().invoke(cli, ["predict", str(inspect_run), str(folder_with_bomb), "-o", str(out)])
        one_line_error(res, "--out")
    assert not (folder_with_bomb / "pred").exists()


def test_inspect_evaluate_records_the_budget_and_refuses_unreadable_test_images(inspect_run, tiny_mvtec, tmp_path):
    res = CliRunner().invoke(cli, ["evaluate", str(inspect_run), str(tiny_mvtec), "-c", "brick", "-o", str(tmp_path / "e"),
                                   "--bootstrap", "0", "--gallery", "0", "--max-pixels", "5000"])
    assert res.exit_code == 0, res.output
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["run"]["max_pixels"] == 5000
    res = CliRunner().invoke(cli, ["evaluate", str(inspect_run), str(tiny_mvtec), "-c", "brick", "-o", str(tmp_path / "f"),
                                   "--bootstrap", "0", "--gallery", "0", "--max-pixels", "100"])
    one_line_error(res, "64x64", "pixel budget")


# --- road ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def road_run(tmp_path_factory):
    from model_cases import road_deeplabv3plus

    tmp = tmp_path_factory.mktemp("inputs-road")
    case = road_deeplabv3plus(tmp)
    case.model.save(tmp / "run")
    images = sorted((tmp / "streets" / "test" / "images").rglob("*.png"))
    return tmp / "run", images, tmp / "streets"


def test_road_predict_skips_the_image_over_budget(road_run, tmp_path):
    run, images, _ = road_run
    bomb = tmp_path / "bomb.png"
    Image.fromarray(np.full((300, 300, 3), 90, np.uint8)).save(bomb)
    out = tmp_path / "pred"
    res = CliRunner().invoke(cli, ["road", "predict", str(run), str(images[0]), str(bomb), str(images[1]), "-o", str(out),
                                   "--max-pixels", "20000", "--no-panels"])
    assert res.exit_code == 0, res.output
    assert "2 images scored" in res.output and "1 skipped" in res.output
    assert [Path(r["path"]).name for r in rows(out / "scores.csv")] == [images[0].name, images[1].name]
    (error,) = rows(out / "errors.csv")
    assert error["path"] == str(bomb) and "300x300" in error["error"]
    res = CliRunner().invoke(cli, ["road", "predict", str(run), str(bomb), "-o", str(tmp_path / "none"),
                                   "--max-pixels", "20000"])
    one_line_error(res, "none of the 1 images could be read")


def test_road_evaluate_with_every_image_over_budget_exits_2(road_run, tmp_path):
    run, _, data = road_run
    res = CliRunner().invoke(cli, ["road", "evaluate", str(run), str(data), "-o", str(tmp_path / "e"), "--max-pixels", "100"])
    one_line_error(res, "no readable")


# --- video --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def video_setup(tmp_path_factory):
    from oddspot.data.synthetic_video import generate_video_dataset
    from oddspot.video.datasets import open_video_dataset
    from oddspot.video.motion import MotionDetector

    tmp = tmp_path_factory.mktemp("inputs-video")
    data = tmp / "data"
    generate_video_dataset(data, seed=1, num_train=1, num_test=2, num_frames=60, size=(48, 64))
    MotionDetector(size=(48, 64), coreset_ratio=0.25, sigma=1.0).fit(open_video_dataset(data, "train")).save(tmp / "run")
    # one frame of test video 02 is a 300 x 300 image: over a 10000-pixel budget, within the default one
    Image.fromarray(np.full((300, 300, 3), 90, np.uint8)).save(data / "testing" / "frames" / "02" / "0030.png")
    return tmp / "run", data


def test_video_predict_and_evaluate_skip_the_video_with_a_frame_over_budget(video_setup, tmp_path):
    run, data = video_setup
    frames = data / "testing" / "frames"
    res = CliRunner().invoke(cli, ["video", "predict", str(run), str(frames), "-o", str(tmp_path / "p"),
                                   "--max-pixels", "10000"])
    assert res.exit_code == 0, res.output
    assert "1 videos skipped" in res.output
    assert {r["video"] for r in rows(tmp_path / "p" / "scores.csv")} == {"01"}
    (error,) = rows(tmp_path / "p" / "errors.csv")
    assert error["video"] == "02" and "0030.png" in error["error"] and "300x300" in error["error"]

    res = CliRunner().invoke(cli, ["video", "evaluate", str(run), str(data), "-o", str(tmp_path / "e"), "--max-pixels", "10000"])
    assert res.exit_code == 0, res.output
    assert "1 videos skipped" in res.output
    metrics = json.loads((tmp_path / "e" / "metrics.json").read_text())
    assert metrics["max_pixels"] == 10000 and [s["video"] for s in metrics["skipped_videos"]] == ["02"]
    assert set(metrics["per_video"]) == {"01"}


def test_video_with_every_video_unreadable_exits_2(video_setup, tmp_path):
    run, data = video_setup
    res = CliRunner().invoke(cli, ["video", "predict", str(run), str(data / "testing" / "frames"), "-o", str(tmp_path / "p"),
                                   "--max-pixels", "100"])
    one_line_error(res, "no video could be read")
    res = CliRunner().invoke(cli, ["video", "evaluate", str(run), str(data), "-o", str(tmp_path / "e"), "--max-pixels", "100"])
    one_line_error(res, "no test video could be read")


# --- experiments --------------------------------------------------------------------------------


def test_experiment_whose_every_cell_failed_exits_2(tiny_mvtec, tmp_path, monkeypatch):
    from oddspot.experiments import runner

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(runner, "run_cell", broken)
    config = tmp_path / "study.yaml"
    config.write_text(yaml.safe_dump({
        "name": "all fail", "out": "out", "seed": 0, "bootstrap": 0, "data": {"path": str(tiny_mvtec)},
        "categories": ["brick"], "protocols": ["clean"],
        "detectors": {"patchcore": {"image_size": 64, "coreset_ratio": 0.25, "batch_size": 4}}}))
    res = CliRunner().invoke(cli, ["experiment", str(config)])
    one_line_error(res, "all 1 cells failed", "error.txt")
