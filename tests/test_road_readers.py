"""Road-anomaly benchmarks with binary labels: each official layout, detection, labels, pooled metrics.

The generators below write each dataset's layout exactly as its own code reads it (file and folder
names, label values): Fishyscapes Lost & Found and Static (official and repackaged), Road Anomaly,
SegmentMeIfYouCan RoadAnomaly21 / RoadObstacle21. The pooled metrics are compared with
the definitions (scikit-learn's conventions) on the same valid pixels, scored by a tiny road model (untrained network, fitted scores).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from model_cases import untrained_road_model
from oddspot.cli import cli
from oddspot.data.road_benchmarks import VOID, detect_road_layout, open_benchmark
from oddspot.data.streethazards import load_split
from oddspot.data.toy_streets import ToyStreetConfig, generate_toy_streets
from oddspot.errors import OddspotError
from oddspot.road.external import evaluate_benchmark

pytestmark = pytest.mark.usefixtures("one_thread")
H, W = 48, 96
LAF_IDS = ("04_Maurener_Weg_8_000000_000030", "13_Elly_Beinhorn_Str_000001_000080")
CS_IDS = ("frankfurt_000001_034047", "lindau_000012_000019")


def stored_labels(seed: int, values: tuple[int, ...] = (0, 1, 255)) -> np.ndarray:
    """H x W stored label values: mostly the first value, a block of the second, a stripe of the rest."""
    rng = np.random.default_rng(seed)
    out = np.full((H, W), values[0], np.uint8)
    r, c = rng.integers(4, H - 20), rng.integers(4, W - 30)
    out[r:r + 12, c:c + 20] = values[1]
    for v in values[2:]:
        out[: 3 + seed % 3, :] = v
    return out


def write_png(path: Path, array: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


def scenes(toy: Path) -> list[np.ndarray]:
    test = load_split(toy, "test")
    return [test[i].image for i in range(len(test))]


def make_fishyscapes_laf(root: Path, images: list[np.ndarray]) -> dict[str, np.ndarray]:
    """fishyscapes_lostandfound.zip's label files beside LostAndFound's leftImg8bit tree."""
    expected = {}
    for i, laf_id in enumerate(LAF_IDS):
        stored = stored_labels(i)
        write_png(root / "fishyscapes_lostandfound" / f"{i:04d}_{laf_id}_labels.png", stored)
        scene = laf_id.rsplit("_", 2)[0]
        write_png(root / "leftImg8bit" / ("test" if i else "train") / scene / f"{laf_id}_leftImg8bit.png", images[i])
        expected[f"{i:04d}_{laf_id}"] = stored
    (root / "fishyscapes_lostandfound" / "._0000_x_labels.png").write_bytes(b"AppleDouble")
    return expected


def make_fishyscapes_static(root: Path, images: list[np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """fs_val_v3.zip's labels and rgb.npz overlays beside Cityscapes' leftImg8bit/val tree."""
    expected = {}
    rng = np.random.default_rng(7)
    for i, cs_id in enumerate(CS_IDS):
        stored = stored_labels(i + 5)
        overlay = rng.integers(-300, 300, size=(H, W, 3)).astype(np.int16)
        write_png(root / "fs_static" / f"{i:04d}_{cs_id}_labels.png", stored)
        np.savez_compressed(root / "fs_static" / f"{i:04d}_{cs_id}_rgb.npz", rgb=overlay)
        write_png(root / "leftImg8bit" / "val" / cs_id.split("_")[0] / f"{cs_id}_leftImg8bit.png", images[i])
        composed = np.clip(images[i].astype(int) + overlay.astype(int), 0, 255).astype(np.uint8)
        expected[f"{i:04d}_{cs_id}"] = (stored, composed)
    return expected


def make_repackaged(root: Path, images: list[np.ndarray]) -> dict[str, np.ndarray]:
    """The common repackaging: original/<name>.png and labels/<name>.png (0 / 1 / 255)."""
    expected = {}
    for i, image in enumerate(images[:2]):
        name = f"{i}_{LAF_IDS[i]}"
        write_png(root / "original" / f"{name}.png", image)
        write_png(root / "labels" / f"{name}.png", stored_labels(i + 2))
        expected[name] = stored_labels(i + 2)
    (root / "original" / ".DS_Store").write_bytes(b"\0")
    return expected


def make_road_anomaly(root: Path, images: list[np.ndarray]) -> dict[str, np.ndarray]:
    """Lis et al.: frame_list.json, frames/<name>.jpg, frames/<name>.labels/labels_semantic.png (0, 1 road, 2)."""
    names = ["animals01_Guiguinto_railway_station_Calves", "cones03_Bang_Na_Trat_Highway"]
    expected = {}
    for i, name in enumerate(names):
        Image.fromarray(images[i]).save(_mk(root / "frames" / f"{name}.jpg"), quality=95)
        stored = stored_labels(i, (0, 2, 1))
        write_png(root / "frames" / f"{name}.labels" / "labels_semantic.png", stored)
        expected[name] = stored
    (root / "frame_list.json").write_text(json.dumps([f"{n}.jpg" for n in reversed(names)]))
    return expected


def make_smiyc(root: Path, images: list[np.ndarray], track: str) -> dict[str, np.ndarray]:
    """dataset_<Track>/images/<id>.<jpg|webp> with labels_masks/<id>_labels_semantic.png for validation ids."""
    folder, suffix = {"anomaly": ("dataset_AnomalyTrack", "jpg"), "obstacle": ("dataset_ObstacleTrack", "webp")}[track]
    base = root / folder
    expected = {}
    for i, image in enumerate(images):
        fid = f"validation{i:04d}" if i < 2 else "airplane0000"
        Image.fromarray(image).save(_mk(base / "images" / f"{fid}.{suffix}"), quality=95)
        if i < 2:
            stored = stored_labels(i + 3)
            write_png(base / "labels_masks" / f"{fid}_labels_semantic.png", stored)
            expected[fid] = stored
    (base / "images" / f"._validation0000.{suffix}").write_bytes(b"AppleDouble")
    return expected


def _mk(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def binary(stored: np.ndarray, road_anomaly: bool = False) -> np.ndarray:
    """The documented rule, pixel by pixel: Road Anomaly >= 2 anomalous; else 0 normal, 1 anomaly, anything else void."""
    out = np.empty(stored.shape, np.uint8)
    for (r, c), v in np.ndenumerate(stored):
        out[r, c] = int(v >= 2) if road_anomaly else (v if v in (0, 1) else VOID)
    return out


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    generate_toy_streets(root, ToyStreetConfig(height=H, width=W, n_train=3, n_val=2, n_test=3, seed=2))
    return root


@pytest.fixture(scope="module")
def model(toy):
    return untrained_road_model(toy, model={"aspp_channels": 16, "aspp_rates": [1, 2], "low_level_channels": 8,
                                            "decoder_channels": 16, "aux_channels": 8},
                                train={"epochs": 1, "batch_size": 2, "seed": 5},
                                scores={"val_pixels_per_image": 300, "pixels_per_class": 16, "seed": 5})


@pytest.fixture(scope="module")
def images(toy):
    return scenes(toy)


def test_fishyscapes_laf_official_layout(tmp_path, images):
    expected = make_fishyscapes_laf(tmp_path, images)
    assert detect_road_layout(tmp_path) == "fishyscapes_laf"
    bench = open_benchmark(tmp_path)
    assert [f.name for f in bench.frames] == sorted(expected) and bench.split == "validation"
    for sample in bench.iter_samples():
        stored = expected[sample.meta["name"]]
        assert np.array_equal(sample.labels, binary(stored))
        assert set(np.unique(sample.labels)) == {0, 1, VOID}
        laf_id = sample.meta["name"][5:]
        assert Path(sample.meta["path"]).name == f"{laf_id}_leftImg8bit.png"
        assert np.array_equal(sample.image, images[LAF_IDS.index(laf_id)])
    (tmp_path / "leftImg8bit").rename(tmp_path.parent / f"{tmp_path.name}-laf-images")
    (tmp_path / "leftImg8bit").symlink_to(tmp_path.parent / f"{tmp_path.name}-laf-images")  # a linked folder is read
    assert [f.image.name for f in open_benchmark(tmp_path).frames] == [f"{i}_leftImg8bit.png" for i in LAF_IDS]


def test_fishyscapes_static_overlay_is_added_and_clipped(tmp_path, images):
    expected = make_fishyscapes_static(tmp_path, images)
    assert detect_road_layout(tmp_path) == "fishyscapes_static"
    bench = open_benchmark(tmp_path, "fishyscapes_static")
    assert [f.name for f in bench.frames] == sorted(expected)
    for sample in bench.iter_samples():
        stored, composed = expected[sample.meta["name"]]
        assert np.array_equal(sample.image, composed)
        assert np.array_equal(sample.labels, binary(stored))
        assert sample.meta["path"].endswith("_rgb.npz") and sample.meta["base_image"].endswith("_leftImg8bit.png")


@pytest.mark.parametrize(("folder", "layout"), [("fs_lost_found", "fishyscapes_laf"), ("Static", "fishyscapes_static")])
def test_fishyscapes_repackaged_named_by_its_folder(tmp_path, images, folder, layout):
    expected = make_repackaged(tmp_path / folder, images)
    assert detect_road_layout(tmp_path / folder) == layout
    bench = open_benchmark(tmp_path / folder)
    assert [f.name for f in bench.frames] == sorted(expected)  # .DS_Store left out
    for sample in bench.iter_samples():
        assert np.array_equal(sample.labels, binary(expected[sample.meta["name"]]))
    make_repackaged(tmp_path / "other", images)
    with pytest.raises(OddspotError, match="give --layout fishyscapes_laf or fishyscapes_static"):
        detect_road_layout(tmp_path / "other")
    assert len(open_benchmark(tmp_path / "other", layout)) == 2


def test_road_anomaly_reads_two_as_anomaly_and_road_as_normal(tmp_path, images):
    expected = make_road_anomaly(tmp_path / "RoadAnomaly_jpg", images)
    for root in (tmp_path / "RoadAnomaly_jpg", tmp_path):  # the folder, or the one that holds it
        assert detect_road_layout(root) == "road_anomaly"
    bench = open_benchmark(tmp_path)
    assert [f.name for f in bench.frames] == sorted(expected) and bench.split == "test"
    for sample in bench.iter_samples():
        labels = sample.labels
        assert np.array_equal(labels, binary(expected[sample.meta["name"]], road_anomaly=True))
        assert (labels != VOID).all() and labels.sum() == 12 * 20


@pytest.mark.parametrize("track", ["anomaly", "obstacle"])
def test_smiyc_validation_frames_are_labelled_the_rest_listed(tmp_path, images, track):
    expected = make_smiyc(tmp_path, images, track)
    layout = f"smiyc_{track}"
    assert detect_road_layout(tmp_path) == layout
    assert detect_road_layout(next(tmp_path.iterdir())) == layout
    bench = open_benchmark(tmp_path)
    assert [f.name for f in bench.frames] == ["validation0000", "validation0001"]
    assert [p.name for p in bench.unlabeled] == [f"airplane0000.{'jpg' if track == 'anomaly' else 'webp'}"]
    for sample in bench.iter_samples():  # .webp decodes here (Pillow with WebP)
        assert sample.image.shape == (H, W, 3)
        assert np.array_equal(sample.labels, binary(expected[sample.meta["name"]]))


def test_predict_collects_a_benchmark_folders_images_and_never_its_label_files(tmp_path, images):
    from oddspot.road.predict import collect_images

    make_road_anomaly(tmp_path / "ra", images)
    make_smiyc(tmp_path / "smiyc", images, "anomaly")
    assert [p.name for p in collect_images([tmp_path / "ra"])] == [
        "animals01_Guiguinto_railway_station_Calves.jpg", "cones03_Bang_Na_Trat_Highway.jpg"]
    assert [p.name for p in collect_images([tmp_path / "smiyc"])] == [
        "airplane0000.jpg", "validation0000.jpg", "validation0001.jpg"]
    plain = tmp_path / "plain"  # any other folder: every image below it
    write_png(plain / "a" / "x.png", images[0][..., 0])
    assert [p.name for p in collect_images([plain])] == ["x.png"]


def test_missing_files_are_one_line_errors_naming_them(tmp_path, images):
    make_road_anomaly(tmp_path / "ra", images)
    label = tmp_path / "ra" / "frames" / "cones03_Bang_Na_Trat_Highway.labels" / "labels_semantic.png"
    label.unlink()
    with pytest.raises(OddspotError, match=f"^{label}: label file missing") as info:
        open_benchmark(tmp_path / "ra")
    assert "\n" not in str(info.value)
    make_fishyscapes_laf(tmp_path / "laf", images)
    image = next((tmp_path / "laf" / "leftImg8bit" / "test").rglob("*.png"))
    image.unlink()
    with pytest.raises(OddspotError, match=f"{LAF_IDS[1]}_leftImg8bit.png is not under"):
        open_benchmark(tmp_path / "laf", "fishyscapes_laf")
    make_repackaged(tmp_path / "Static", images)
    (tmp_path / "Static" / "labels" / f"1_{LAF_IDS[1]}.png").unlink()
    with pytest.raises(OddspotError, match=f"labels/1_{LAF_IDS[1]}.png: label file missing"):
        open_benchmark(tmp_path / "Static")
    make_fishyscapes_static(tmp_path / "fs", images)
    next((tmp_path / "fs" / "fs_static").glob("0001_*_rgb.npz")).unlink()
    with pytest.raises(OddspotError, match="overlay 0001_..._rgb.npz is missing"):
        open_benchmark(tmp_path / "fs", "fishyscapes_static")
    write_png(tmp_path / "bad" / "LostAndFound" / "original" / "a.png", images[0])
    write_png(tmp_path / "bad" / "LostAndFound" / "labels" / "a.png", np.zeros((H // 2, W), np.uint8))
    with pytest.raises(OddspotError, match="labels are 96x24 but the image is 96x48"):
        open_benchmark(tmp_path / "bad" / "LostAndFound")[0]
    make_smiyc(tmp_path / "broken", images, "obstacle")
    (tmp_path / "broken" / "dataset_ObstacleTrack" / "labels_masks" / "validation0000_labels_semantic.png").write_bytes(b"x")
    errors: list[OddspotError] = []
    kept = list(open_benchmark(tmp_path / "broken").iter_samples(on_error=errors.append))
    assert [k.meta["name"] for k in kept] == ["validation0001"]  # the bad file is reported, the other read
    assert len(errors) == 1 and "validation0000_labels_semantic.png: cannot decode label file" in str(errors[0])
    (tmp_path / "empty").mkdir()
    with pytest.raises(OddspotError, match="StreetHazards layout"):
        detect_road_layout(tmp_path / "empty")


def reference(model, bench) -> dict[str, float]:
    """Pooled AUROC (ties half), step-wise AP and FPR at the first TPR >= 0.95 from their definitions,
    over every valid pixel, with one operating point per distinct score (as scikit-learn)."""
    scores, targets = [], []
    for sample in bench.iter_samples():
        m = model.analyze(sample.image, ("max_logit",)).maps["max_logit"]
        keep = sample.labels != VOID
        scores.append(m[keep].astype(np.float64))
        targets.append(sample.labels[keep] == 1)
    s, t = np.concatenate(scores), np.concatenate(targets)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    values, inverse, counts = np.unique(s, return_inverse=True, return_counts=True)
    ranks = (np.cumsum(counts) - counts + (counts + 1) / 2)[inverse]  # 1-based ranks, ties averaged
    auroc = (ranks[t].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
    pos_at = np.bincount(inverse, weights=t, minlength=values.size)[::-1]  # by distinct score, descending
    neg_at = counts[::-1] - pos_at
    tp, fp = np.cumsum(pos_at), np.cumsum(neg_at)
    recall = tp / n_pos
    ap = float(np.sum(np.diff(np.concatenate([[0.0], recall])) * tp / (tp + fp)))
    first = int(np.argmax(recall >= 0.95))
    return {"auroc": auroc, "ap": ap, "fpr95_first": float(fp[first] / n_neg), "n_pos": n_pos, "n_neg": n_neg}


@pytest.mark.slow  # most of it is the first import of the metrics engine (scipy, numba)
def test_pooled_metrics_equal_the_definitions_over_valid_pixels(tmp_path, images, model):
    make_smiyc(tmp_path / "smiyc", images, "anomaly")
    bench = open_benchmark(tmp_path / "smiyc")
    metrics = evaluate_benchmark(model, tmp_path / "smiyc", "auto", tmp_path / "ev", scores=("max_logit",), panels=0,
                                 log=lambda s: None)
    pooled = metrics["anomaly"]["scores"]["max_logit"]["pooled"]
    ref = reference(model, bench)
    for key in ("auroc", "ap", "fpr95_first"):
        assert pooled[key] == pytest.approx(ref[key], abs=1e-12), key
    assert (pooled["n_pos"], pooled["n_neg"]) == (ref["n_pos"], ref["n_neg"])
    n_void = sum(int((s.labels == VOID).sum()) for s in bench.iter_samples())
    assert n_void > 0 and metrics["anomaly"]["n_void_pixels"] == n_void
    assert metrics["anomaly"]["n_pixels"] == ref["n_pos"] + ref["n_neg"] == 2 * H * W - n_void
    assert metrics["layout"] == "smiyc_anomaly" and metrics["segmentation"]["miou"] is None
    assert metrics["unlabeled_images"]["n_images"] == 1
    written = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert written["anomaly"]["n_anomaly_pixels"] == ref["n_pos"] and written["anomaly"]["split"] == "validation"
    comp = written["anomaly"]["components"]  # at the model's stored threshold, the anomaly track's sizes
    assert comp["threshold"] == model.fitted_scores().thresholds[model.config.score]["threshold"]
    assert (comp["score"], comp["sizes"], comp["min_pred_size"], comp["min_gt_size"], comp["n_images"]) == (
        model.config.score, "anomaly_track", 500, 100, 2)


@pytest.mark.slow  # most of it is the first import of the metrics engine (scipy, numba)
@pytest.mark.slow
def test_road_evaluate_checks_an_exported_model_on_a_benchmark(tmp_path, images, model, toy):
    """--runtime: the benchmark evaluation runs the exported network (what predict and serve run) and matches
    torch; a StreetHazards folder refuses it in one line (its mIoU pass runs the torch network)."""
    pytest.importorskip("openvino")
    make_road_anomaly(tmp_path / "ra", images)
    model.save(tmp_path / "run")
    records = {}
    for runtime in ("torch", "openvino"):
        res = CliRunner().invoke(cli, ["road", "evaluate", str(tmp_path / "run"), str(tmp_path / "ra"), "-o",
                                       str(tmp_path / runtime), "--panels", "0", "--threads", "1", "--runtime", runtime])
        assert res.exit_code == 0, res.output
        records[runtime] = json.loads((tmp_path / runtime / "metrics.json").read_text())
    assert records["openvino"]["runtime"].startswith("openvino") and records["torch"]["runtime"] == "torch"
    for name, r in records["torch"]["anomaly"]["scores"].items():
        assert records["openvino"]["anomaly"]["scores"][name]["pooled"]["auroc"] == pytest.approx(
            r["pooled"]["auroc"], abs=1e-2), name  # an untrained model's scores nearly tie: fp32 noise reorders some
    res = CliRunner().invoke(cli, ["road", "evaluate", str(tmp_path / "run"), str(toy), "-o", str(tmp_path / "sh"),
                                   "--runtime", "openvino"])
    assert res.exit_code == 2 and "evaluated with the torch model" in res.output and res.output.count("\n") == 1


def test_cli_evaluate_detects_the_layout_and_reports_no_miou(tmp_path, images, model):
    make_road_anomaly(tmp_path / "ra", images)
    model.save(tmp_path / "run")
    res = CliRunner().invoke(cli, ["road", "evaluate", str(tmp_path / "run"), str(tmp_path / "ra"), "-o",
                                   str(tmp_path / "ev"), "--panels", "1", "--threads", "1", "--report"])
    assert res.exit_code == 0, res.output
    assert "road_anomaly: no mIoU" in res.output
    page = (tmp_path / "ev" / "report.html").read_text()
    assert "no mIoU: the road_anomaly labels are binary" in page and "PPV (mean over predicted components)" in page
    assert [p.name for p in (tmp_path / "ev" / "panels").iterdir()] == ["animals01_Guiguinto_railway_station_Calves_panel.png"]
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["layout"] == "road_anomaly" and m["anomaly"]["n_images"] == 2 and m["anomaly"]["n_void_pixels"] == 0
    assert m["anomaly"]["n_anomaly_pixels"] == 2 * 12 * 20 and m["anomaly"]["positive_class"] == 1
    comp = m["anomaly"]["components"]
    assert f"sIoU {comp['siou_gt']:.3f}  PPV {comp['ppv']:.3f}  mean F1 {comp['mean_f1']:.3f}" in res.output
    assert m["runtime"].split()[0] in ("openvino", "onnxruntime", "torch")  # --runtime auto: the fastest installed
    res = CliRunner().invoke(cli, ["road", "evaluate", str(tmp_path / "run"), str(tmp_path / "ra"), "-o",
                                   str(tmp_path / "e2"), "--layout", "smiyc_obstacle"])
    assert res.exit_code == 2 and "no images/ and labels_masks/" in res.output and "Traceback" not in res.output
    from oddspot.cli.engine_options import _evaluate  # the Ray path refuses these sets before it starts Ray

    for layout in ("auto", "road_anomaly"):
        with pytest.raises(OddspotError, match="--engine ray evaluates StreetHazards folders only"):
            _evaluate("road", {"out": tmp_path / "e3", "run": tmp_path / "run", "data": tmp_path / "ra",
                               "layout": layout}, {"address": None, "actors": 1}, None)
