"""The inspection dataset readers on fixtures in each benchmark's official layout, layout detection,
the generic folder rule, split protocols with an official validation split, and a CLI round trip."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from click.testing import CliRunner
from dataset_fixtures import (
    AD2_TAGS,
    make_btech,
    make_folder,
    make_ksdd2,
    make_loco,
    make_mvtec_ad2,
    make_visa,
)
from PIL import Image

from oddspot.cli import cli
from oddspot.data.image_io import read_mask
from oddspot.data.layouts import detect, open_dataset
from oddspot.data.mvtec import read_folder
from oddspot.data.splits import make_manifest
from oddspot.errors import OddspotError
from oddspot.metrics.breakdowns import defect_type_breakdown


def _keys(dataset, part: str) -> list[str]:
    return sorted(r.key(dataset.root) for r in dataset.refs[part])


def _auroc(pos: list[float], neg: list[float]) -> float:
    """AUROC from its definition: the share of (positive, negative) pairs ranked right, ties half."""
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


# --- MVTec AD 2 -------------------------------------------------------------------------------------

def test_mvtec_ad2_lists_official_parts_and_never_the_private_sets(tmp_path):
    root = make_mvtec_ad2(tmp_path / "ad2")
    d = open_dataset(root, "can")
    assert d.layout == "mvtec_ad2" and d.root == root / "can"
    assert _keys(d, "train") == [f"train/good/{i:03d}_{AD2_TAGS[i % 6]}.png" for i in range(6)]
    assert _keys(d, "validation") == [f"validation/good/{i:03d}_{AD2_TAGS[i % 6]}.png" for i in range(3)]
    test = {r.key(d.root): r for r in d.refs["test"]}
    assert len(test) == 6 and not any("private" in k for k in test)
    bad = test["test_public/bad/003_shift_1.png"]
    assert (bad.label, bad.defect_type) == (1, "bad")
    assert bad.mask_path == root / "can" / "test_public" / "ground_truth" / "bad" / "003_shift_1_mask.png"
    raw = np.asarray(Image.open(bad.mask_path))
    assert set(np.unique(raw)) == {0, 255} and np.array_equal(bad.load().mask, raw == 255)
    assert all(r.label == 0 and r.mask_path is None for k, r in test.items() if k.startswith("test_public/good/"))


def test_official_validation_split_is_used_by_both_protocols(tmp_path):
    d = open_dataset(make_mvtec_ad2(tmp_path / "ad2"), "can")
    official = _keys(d, "validation")
    standard = make_manifest(d.refs, d.root, "standard")
    assert sorted(standard["train"]) == _keys(d, "train") and standard["validation"] == official
    assert sorted(standard["test"]) == _keys(d, "test")
    drawn = make_manifest(d.refs, d.root, "validation", seed=3)
    assert drawn["train"] == _keys(d, "train")  # nothing of train held out: validation/good plays that role
    extra = sorted(set(drawn["validation"]) - set(official))
    assert set(official) <= set(drawn["validation"]) and len(extra) == 1 and extra[0].startswith("test_public/bad/")
    assert sorted(drawn["test"] + extra) == _keys(d, "test")


def test_mvtec_ad2_private_sets_are_refused_by_evaluate(tmp_path):
    root = make_mvtec_ad2(tmp_path / "ad2")
    with pytest.raises(OddspotError, match="unlabelled MVTec AD 2 test set.*predict"):
        open_dataset(root / "can" / "test_private")
    with pytest.raises(OddspotError, match="unlabelled MVTec AD 2 test set"):
        open_dataset(root / "can" / "test_private_mixed", layout="folder", abnormal=root / "can" / "test_private")
    shutil.rmtree(root / "can" / "test_public")
    run = tmp_path / "run"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"data": str(root), "layout": "mvtec_ad2", "category": "can",
                                              "split": "standard", "seed": 0}))
    from oddspot.inspect import split_test_refs

    with pytest.raises(OddspotError, match="no test images.*test_private and test_private_mixed hold unlabelled") as e:
        split_test_refs(run, None, None, None)
    assert "\n" not in str(e.value)


# --- VisA -------------------------------------------------------------------------------------------

def test_visa_follows_the_split_csv_and_reads_raw_masks_as_non_zero(tmp_path):
    root = make_visa(tmp_path / "visa", normal_digits=3)  # Normal and Anomaly share file names
    d = open_dataset(root, "candle")
    assert d.layout == "visa" and d.root == root / "candle"
    with (root / "split_csv" / "1cls.csv").open() as f:
        rows = [r for r in csv.DictReader(f) if r["object"] == "candle"]
    for part in ("train", "test"):
        assert _keys(d, part) == sorted(r["image"].removeprefix("candle/") for r in rows if r["split"] == part)
    keys = [r.key(d.root) for part in d.refs.values() for r in part]
    assert len(keys) == len(set(keys)) == len(rows) and "Data/Images/Normal/000.JPG" in keys and \
        "Data/Images/Anomaly/000.JPG" in keys
    bad = [r for r in d.refs["test"] if r.label == 1]
    assert len(bad) == 4 and all(r.defect_type == "anomaly" and r.mask_path.suffix == ".png" for r in bad)
    raw = np.asarray(Image.open(bad[1].mask_path))
    assert raw.max() == 2 and np.array_equal(bad[1].load().mask, raw > 0)  # value 2, not 255: still anomalous


@pytest.mark.parametrize("edit, needle", [
    (lambda t: t.replace("object,split,label,image,mask", "object,split,label,image"), "columns are"),
    (lambda t: t.replace("candle,test,anomaly", "candle,train,anomaly", 1), "in the train split"),
    (lambda t: t.replace("candle,train,normal", "candle,val,normal", 1), "line 2"),
    (lambda t: t.replace("Images/Normal/0000.JPG", "Images/Normal/9999.JPG", 1), "9999.JPG: listed in"),
    (lambda t: t.replace("candle/Data/Masks/Anomaly/000.png", "", 1), "has no mask"),
    (lambda t: t.replace("candle,train,normal,candle/", "candle,train,normal,pcb1/", 1), "not inside candle/"),
])
def test_visa_split_file_errors_are_one_line(tmp_path, edit, needle):
    root = make_visa(tmp_path / "visa", categories=("candle",), n_train=3, n_test_normal=1, n_anomaly=2, size=8)
    path = root / "split_csv" / "1cls.csv"
    path.write_text(edit(path.read_text()))
    with pytest.raises(OddspotError, match=needle) as e:
        open_dataset(root, "candle")
    assert "\n" not in str(e.value)


# --- MVTec LOCO AD ----------------------------------------------------------------------------------

def test_loco_ors_every_mask_file_of_an_image(tmp_path):
    root = make_loco(tmp_path / "loco")
    d = open_dataset(root)  # one category: --category may be left out
    assert (d.layout, d.category) == ("loco", "breakfast_box") and len(d.refs["validation"]) == 3
    by_key = {r.key(d.root): r for r in d.refs["test"]}
    assert {r.defect_type for r in by_key.values()} == {"good", "logical_anomalies", "structural_anomalies"}
    two = by_key["test/structural_anomalies/001.png"]
    gt = root / "breakfast_box" / "ground_truth" / "structural_anomalies" / "001"
    assert two.mask_paths == (gt / "000.png", gt / "001.png")
    values = [np.asarray(Image.open(p)) for p in two.mask_paths]
    assert {int(v.max()) for v in values} == {255, 254}  # each file holds its defect's pixel_value
    assert np.array_equal(two.load().mask, (values[0] > 0) | (values[1] > 0))
    assert two.load().mask.sum() > read_mask(gt / "000.png").sum()
    shutil.rmtree(gt)
    with pytest.raises(OddspotError, match="no mask files in .*001"):
        open_dataset(root)


def test_loco_breakdown_has_one_row_per_family_against_all_good_images(tmp_path):
    d = open_dataset(make_loco(tmp_path / "loco"))
    test = d.refs["test"]
    scores = np.random.default_rng(0).random(len(test)).round(1)  # ties included
    labels = np.array([r.label for r in test])
    rows = defect_type_breakdown(scores, labels, [r.defect_type for r in test])
    assert set(rows) == {"logical_anomalies", "structural_anomalies"}
    good = [s for s, r in zip(scores, test) if r.label == 0]
    for family, row in rows.items():
        pos = [s for s, r in zip(scores, test) if r.defect_type == family]
        assert row["n"] == len(pos) == 3 and row["n_good"] == len(good) == 3
        assert row["auroc"] == pytest.approx(_auroc(pos, good))


def test_loco_defects_config_is_checked(tmp_path):
    root = make_loco(tmp_path / "loco", n_logical=1, n_structural=1, size=8)
    (root / "breakfast_box" / "defects_config.json").write_text(json.dumps([{"defect_name": "x", "pixel_value": 300}]))
    with pytest.raises(OddspotError, match="defects_config.json: expected a list"):
        open_dataset(root)


# --- BTech, Kolektor SDD2 ---------------------------------------------------------------------------

def test_btech_matches_masks_by_stem_across_extensions(tmp_path):
    root = make_btech(tmp_path / "btad", "01", image_ext=".bmp", mask_ext=".png")
    make_btech(root, "02", image_ext=".png", mask_ext=".png", n_ko=1)
    with pytest.raises(OddspotError, match="pass --category.*01, 02"):
        open_dataset(root)
    d = open_dataset(root, "01")
    assert d.layout == "btech" and _keys(d, "train") == [f"train/ok/{i:04d}.bmp" for i in range(6)]
    ko = [r for r in d.refs["test"] if r.label == 1]
    assert [(r.path.name, r.mask_path.name, r.defect_type) for r in ko] == [(f"{i:04d}.bmp", f"{i:04d}.png", "ko")
                                                                             for i in range(3)]
    (root / "01" / "ground_truth" / "ko" / "0001.png").rename(root / "01" / "ground_truth" / "ko" / "0001.bmp")
    shutil.copy(root / "01" / "ground_truth" / "ko" / "0001.bmp", root / "01" / "ground_truth" / "ko" / "0001.png")
    with pytest.raises(OddspotError, match="two candidate masks"):
        open_dataset(root, "01")


def test_ksdd2_trains_on_defect_free_images_and_labels_by_any_gt_pixel(tmp_path):
    root = make_ksdd2(tmp_path / "ksdd2")
    d = open_dataset(root)
    assert (d.layout, d.category, d.root) == ("ksdd2", "ksdd2", root)
    assert _keys(d, "train") == [f"train/{10000 + i}.png" for i in range(6)]  # the 2 defective ones left out
    labels = {r.key(root): r.label for r in d.refs["test"]}
    expected = {f"test/{i}.png": int(read_mask(root / "test" / f"{i}_GT.png").any()) for i in range(10008, 10014)}
    assert labels == expected and sum(labels.values()) == 3
    with pytest.raises(OddspotError, match="Kolektor SDD2 has no categories"):
        open_dataset(root, "kos01")
    (root / "test" / "10008_GT.png").unlink()
    with pytest.raises(OddspotError, match="10008.png: no mask 10008_GT.png"):
        open_dataset(root)


# --- detection and the folder layout ----------------------------------------------------------------

def test_layouts_are_detected_and_ambiguity_is_an_error(tmp_path, tiny_mvtec):
    makers = {"mvtec_ad2": make_mvtec_ad2, "visa": make_visa, "loco": make_loco, "btech": make_btech, "ksdd2": make_ksdd2}
    for name, make in makers.items():
        assert detect(make(tmp_path / name, size=8)) == name
    assert detect(tiny_mvtec) == "mvtec"
    mixed = make_btech(tmp_path / "mixed", size=8)
    shutil.copytree(tiny_mvtec / "brick", mixed / "brick")
    with pytest.raises(OddspotError, match="several layouts \\(btech, mvtec\\); pick one with --layout"):
        detect(mixed)
    (tmp_path / "empty").mkdir()
    with pytest.raises(OddspotError, match="no known dataset layout found .*--normal"):
        detect(tmp_path / "empty")
    with pytest.raises(OddspotError, match="looks like one category folder.*--category brick"):
        detect(tiny_mvtec / "brick")


def test_folder_layout_rule(tmp_path):
    root = make_folder(tmp_path / "f")
    refs = read_folder(root / "normal", root / "abnormal", root / "masks")
    assert [r.path.name for r in refs["train"]] == [f"n{i:02d}.png" for i in range(10) if i not in (4, 9)]
    normal_test = [r for r in refs["test"] if r.label == 0]
    assert [r.path.name for r in normal_test] == ["n04.png", "n09.png"]  # every 5th, sorted
    assert [(r.path.name, r.mask_path.name) for r in refs["test"] if r.label == 1] == [
        ("a00.jpg", "a00.png"), ("a01.jpg", "a01_mask.png"), ("a02.jpg", "a02_mask.png")]
    shutil.copy(root / "masks" / "a01_mask.png", root / "masks" / "a01.png")
    with pytest.raises(OddspotError, match="a01.jpg: two candidate masks"):
        read_folder(root / "normal", root / "abnormal", root / "masks")
    (root / "masks" / "a01.png").rename(root / "masks" / "zz.png")
    with pytest.raises(OddspotError, match="1 masks in .* belong to no image .*zz.png"):
        read_folder(root / "normal", root / "abnormal", root / "masks")
    (root / "masks" / "zz.png").unlink()
    (root / "masks" / "a02_mask.png").unlink()
    with pytest.raises(OddspotError, match="1 abnormal images have no mask .*a02.jpg"):
        read_folder(root / "normal", root / "abnormal", root / "masks")
    assert all(r.mask_path is None for r in read_folder(root / "normal", root / "abnormal")["test"])


# --- CLI round trip ---------------------------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.usefixtures("one_thread")
@pytest.mark.filterwarnings("ignore::oddspot.metrics.undefined.UndefinedMetricWarning")
def test_cli_fit_evaluate_round_trip_on_loco_and_folder(tmp_path, small_options):
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(small_options))
    runner = CliRunner()

    def run_cli(*args):
        result = runner.invoke(cli, [str(a) for a in args])
        assert result.exit_code == 0, result.output
        return result

    data = make_loco(tmp_path / "loco", n_train=4, n_val=2, n_good=3, n_logical=2, n_structural=2)
    res = run_cli("fit", data, "-o", tmp_path / "run", "--config", config, "--threads", "1", "--split", "standard")
    assert "breakfast_box (loco layout)" in res.output
    info = json.loads((tmp_path / "run" / "run.json").read_text())
    assert (info["layout"], info["category"], info["n_train"], info["n_validation"]) == ("loco", "breakfast_box", 4, 2)
    res = run_cli("inspect", "evaluate", tmp_path / "run", "-o", tmp_path / "eval", "--bootstrap", "0", "--gallery", "0",
                  "--report")
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    spro = metrics["pixel"]["spro"]
    assert f"sPRO@0.05 {spro['all']['auc']['0.05']:.4f}" in res.output
    assert {g: v["n_regions"] for g, v in spro.items()} == {"all": 6, "logical_anomalies": 3, "structural_anomalies": 3}
    assert all(0 <= v["auc"]["0.05"] <= 1 and v["n_good_images"] == 3 for v in spro.values())
    assert metrics["run"]["spro_saturation"] == "defects_config.json"
    page = Path(res.output.split("report: ")[1].split()[0]).read_text()
    assert "sPRO (FPR ≤ 0.05), logical anomalies" in page and "sPRO (FPR ≤ 0.05)</td>" in page
    rows = metrics["breakdowns"]["defect_type"]
    assert {k: (v["n"], v["n_good"]) for k, v in rows.items()} == {"logical_anomalies": (2, 3),
                                                                     "structural_anomalies": (2, 3)}
    assert metrics["run"]["n_test"] == 7 and metrics["run"]["category"] == "breakfast_box"

    folder = make_folder(tmp_path / "plain", n_normal=10, n_abnormal=2)
    run_cli("fit", "--normal", folder / "normal", "--abnormal", folder / "abnormal", "--masks", folder / "masks",
            "-o", tmp_path / "frun", "--config", config, "--threads", "1", "--calibration", "quantile")
    run_cli("evaluate", tmp_path / "frun", "-o", tmp_path / "feval", "--bootstrap", "0", "--gallery", "0")
    with (tmp_path / "feval" / "scores.csv").open() as f:
        scored = sorted(Path(r["path"]).name for r in csv.DictReader(f))
    split = json.loads((tmp_path / "frun" / "split.json").read_text())
    assert scored == sorted(Path(k).name for k in split["test"])
    assert {"n04.png", "n09.png"} <= set(scored) | {Path(k).name for k in split["validation"]}
    run_cli("evaluate", tmp_path / "frun", "--normal", folder / "normal", "-o", tmp_path / "feval2", "--bootstrap", "0",
            "--gallery", "0")  # its own normal folder: the recorded abnormal and masks folders come with it
    assert (tmp_path / "feval2" / "scores.csv").read_text() == (tmp_path / "feval" / "scores.csv").read_text()
    bad = runner.invoke(cli, ["fit", str(data), "--normal", str(folder / "normal"), "-o", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "DATA and --normal both given" in bad.output
