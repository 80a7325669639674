"""The HTML report: it reads only evaluation records (metrics.json, scores.csv, curves.json, gallery/).

Most tests build evaluation records with small generators (no model, no dataset exists at all);
one runs the real inspect pipeline and deletes the model and the data before the report.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from browser import chromium
from oddspot.errors import OddspotError
from oddspot.files import write_json
from oddspot.metrics import BinaryRankingMetrics, InspectionEvaluator
from oddspot.records.evaluation import write_csv, write_metrics
from oddspot.records.gallery import (
    GALLERY_DIR, GALLERY_FILE, ScoreRow, card_panels, choose, read_gallery, write_gallery,
)
from oddspot.report import build_report, write_report
from oddspot.report.inspect import NO_CALIBRATION

CATEGORIES = ("brick", "grass")
TILE = 64


# --- generators of evaluation records --------------------------------------------------------------

def _sample(rng: np.random.Generator, label: int, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured tile, its anomaly map and its mask; a defective tile has a bright square that the map finds."""
    image = rng.integers(60, 160, (TILE, TILE, 3), dtype=np.uint8)
    amap = rng.random((TILE, TILE)).astype(np.float32)
    mask = np.zeros((TILE, TILE), bool)
    if label:
        y, x = rng.integers(2, TILE - side - 2, 2)
        mask[y:y + side, x:x + side] = True
        image[mask] = 230
        amap[mask] += rng.uniform(0.3, 2.0)
    return image, amap, mask


def make_inspect_record(out: Path, category: str = "brick", seed: int = 0, calibrated: bool = True,
                        per_group: int = 12, thumb: int = 176, gallery: bool = True) -> dict:
    """An inspect evaluation record as `oddspot inspect evaluate` writes it, for images that never existed."""
    rng = np.random.default_rng(seed)
    evaluator = InspectionEvaluator(bootstrap=20, seed=seed, size_edges=(0.03, 0.07))
    rendered, rows = {}, []
    for i, (label, kind) in enumerate([(0, "good")] * 6 + [(1, "crack")] * 4 + [(1, "hole")] * 3):
        image, amap, mask = _sample(rng, label, side=(8, 14, 20)[i % 3])
        score = float(amap.max())
        path = f"gone/{category}/test/{kind}/{i:03d}.png"
        evaluator.add(score, label, amap, mask, kind)
        rendered[path] = (image, amap, mask)
        rows.append(ScoreRow(path, label, kind, score))
    image_th = float(np.median([r.score for r in rows])) if calibrated else None
    pixel_th = 1.0 if calibrated else None
    metrics = evaluator.compute(image_threshold=image_th, pixel_threshold=pixel_th)
    if calibrated:
        metrics["calibration"] = {"strategy": "quantile", "image_threshold": image_th, "pixel_threshold": pixel_th,
                                  "details": {"quantile": 0.995}}
        rows = [ScoreRow(r.path, r.label, r.defect_type, r.score, r.score >= image_th) for r in rows]
    metrics["run"] = {"category": category, "split": "test", "n_test": len(rows), "model": "gone/run"}
    write_metrics(out, "inspect", metrics)
    write_json(out / "curves.json", evaluator.curves())
    extra = ["normalized", "anomalous"] if calibrated else []
    write_csv(out / "scores.csv", ["path", "label", "defect_type", "score", *extra],
              [(r.path, r.label, r.defect_type, r.score, *([r.score / image_th, int(r.anomalous)] if calibrated else []))
               for r in rows])
    if gallery:
        threshold = image_th if calibrated else metrics["image"]["f1_max_threshold"]
        write_gallery(out, rows, lambda paths: [rendered[p] for p in paths], image_threshold=threshold,
                      pixel_threshold=pixel_th, display_max=2.5, per_group=per_group, thumb=thumb, warn=lambda m: None)
    return metrics


def _road_metrics() -> dict:
    pooled = {"auroc": 0.93, "ap": 0.31, "fpr95_first": 0.2, "fpr95_nearest": 0.21, "f1_max": 0.4}
    return {
        "run": "runs/road", "segmentation": {"split": "validation", "miou": 0.71, "pixel_accuracy": 0.9,
                                             "iou": {"road": 0.95, "car": 0.8, "pole": float("nan")}, "n_images": 4},
        "anomaly": {"split": "test", "n_images": 5, "n_images_with_anomaly": 4,
                    "scores": {"msp": {"pooled": pooled, "per_image": {"auroc": 0.9, "ap": 0.4},
                                       "threshold": {"threshold": 0.5, "precision": 0.3, "recall": 0.6, "f1": 0.4}},
                               "max_logit": {"pooled": {**pooled, "auroc": 0.95}, "per_image": {},
                                             "threshold": {"threshold": -3.0}}}},
    }


VIDEO_METRICS = {"skip_first": 0, "frames": 40, "anomalous_frames": 10, "micro_auroc": 0.9123, "ap": 0.8,
                 "macro_auroc": 0.88, "macro_ap": 0.7, "per_event_type": {"too_fast": {"auroc": 0.97, "ap": 0.9, "frames": 10}},
                 "per_video": {"01": {"auroc": 0.88, "ap": 0.7, "frames": 20, "anomalous_frames": 5},
                               "02": {"auroc": 0.91, "ap": 0.8, "frames": 20, "anomalous_frames": 5}}}


def make_video_record(out: Path, decision: bool = True) -> None:
    """A video evaluation record: metrics.json (task video), scores.csv and curves.json, no figure."""
    rows = []
    for vid in ("01", "02"):
        for frame in range(20):
            label = int(10 <= frame < 15)
            score = 0.2 + 0.6 * label + 0.01 * frame
            rows.append((vid, frame, label, score, score / 0.5, int(score >= 0.5)))
    ranking = BinaryRankingMetrics()
    ranking.update(np.array([r[4] for r in rows]), np.array([r[2] for r in rows], bool))
    at = {k: v for k, v in ranking.at_threshold(1.0).items() if not isinstance(v, (list, dict))}
    write_metrics(out, "video", {**VIDEO_METRICS, "score": "normalized", "decision": at if decision else {"threshold": None}})
    write_csv(out / "scores.csv", ["video", "frame", "label", "score", "normalized", "anomalous"], rows)
    write_json(out / "curves.json", {"frame": {k: {n: np.asarray(a).tolist() for n, a in c.items()}
                                               for k, c in ranking.curves(100).items()}})


def _png(size: tuple[int, int], colour: tuple[int, int, int]) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    """A demo-shaped output: a summary metrics.json and one evaluation record per category in eval/<cat>."""
    out = tmp_path_factory.mktemp("demo")
    results = {cat: make_inspect_record(out / "eval" / cat, cat, seed=i) for i, cat in enumerate(CATEGORIES)}
    write_metrics(out, "inspect", {"summary": True, "categories": results, "seed": 0})
    return out


@pytest.fixture(scope="module")
def demo_report(demo_dir) -> Path:
    """report.html of the demo-shaped folder (written once, checked by several tests)."""
    return write_report(demo_dir, top_k=3)


def _images(html: str) -> list[str]:
    return re.findall(r'<img src="([^"]+)"', html)


def _decode(uri: str) -> Image.Image:
    head, payload = uri.split(",", 1)
    assert head.startswith("data:image/") and head.endswith(";base64"), head[:40]
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    image.load()
    return image


# --- inspect ----------------------------------------------------------------------------------------

def test_inspect_record_report_is_self_contained_and_complete(demo_dir):
    folder = demo_dir / "eval" / "brick"
    path = write_report(folder)
    assert path == folder / "report.html"
    html = path.read_text()
    uris = _images(html)
    # 4 plots (ROC, PR, PRO, histogram) + 4 panels per gallery card, at least 3 cards
    assert len(uris) >= 4 + 4 * 3
    assert all(_decode(u).width > 0 for u in uris)
    assert not re.search(r'(src|href)="(https?:)?//', html), "external resource referenced"
    assert "<link" not in html and "@import" not in html
    for text in ("Image level", "Pixel level", "AUPRO", "95% CI", "Per defect type", "Per defect size",
                 "Operating point", "alse negatives", "alse positives", "Best detections", "predicted mask"):
        assert text in html, text
    metrics = json.loads((folder / "metrics.json").read_text())
    calibration = metrics["calibration"]
    assert metrics["task"] == "inspect"
    assert f"{calibration['strategy']} (calibrated on validation data)" in html and NO_CALIBRATION not in html
    assert f"<b>{calibration['image_threshold']:.4f}</b>" in html
    # the worst false alarm is in the gallery, named by its file
    scores = list(csv.DictReader(open(folder / "scores.csv")))
    worst_good = max((r for r in scores if r["label"] == "0"), key=lambda r: float(r["score"]))
    assert Path(worst_good["path"]).name in html
    assert "<details open" not in html  # the gallery is collapsed (progressive disclosure)
    assert "re-scored" not in html


def test_demo_report_has_sortable_results_table_and_sections(demo_report):
    html = demo_report.read_text()
    table = html.split('id="results"', 1)[1].split("</table>", 1)[0]
    assert 'class="sortable"' in table
    for cat in CATEGORIES:
        assert f'href="#cat-{cat}"' in table and f'id="cat-{cat}"' in html
    assert "<tfoot><tr><td>mean" in table


def test_calibration_replaces_test_f1_threshold(demo_dir, tmp_path):
    folder = tmp_path / "eval"
    shutil.copytree(demo_dir / "eval" / "brick", folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["calibration"] = {"image_threshold": 27.125, "pixel_threshold": 40.5, "strategy": "quantile",
                              "normalization": {}}
    write_metrics(folder, "inspect", metrics)
    html = build_report(folder, top_k=0, warn=lambda m: None)
    assert "Gallery turned off" in html
    assert "quantile (calibrated on validation data)" in html
    assert NO_CALIBRATION not in html
    assert "27.1250" in html and "40.5000" in html


def test_without_calibration_uses_test_f1_max(tmp_path):
    metrics = make_inspect_record(tmp_path, calibrated=False)
    html = build_report(tmp_path, warn=lambda m: None)
    assert NO_CALIBRATION in html and "calibrated on validation data" not in html
    assert f"<b>{metrics['image']['f1_max_threshold']:.4f}</b>" in html
    assert "no pixel threshold, so no predicted mask" in html and "Best detections" in html


def test_bad_score_rows_are_reported_and_skipped(demo_dir, tmp_path):
    folder = tmp_path / "eval"
    shutil.copytree(demo_dir / "eval" / "brick", folder)
    lines = (folder / "scores.csv").read_text().splitlines()
    lines.insert(2, "missing.png,1,crack,not-a-number")
    (folder / "scores.csv").write_text("\n".join(lines) + "\n")
    warnings: list[str] = []
    write_report(folder, top_k=0, warn=warnings.append)
    assert any("line 3" in w and "scores.csv" in w for w in warnings)


def test_missing_or_damaged_gallery_leaves_it_out_with_a_note(demo_dir, tmp_path):
    folder = tmp_path / "eval"
    shutil.copytree(demo_dir / "eval" / "brick", folder)
    card = sorted((folder / GALLERY_DIR).glob("card-*-heatmap.png"))[0]
    card.unlink()
    warnings: list[str] = []
    html = build_report(folder, warn=warnings.append)
    assert "No gallery" in html and any(card.name in w and "missing" in w for w in warnings)
    shutil.rmtree(folder / GALLERY_DIR)
    warnings.clear()
    html = build_report(folder, warn=warnings.append)
    assert "No gallery" in html and any("not found" in w for w in warnings)
    assert "Image level" in html  # the rest of the section is still there


def test_top_is_capped_by_the_stored_gallery_and_thumb_only_shrinks(tmp_path):
    make_inspect_record(tmp_path, per_group=2, thumb=96)
    warnings: list[str] = []
    html = build_report(tmp_path, top_k=5, warn=warnings.append)
    assert any("at most 2 images per section" in w for w in warnings)
    assert re.search(r"Worst false negatives \(missed defects\) \(2\)|False negatives: none .*? \(2\)", html)
    sizes = {max(_decode(u).size) for u in _images(html)}
    assert 96 in sizes and not any(48 < s < 96 for s in sizes)
    warnings.clear()
    html = build_report(tmp_path, top_k=2, thumb=300, warn=warnings.append)
    assert any("cannot enlarge" in w for w in warnings)
    small = build_report(tmp_path, top_k=2, thumb=40, warn=lambda m: None)
    card_sizes = {max(_decode(u).size) for u in _images(small.split("<h3>Gallery</h3>", 1)[1])}
    assert card_sizes == {40}


@pytest.mark.parametrize(("top_k", "thumb", "match"), [(-1, None, "--top"), (101, None, "--top"), (True, None, "--top"),
                                                       (6, 8, "--thumb"), (6, 2000, "--thumb")])
def test_options_are_checked(tmp_path, top_k, thumb, match):
    with pytest.raises(OddspotError, match=match) as info:
        write_report(tmp_path, top_k=top_k, thumb=thumb)
    assert "\n" not in str(info.value)


# --- the gallery material ---------------------------------------------------------------------------

def test_choose_gallery_rows():
    rows = [ScoreRow("d1", 1, "crack", 0.9), ScoreRow("d2", 1, "crack", 0.2), ScoreRow("d3", 1, "hole", 0.4),
            ScoreRow("g1", 0, "good", 0.7), ScoreRow("g2", 0, "good", 0.1), ScoreRow("g3", 0, "good", 0.6)]
    fn, fp, best = choose(rows, threshold=0.5, k=5)
    assert [r.path for r in fn.rows] == ["d2", "d3"]  # missed, lowest score first
    assert [r.path for r in fp.rows] == ["g1", "g3"]  # false alarms, highest first
    assert [r.path for r in best.rows] == ["d1"]
    fn, fp, best = choose(rows, threshold=0.05, k=1)  # nothing missed: closest calls, said so
    assert [r.path for r in fn.rows] == ["d2"] and "no defective image is missed" in fn.note
    assert [r.path for r in best.rows] == ["d1"]
    # a stored calibrated decision wins over the score
    flagged = [ScoreRow("g9", 0, "good", 0.0, anomalous=True), *rows]
    assert choose(flagged, 0.5, 5)[1].rows[-1].path == "g9"
    with pytest.raises(OddspotError, match="no image threshold"):
        choose(rows, None, 5)


def test_card_panels_show_outline_and_predicted_mask():
    image = np.full((64, 64, 3), 128, np.uint8)
    amap = np.zeros((32, 32), np.float32)  # maps may be coarser than the image
    amap[5:15, 5:15] = 5.0
    mask = np.zeros((64, 64), bool)
    mask[40:60, 40:60] = True
    out = card_panels(image, amap, mask, display_max=5.0, pixel_threshold=1.0, longest=64)
    assert list(out) == ["image", "truth", "heatmap", "mask"]
    pred = out["mask"]
    assert pred[20, 20].min() > 200 and pred[5, 5].max() < 60  # predicted region white, rest dark
    assert tuple(pred[40, 50]) == (255, 0, 255)  # ground-truth outline drawn over it
    assert tuple(pred[50, 50]) != (255, 0, 255)  # outline only, not filled
    assert (out["image"] == 128).all()  # the plain image stays plain
    assert "mask" not in card_panels(image, amap, None, None, None, longest=32)


def test_write_gallery_renders_once_and_reads_back(tmp_path):
    rows = [ScoreRow(f"d{i}", 1, "crack", float(i)) for i in range(5)] + \
           [ScoreRow(f"g{i}", 0, "good", i / 2) for i in range(5)]
    calls: list[list[str]] = []

    def render(paths):
        calls.append(list(paths))
        out = []
        for p in paths:
            mask = np.zeros((40, 60), bool)
            mask[10:20, 10:30] = p.startswith("d")
            out.append(None if p == "d0" else (np.full((80, 120, 3), 90, np.uint8), np.ones((20, 30), np.float32), mask))
        return out

    warnings: list[str] = []
    (tmp_path / GALLERY_DIR).mkdir()
    (tmp_path / GALLERY_DIR / "card-999-image.png").write_bytes(_png((4, 4), (0, 0, 0)))  # from an earlier run
    n = write_gallery(tmp_path, rows, render, image_threshold=1.5, pixel_threshold=0.5, display_max=None,
                      per_group=2, thumb=60, warn=warnings.append)
    assert len(calls) == 1 and calls[0] == ["d0", "d1", "g4", "g3", "d4", "d3"]
    assert n == 5 and any("d0" in w for w in warnings)
    assert not (tmp_path / GALLERY_DIR / "card-999-image.png").exists()
    gallery = read_gallery(tmp_path)
    assert read_gallery(tmp_path / GALLERY_DIR) == gallery
    assert (gallery.image_threshold, gallery.pixel_threshold, gallery.display_max) == (1.5, 0.5, None)
    assert [g.key for g in gallery.groups] == ["fn", "fp", "tp"]
    fn, fp, tp = gallery.groups
    assert [c.path for c in fn.cards] == ["d1"] and not fn.cards[0].anomalous
    assert [c.path for c in fp.cards] == ["g4", "g3"] and all(c.anomalous for c in fp.cards)
    assert gallery.skipped == ("d0",)
    card = tp.cards[0]
    assert card.ground_truth and set(card.files) == {"image", "truth", "heatmap", "mask"}
    assert Image.open(card.files["image"]).size == (60, 40)  # longest side = thumb, aspect kept


def test_read_gallery_refuses_damaged_material(tmp_path):
    make_inspect_record(tmp_path, per_group=1)
    path = tmp_path / GALLERY_DIR / GALLERY_FILE
    good = json.loads(path.read_text())

    def broken(change) -> str:
        obj = json.loads(json.dumps(good))
        change(obj)
        path.write_text(json.dumps(obj))
        with pytest.raises(OddspotError) as info:
            read_gallery(tmp_path)
        assert "\n" not in str(info.value) and str(path) in str(info.value)
        return str(info.value)

    assert "format_version" in broken(lambda o: o.update(format_version=7))
    assert "card file name" in broken(lambda o: o["groups"][0]["cards"][0]["files"].update(image="../../etc/passwd"))
    assert "label" in broken(lambda o: o["groups"][0]["cards"][0].update(label=3))
    assert "score" in broken(lambda o: o["groups"][0]["cards"][0].update(score="high"))
    assert "thumb" in broken(lambda o: o.update(thumb=True))
    path.write_text("{oops")
    with pytest.raises(OddspotError, match="not valid JSON"):
        read_gallery(tmp_path)
    path.unlink()
    with pytest.raises(OddspotError, match="not found"):
        read_gallery(tmp_path)


def test_write_gallery_checks_its_input(tmp_path):
    rows = [ScoreRow("d", 1, "crack", 1.0), ScoreRow("g", 0, "good", 0.0)]
    ok = (np.zeros((8, 8, 3), np.uint8), np.zeros((8, 8), np.float32), None)
    kw = dict(image_threshold=0.5, pixel_threshold=None, display_max=None, warn=lambda m: None)
    with pytest.raises(OddspotError, match="per_group"):
        write_gallery(tmp_path, rows, lambda p: [ok] * len(p), per_group=500, **kw)
    with pytest.raises(OddspotError, match="entries"):
        write_gallery(tmp_path, rows, lambda p: [ok], **kw)
    with pytest.raises(OddspotError, match="uint8"):
        write_gallery(tmp_path, rows, lambda p: [(np.zeros((8, 8)), ok[1], None)] * len(p), **kw)
    with pytest.raises(OddspotError, match="image_threshold"):
        write_gallery(tmp_path, rows, lambda p: [ok] * len(p), **{**kw, "image_threshold": float("nan")})
    assert write_gallery(tmp_path, rows, lambda p: [ok] * len(p), per_group=0, **kw) == 0
    assert read_gallery(tmp_path).groups == ()


# --- the report reads only records ----------------------------------------------------------------

FORBIDDEN = ("oddspot.detectors", "oddspot.data", "oddspot.inspect", "oddspot.inspection", "oddspot.road",
             "oddspot.video", "oddspot.features", "oddspot.runs")


def test_report_imports_no_model_or_dataset_code(demo_dir, tmp_path):
    make_video_record(tmp_path / "video" / "motion")
    make_road_record(tmp_path / "road" / "eval")
    code = ("import sys; from pathlib import Path; from oddspot.report import write_report; "
            f"write_report(Path({str(demo_dir)!r}), output=Path({str(tmp_path / 'a.html')!r}), warn=print); "
            f"write_report(Path({str(tmp_path)!r}), warn=print); "
            f"bad = sorted(m for m in sys.modules if m.startswith({FORBIDDEN!r})); print('LOADED', bad)")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "LOADED []" in res.stdout, res.stdout[-2000:]


def test_old_records_are_refused_or_skipped(tmp_path):
    write_json(tmp_path / "old" / "metrics.json", {"image": {"auroc": 0.9}})  # written by oddspot 0.1
    with pytest.raises(OddspotError, match="no known task"):
        write_report(tmp_path / "old")
    warnings: list[str] = []
    make_video_record(tmp_path / "new")
    html = build_report(tmp_path, warn=warnings.append)
    assert any("old" in w and "no known task" in w for w in warnings)
    assert "video: new" in html


def test_experiment_folder(tmp_path):
    (tmp_path / "plots").mkdir()
    (tmp_path / "results.csv").write_text("detector,category,image_auroc\npatchcore,brick,0.91\npadim,brick,0.75\n")
    (tmp_path / "plots" / "auroc.png").write_bytes(_png((30, 20), (200, 10, 10)))
    html = write_report(tmp_path).read_text()
    assert 'class="sortable wide"' in html and 'data-value="0.91"' in html and "padim" in html
    assert _decode(_images(html)[0]).size == (30, 20)


def test_experiment_cells_are_named_by_folder_and_collapsed(demo_dir, tmp_path):
    for cell in ("patchcore-brick", "padim-brick"):
        shutil.copytree(demo_dir / "eval" / "brick", tmp_path / "cells" / cell)
    (tmp_path / "results.csv").write_text("cell,image_auroc\npatchcore-brick,0.9\npadim-brick,0.8\n")
    html = build_report(tmp_path, top_k=0, warn=lambda m: None)
    assert html.count('<details class="section">') == 2
    assert "cells/padim-brick" in html and "cells/patchcore-brick" in html


# --- road and video ---------------------------------------------------------------------------------

def make_road_record(out: Path) -> None:
    """A road evaluation record: metrics.json (task road), scores.csv, curves.json and panels/."""
    rng = np.random.default_rng(0)
    labels = np.array([0, 1, 1, 1, 1, 0, 1])
    scores = rng.random(labels.size) + labels
    ranking = BinaryRankingMetrics()
    ranking.update(scores, labels.astype(bool))
    curve = {k: {n: [None if not np.isfinite(x) else float(x) for x in a] for n, a in c.items()}
             for k, c in ranking.curves(50).items()}
    metrics = _road_metrics()
    metrics["anomaly"]["scores"]["msp"]["sensitivity"] = [
        {"offset": k, "threshold": 0.5 + 0.1 * k, "precision": 0.3, "recall": 0.6 - 0.1 * k, "f1": 0.4} for k in (-1, 0, 1)]
    metrics["image"] = {"score": "fusion", "statistic": "quantile 0.999 of the map", "n_images": 7, "n_anomalous": 5,
                        "auroc": 0.8, "ap": 0.9, "f1_max": 0.8, "threshold": 1.0, "tp": 4, "fp": 1, "tn": 1, "fn": 1}
    write_metrics(out, "road", metrics)
    write_csv(out / "scores.csv", ["path", "label", "score", "normalized", "anomalous"],
              [(f"gone/test/{i}.png", int(y), float(x), float(x), int(x >= 1.0)) for i, (y, x) in enumerate(zip(labels, scores))])
    write_json(out / "curves.json", {"score": "fusion", "pixel": {"msp": curve, "max_logit": curve}, "image": curve})
    (out / "panels").mkdir()
    (out / "panels" / "000_panel.png").write_bytes(_png((50, 10), (1, 2, 3)))


def test_road_section(tmp_path):
    make_road_record(tmp_path / "eval")
    write_metrics(tmp_path, "road", {"summary": True, "miou": 0.71})
    html = write_report(tmp_path).read_text()
    for text in ("Per-class IoU", "mIoU", "max_logit", "FPR95 (nearest)", "per-image AUROC", "000_panel.png",
                 "Threshold sensitivity", "Does a test image hold anomaly pixels?", "quantile 0.999 of the map"):
        assert text in html, text
    assert 'data-value="0.95"' in html  # per-class IoU and AUROC cells sort numerically
    sizes = [_decode(u).size for u in _images(html)]
    # IoU bars, pixel ROC and PR per score, image ROC, image score histogram, the panel
    assert (50, 10) in sizes and len(sizes) == 6


def test_video_record_gets_its_section_with_curves_drawn_from_scores(tmp_path):
    make_video_record(tmp_path / "motion")
    make_video_record(tmp_path / "autoencoder", decision=False)
    write_metrics(tmp_path, "video", {"summary": True, "detectors": {"motion": {"micro_auroc": 0.9123}}})
    html = write_report(tmp_path).read_text()
    sections = {part.split('"', 1)[0]: part for part in html.split('<h2 id="cat-video-')[1:]}
    motion, autoencoder = sections["-motion"], sections["-autoencoder"]
    assert "0.912" in motion and "too_fast" in motion and "normalized frame scores" in motion
    assert "Operating point (frames after the skipped ones)" in motion  # the recorded decision metrics
    assert "Operating point (recorded frame decisions, all frames)" in autoencoder  # counted from scores.csv
    # per record: ROC, PR and the scores over time drawn from scores.csv
    assert html.count("Scores over time") == 2 and len(_images(html)) == 6
    # the stored figure is used when the evaluation wrote one
    (tmp_path / "motion" / "score_curves.png").write_bytes(_png((40, 20), (200, 30, 30)))
    html = build_report(tmp_path / "motion", warn=lambda m: None)
    assert [_decode(u).size for u in _images(html)][-1] == (40, 20) and len(_images(html)) == 3


def test_a_record_without_its_section_metrics_is_shown_as_a_table(tmp_path):
    write_metrics(tmp_path / "a", "road", {"miou": 0.5})
    warnings: list[str] = []
    html = build_report(tmp_path, warn=warnings.append)
    assert "road: a" in html and "miou" in html and any("plain table" in w for w in warnings)


def test_errors(tmp_path):
    with pytest.raises(OddspotError, match="no such folder"):
        write_report(tmp_path / "nope")
    with pytest.raises(OddspotError, match="no metrics.json"):
        write_report(tmp_path)
    (tmp_path / "metrics.json").write_text("{oops")
    with pytest.raises(OddspotError, match="not valid JSON"):
        write_report(tmp_path, warn=lambda m: None)


def test_cli(demo_dir, tmp_path):
    from oddspot.cli import cli

    runner = CliRunner()
    out = tmp_path / "r.html"
    res = runner.invoke(cli, ["report", str(demo_dir / "eval" / "grass"), "--top", "0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.exists() and "report:" in res.output
    res = runner.invoke(cli, ["report", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "error:" in res.output
    res = runner.invoke(cli, ["report", str(demo_dir / "eval" / "grass"), "--top", "500"])
    assert res.exit_code == 2 and "--top" in res.output and "0<=x<=100" in res.output


# --- the real pipeline -----------------------------------------------------------------------------

@pytest.mark.slow
def test_report_after_model_and_data_are_deleted(tmp_path):
    """fit -> evaluate -> delete the model and the dataset -> report: the gallery is still complete."""
    from oddspot.cli import cli
    from oddspot.data.demo_dataset import build_demo_dataset

    data = build_demo_dataset(tmp_path / "data", ("brick",), n_train=10, n_test_good=4, n_test_bad=6, tile=64)
    runner = CliRunner()
    opts = tmp_path / "model.yaml"
    opts.write_text("image_size: 64\ncoreset_ratio: 0.25\nbatch_size: 8\n")
    res = runner.invoke(cli, ["inspect", "fit", str(data), "--category", "brick", "--out", str(tmp_path / "run"),
                              "--config", str(opts)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(cli, ["inspect", "evaluate", str(tmp_path / "run"), str(data), "--category", "brick",
                              "--out", str(tmp_path / "eval")])
    assert res.exit_code == 0, res.output
    shutil.rmtree(tmp_path / "run")
    shutil.rmtree(data)
    res = runner.invoke(cli, ["report", str(tmp_path / "eval"), "--top", "3"])
    assert res.exit_code == 0, res.output
    html = (tmp_path / "eval" / "report.html").read_text()
    assert "No gallery" not in html and "Best detections" in html
    assert len(_images(html)) >= 4 + 3 * 3


# --- headless Chromium -------------------------------------------------------------------------

PROBE = """<script>
window.__errors = [];
window.addEventListener('error', function (e) {
  var t = e.target;
  window.__errors.push(t && t !== window && t.tagName ? 'failed to load ' + t.tagName : 'error: ' + e.message);
}, true);
window.addEventListener('unhandledrejection', function (e) { window.__errors.push('rejection: ' + e.reason); });
(function () {
  var original = console.error;
  console.error = function () {
    window.__errors.push('console.error: ' + Array.prototype.join.call(arguments, ' '));
    return original.apply(console, arguments);
  };
})();
window.addEventListener('load', function () {
  setTimeout(function () {
    var out = {errors: window.__errors, images: [], network: [], sorts: []};
    document.querySelectorAll('img').forEach(function (im) {
      out.images.push({alt: im.alt, ok: im.complete && im.naturalWidth > 0});
    });
    performance.getEntriesByType('resource').forEach(function (r) {
      if (r.name.indexOf('data:') !== 0) out.network.push(r.name);
    });
    var table = document.querySelector('table.sortable');
    if (table) {
      var heads = table.tHead.rows[0].cells;
      var column = function (i) {
        return Array.prototype.map.call(table.tBodies[0].rows, function (r) { return r.cells[i].textContent.trim(); });
      };
      [0, 0, 1, 1].forEach(function (i) {
        var before = column(0);
        heads[i].click();
        out.sorts.push({column: i, before: before, after: column(0), values: column(i),
                        dir: heads[i].getAttribute('aria-sort')});
      });
    }
    var pre = document.createElement('pre');
    pre.id = '__probe';
    pre.textContent = JSON.stringify(out);
    document.body.appendChild(pre);
  }, 0);
});
</script>"""

FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
         "--disable-dev-shm-usage", "--hide-scrollbars"]



def _run(browser: str, tmp: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp / f"profile-{len(list(tmp.glob('profile-*')))}"
    return subprocess.run([browser, *FLAGS, f"--user-data-dir={profile}", *args], capture_output=True,
                          text=True, timeout=180)


def _probe(browser: str, html_path: Path, tmp: Path) -> dict:
    html = html_path.read_text()
    probed = tmp / f"probed-{html_path.stem}.html"
    probed.write_text(html.replace('<meta charset="utf-8">', '<meta charset="utf-8">' + PROBE, 1))
    res = _run(browser, tmp, "--virtual-time-budget=10000", "--dump-dom", probed.as_uri())
    found = re.search(r'<pre id="__probe">(.*?)</pre>', res.stdout, re.S)
    assert found, f"no probe output from chromium (rc {res.returncode}): {res.stderr[-2000:]}"
    return json.loads(found.group(1).replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))


@pytest.mark.browser
@pytest.mark.slow
def test_report_in_headless_chromium(demo_report, tmp_path):
    browser = chromium()
    # the harness must be able to fail: a page with a script error and a broken image is caught
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><head><meta charset="utf-8"></head><body>'
                   '<img src="data:image/png;base64,AAAA" alt="broken"><script>console.error("boom");'
                   "undefinedFunction();</script></body></html>")
    control = _probe(browser, bad, tmp_path)
    assert any("boom" in e for e in control["errors"]) and any("undefinedFunction" in e for e in control["errors"])
    assert control["images"] == [{"alt": "broken", "ok": False}]

    report = demo_report
    result = _probe(browser, report, tmp_path)
    assert result["errors"] == []
    assert result["network"] == []
    assert len(result["images"]) >= 2 * (4 + 4 * 3)
    assert [i["alt"] for i in result["images"] if not i["ok"]] == []
    by_name = result["sorts"][:2]
    assert by_name[0]["dir"] == "ascending" and by_name[1]["dir"] == "descending"
    assert by_name[0]["after"] == sorted(by_name[0]["after"])
    assert by_name[1]["after"] == by_name[0]["after"][::-1] != by_name[0]["after"]
    assert result["sorts"][0]["before"] != result["sorts"][0]["after"] or \
        result["sorts"][1]["before"] != result["sorts"][1]["after"]
    numeric = result["sorts"][2]
    values = [float(v) for v in numeric["values"]]
    assert numeric["dir"] == "ascending" and values == sorted(values)

    shot = Path(os.environ.get("ODDSPOT_SCREENSHOT_DIR", tmp_path)) / "report-demo.png"
    shot.parent.mkdir(parents=True, exist_ok=True)
    _run(browser, tmp_path, f"--screenshot={shot}", "--window-size=1280,4000", report.as_uri() + "#expand-all")
    image = np.asarray(Image.open(shot).convert("RGB"))
    assert image.shape[:2] == (4000, 1280)
    assert image.std() > 10  # not a blank page
