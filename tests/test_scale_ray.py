"""`--engine ray` on a local Ray instance (one per module): Ray predict and evaluate equal the single-process
verbs exactly, a killed actor still yields every input exactly once, a rerun resumes, and without Ray the
option says how to install it.

Ray starts in seconds but every actor pool loads torch and the model again, so the tests are few and share
their data. Everything runs with one torch thread on both sides: float sums depend on the thread count.
"""

from __future__ import annotations

import csv
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from oddspot.cli import cli
from oddspot.errors import OddspotError
from oddspot.scale.engine import KILL_AFTER_ENV, KILL_MARKER_ENV

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")

N_GOOD, N_BAD = 100, 100


def run_cli(*args: object):
    return CliRunner().invoke(cli, [str(a) for a in args])


@pytest.fixture(scope="module")
def ray_session():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, logging_level="warning")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def one_torch_thread():
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _fit(data: Path, out: Path) -> Path:
    """A small calibrated PatchCore saved to `out` (no split.json: evaluate uses --split standard)."""
    from oddspot.calibration import calibrate
    from oddspot.data.image_io import list_images, read_image
    from oddspot.detectors.patchcore import PatchCore

    train = [read_image(p) for p in list_images(data / "brick" / "train" / "good")]
    model = PatchCore(coreset_ratio=0.25, seed=0, image_size=64, batch_size=4).fit(train)
    normal = [read_image(p) for p in list_images(data / "brick" / "test" / "good")[:12]]
    pred = model.predict(normal)
    model.postprocess = calibrate(pred.scores, np.zeros(len(normal), int), pred.maps,
                                  [np.zeros(m.shape, bool) for m in pred.maps], "quantile", quantile=0.75)
    model.save(out)
    return out


@pytest.fixture(scope="module")
def images(tmp_path_factory, one_torch_thread):
    """200 test tiles (64 px) and one broken file, a run fitted on the training tiles, and a 58-image manifest."""
    from oddspot.data.demo_dataset import build_demo_dataset
    from oddspot.data.image_io import list_images

    root = tmp_path_factory.mktemp("scale")
    data = build_demo_dataset(root / "data", ("brick",), n_train=8, n_test_good=N_GOOD, n_test_bad=N_BAD, tile=64, seed=1)
    bad = root / "bad"
    bad.mkdir()
    (bad / "broken.png").write_bytes(b"not a png at all")
    files = list_images(data / "brick" / "test", recursive=True)
    assert len(files) == N_GOOD + N_BAD
    manifest = root / "manifest.csv"
    manifest.write_text("path\n" + "".join(f"{f.relative_to(root)}\n" for f in files[::7] + files[1::7]))
    return {"data": data, "test": data / "brick" / "test", "bad": bad, "run": _fit(data, root / "run"),
            "manifest": manifest, "root": root}


@pytest.fixture(scope="module")
def single(images, tmp_path_factory):
    """The single-process `inspect.predict` of the 200 tiles and the broken file, with maps."""
    from oddspot import inspect

    out = tmp_path_factory.mktemp("single")
    inspect.predict(images["run"], [images["test"], images["bad"]], out, save_maps=True, warn=lambda m: None)
    return out


def _table(out: Path) -> list[dict]:
    return pq.read_table(out / "scores.parquet").to_pylist()


@pytest.fixture(scope="module")
def ray_predicted(ray_session, images, tmp_path_factory):
    from oddspot.scale.predict import predict

    out = tmp_path_factory.mktemp("ray") / "out"
    warned: list[str] = []
    result = predict("inspect", images["run"], [images["test"], images["bad"]], out, actors=2, batch_size=16, threads=1,
                     runtime="torch", rows_per_shard=50, save_maps=True, warn=warned.append)
    return out, result, warned


def test_ray_predict_equals_single_process_on_200_images(ray_predicted, single, images):
    out, result, warned = ray_predicted
    assert (result["scored"], result["skipped"], result["new"], result["resumed"]) == (200, 1, 201, 0)
    rows = list(csv.DictReader((single / "scores.csv").open()))
    assert len(rows) == 200
    table = _table(out)
    good = [r for r in table if r["error"] is None]
    assert [r["path"] for r in good] == [r["path"] for r in rows]  # input order, each input once
    for mine, theirs in zip(good, rows):
        assert mine["score"] == float(theirs["score"])  # bit for bit: the CSV holds the float's repr
        assert mine["normalized"] == float(theirs["normalized"]) and mine["decision"] == int(theirs["anomalous"])
    assert len({r["decision"] for r in good}) == 2  # control: both decisions occur, the comparison is not vacuous
    failed = [r for r in table if r["error"] is not None]
    assert [r["path"] for r in failed] == [str(images["bad"] / "broken.png")] and failed[0]["score"] is None
    assert warned == [f"skipped: {failed[0]['error']}"] and "broken.png" in failed[0]["error"]
    assert [r["path"] for r in csv.DictReader((out / "errors.csv").open())] == [failed[0]["path"]]
    rel = Path(rows[5]["path"]).relative_to(images["test"])
    assert np.array_equal(np.load(out / "maps" / f"{rel}.npy"), np.load(single / "maps" / f"{rel}.npy"))


def test_rerun_resumes_from_the_shards(ray_predicted, images):
    from oddspot.scale.predict import predict
    from oddspot.scale.shards import shard_files

    out, _, _ = ray_predicted
    before = _table(out)
    shards = shard_files(out)
    assert len(shards) >= 4
    lost = pq.read_table(shards[-1]).num_rows
    shards[-1].unlink()  # as if the job had stopped before its last shard
    (out / "scores.parquet").unlink()
    sources = [images["test"], images["bad"]]
    with pytest.raises(OddspotError, match="another job"):  # other options: the shards are not this job's
        predict("inspect", images["run"], sources, out, runtime="torch", save_maps=False, warn=lambda m: None)
    again = predict("inspect", images["run"], sources, out, actors=1, batch_size=16, threads=1, runtime="torch",
                    save_maps=True, warn=lambda m: None)
    assert (again["new"], again["resumed"]) == (lost, 201 - lost)
    assert _table(out) == before
    done = predict("inspect", images["run"], sources, out, runtime="torch", save_maps=True, warn=lambda m: None)
    assert done["new"] == 0 and _table(out) == before  # nothing left: no Ray job at all


def test_killed_actor_still_yields_every_input_exactly_once(ray_session, images, ray_predicted, tmp_path, monkeypatch):
    marker = tmp_path / "killed"
    monkeypatch.setenv(KILL_AFTER_ENV, "2")
    monkeypatch.setenv(KILL_MARKER_ENV, str(marker))
    out = tmp_path / "out"
    res = run_cli("inspect", "predict", images["run"], images["manifest"], "-o", out, "--engine", "ray", "--actors", "2",
                  "--batch-size", "4", "--threads", "1", "--runtime", "torch", "--device", "cpu")
    assert res.exit_code == 0, res.output
    assert marker.exists()  # an actor did die mid-run
    table = _table(out)
    wanted = [str(images["root"] / line) for line in images["manifest"].read_text().split()[1:]]
    assert len(wanted) == 58 and [r["path"] for r in table] == wanted
    assert f"scored {len(wanted)} inputs on Ray (2 actors, torch)" in res.output
    reference = {r["path"]: r["score"] for r in _table(ray_predicted[0])}
    assert all(r["score"] == reference[r["path"]] for r in table)


def _record(out: Path) -> dict:
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("predict_seconds", "engine", "actors"):
        metrics["run"].pop(key, None)
    return {"metrics": metrics, "scores": (out / "scores.csv").read_text(), "curves": (out / "curves.json").read_text(),
            "gallery": (out / "gallery" / "gallery.json").read_text()}


def test_ray_evaluate_equals_single_process_exactly_despite_a_killed_actor(ray_session, images, tmp_path, monkeypatch):
    from oddspot.data.demo_dataset import build_demo_dataset

    data = build_demo_dataset(tmp_path / "eval", ("brick",), n_train=2, n_test_good=6, n_test_bad=10, tile=64, seed=2)
    common = ["inspect", "evaluate", images["run"], data, "-c", "brick", "--split", "standard", "--bootstrap", "40",
              "--gallery", "2", "--threads", "1", "--runtime", "torch", "--device", "cpu"]
    local = run_cli(*common, "-o", tmp_path / "local")
    assert local.exit_code == 0, local.output
    marker = tmp_path / "killed"
    monkeypatch.setenv(KILL_AFTER_ENV, "1")
    monkeypatch.setenv(KILL_MARKER_ENV, str(marker))
    res = run_cli(*common, "-o", tmp_path / "ray", "--engine", "ray", "--actors", "2")
    assert res.exit_code == 0, res.output
    assert marker.exists()
    ray_record, local_record = _record(tmp_path / "ray"), _record(tmp_path / "local")
    assert ray_record == local_record
    pixel = local_record["metrics"]["pixel"]
    assert pixel["exact"] and 0 < pixel["aupro"] < 1 and pixel["per_image"]["n_used"] > 0  # not a vacuous record
    assert json.loads((tmp_path / "ray" / "metrics.json").read_text())["run"]["engine"] == "ray"


def test_without_ray_the_engine_option_says_how_to_install_it(monkeypatch, images, tmp_path):
    monkeypatch.setitem(sys.modules, "ray", None)
    res = run_cli("inspect", "predict", images["run"], images["bad"], "-o", tmp_path / "o", "--engine", "ray")
    assert res.exit_code == 2
    lines = res.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "pip install 'oddspot[ray]'" in lines[0]


def test_an_unreachable_address_is_one_line(images, tmp_path):
    res = run_cli("inspect", "predict", images["run"], images["bad"], "-o", tmp_path / "o", "--engine", "ray",
                  "--address", "127.0.0.1:1")
    assert res.exit_code == 2 and res.output.count("\n") == 1 and "no Ray cluster answers there" in res.output
    assert not (tmp_path / "o").exists()


def test_ray_options_need_the_ray_engine(images, tmp_path):
    res = run_cli("inspect", "predict", images["run"], images["bad"], "-o", tmp_path / "o", "--actors", "4")
    assert res.exit_code == 2 and "only with --engine ray" in res.output
    shutil.rmtree(tmp_path / "o", ignore_errors=True)


def _same_record(a: Path, b: Path, drop: tuple[str, ...]) -> None:
    ma, mb = (json.loads((p / "metrics.json").read_text()) for p in (a, b))
    for m in (ma, mb):
        for key in drop:
            m.pop(key, None)
    assert ma == mb
    for name in ("scores.csv", "curves.json"):
        assert (a / name).read_text() == (b / name).read_text(), name


def test_road_and_video_on_ray_equal_their_single_process_records(ray_session, one_torch_thread, tmp_path):
    """The road record (validation mIoU from merged confusion matrices, pooled and per-image states) and the
    video record (per-video predictions) rebuilt from Ray parts equal the single-process ones."""
    from model_cases import road_deeplabv3plus, video_motion

    from oddspot.road.evaluate import evaluate as road_evaluate
    from oddspot.scale.evaluate import evaluate_road, evaluate_video
    from oddspot.video import pipeline

    road = road_deeplabv3plus(tmp_path / "r")
    road.model.save(tmp_path / "road_run")
    road_evaluate(road.model, road.data, tmp_path / "road_local", panels=1, run=tmp_path / "road_run", log=lambda m: None)
    evaluate_road(tmp_path / "road_run", road.data, tmp_path / "road_ray", panels=1, actors=1, threads=1, device="cpu",
                  runtime="torch", log=lambda m: None)
    _same_record(tmp_path / "road_local", tmp_path / "road_ray", ("timing", "engine", "actors"))
    assert [p.name for p in (tmp_path / "road_ray" / "panels").iterdir()] == ["000000_panel.png"]

    video = video_motion(tmp_path / "v")
    video.model.save(tmp_path / "video_run")
    pipeline.evaluate(tmp_path / "video_run", video.data, tmp_path / "video_local", device="cpu", warn=lambda m: None)
    evaluate_video(tmp_path / "video_run", video.data, tmp_path / "video_ray", actors=1, threads=1, device="cpu",
                   runtime="torch", warn=lambda m: None)
    _same_record(tmp_path / "video_local", tmp_path / "video_ray", ("engine", "actors"))


def test_sources_folders_and_manifests_list_in_order(tmp_path):
    import pyarrow as pa

    from oddspot.scale.inputs import list_inputs

    for name in ("b/2.png", "b/1.png", "a.png", ".hidden.png", "notes.txt"):
        (tmp_path / "imgs" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "imgs" / name).write_bytes(b"x")
    listed = list_inputs([tmp_path / "imgs"])
    assert [i.rel for i in listed] == ["a.png", "b/1.png", "b/2.png"]
    pq.write_table(pa.table({"path": ["imgs/b/2.png", str(tmp_path / "imgs" / "a.png")]}), tmp_path / "m.parquet")
    assert [(i.path, i.rel) for i in list_inputs([tmp_path / "m.parquet"])] == [
        (str(tmp_path / "imgs" / "b" / "2.png"), "imgs/b/2.png"), (str(tmp_path / "imgs" / "a.png"), "a.png")]
    (tmp_path / "bad.csv").write_text("file\nimgs/a.png\n")
    with pytest.raises(OddspotError, match="no 'path' column"):
        list_inputs([tmp_path / "bad.csv"])
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "a.png").write_bytes(b"x")
    with pytest.raises(OddspotError, match="would both be written as a.png"):
        list_inputs([tmp_path / "imgs", tmp_path / "other"])


def test_ray_evaluate_of_a_loco_category_carries_the_same_spro(ray_session, one_torch_thread, tmp_path):
    """Each worker reads the sPRO regions of its images from their mask files and defects_config.json; the merged
    states give the single-process record, sPRO per family included."""
    from dataset_fixtures import make_loco

    from oddspot import inspect
    from oddspot.scale.evaluate import evaluate_inspect

    data = make_loco(tmp_path / "loco", n_train=4, n_val=2, n_good=3, n_logical=2, n_structural=3)
    inspect.fit(data, "breakfast_box", tmp_path / "run", options={"image_size": 64, "coreset_ratio": 0.25},
                split="standard")
    inspect.evaluate(tmp_path / "run", None, None, tmp_path / "local", bootstrap=0, gallery=0, warn=lambda m: None)
    evaluate_inspect(tmp_path / "run", None, None, tmp_path / "ray", bootstrap=0, gallery=0, actors=2, threads=1,
                     device="cpu", runtime="torch", warn=lambda m: None)
    local, distributed = (json.loads((tmp_path / p / "metrics.json").read_text()) for p in ("local", "ray"))
    for m in (local, distributed):
        for key in ("predict_seconds", "engine", "actors", "max_pixels"):
            m["run"].pop(key, None)
    assert local == distributed
    assert local["pixel"]["spro"]["structural_anomalies"]["n_regions"] == 4  # the second of three images has two files
