"""The HTML report: content, self-containment, gallery choice, CLI, and the page in headless Chromium."""

from __future__ import annotations

import base64
import csv
import io
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from oddspot import inspection
from oddspot.cli import cli
from oddspot.data.demo_dataset import build_demo_dataset
from oddspot.errors import OddspotError
from oddspot.files import write_json
from oddspot.report import build_report, write_report
from oddspot.report.gallery import ScoreRow, choose, panels
from oddspot.report.inspect import NO_CALIBRATION

OPTIONS = {"image_size": 64, "coreset_ratio": 0.25, "batch_size": 8}
CATEGORIES = ("brick", "grass")


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory) -> Path:
    """A demo-shaped output (data/, runs/<cat>, eval/<cat>, metrics.json) for two tiny categories."""
    out = tmp_path_factory.mktemp("demo")
    data = build_demo_dataset(out / "data", CATEGORIES, n_train=10, n_test_good=4, n_test_bad=6, tile=64)
    results = {}
    for cat in CATEGORIES:
        inspection.fit(data, cat, out / "runs" / cat, options=OPTIONS)
        results[cat] = inspection.evaluate(out / "runs" / cat, data, cat, out / "eval" / cat, bootstrap=50)
    write_json(out / "metrics.json", {"categories": results, "seed": 0})
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


def test_evaluate_report_is_self_contained_and_complete(demo_dir):
    path = write_report(demo_dir / "eval" / "brick")
    assert path == demo_dir / "eval" / "brick" / "report.html"
    html = path.read_text()
    uris = _images(html)
    # 4 plots (ROC, PR, PRO, histogram) + 4 panels per gallery card
    assert len(uris) >= 4 + 4 * 3
    assert all(_decode(u).width > 0 for u in uris)
    assert not re.search(r'(src|href)="(https?:)?//', html), "external resource referenced"
    assert "<link" not in html and "@import" not in html
    for text in ("Image level", "Pixel level", "AUPRO", "95% CI", "Per defect type", "Per defect size",
                 "Operating point", "alse negatives", "alse positives", "Best detections"):
        assert text in html, text
    metrics = json.loads((demo_dir / "eval" / "brick" / "metrics.json").read_text())
    calibration = metrics["calibration"]
    assert f"{calibration['strategy']} (calibrated on validation data)" in html and NO_CALIBRATION not in html
    assert f"<b>{calibration['image_threshold']:.4f}</b>" in html
    # every test file picked for the gallery is named
    scores = list(csv.DictReader(open(demo_dir / "eval" / "brick" / "scores.csv")))
    worst_good = max((r for r in scores if r["label"] == "0"), key=lambda r: float(r["score"]))
    assert str(Path(worst_good["path"]).name) in html
    # the gallery is collapsed (progressive disclosure)
    assert "<details open" not in html


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
    write_json(folder / "metrics.json", metrics)
    html = build_report(folder, top_k=0, warn=lambda m: None)
    assert "Gallery turned off" in html
    assert "quantile (calibrated on validation data)" in html
    assert NO_CALIBRATION not in html
    assert "27.1250" in html and "40.5000" in html


def test_without_calibration_uses_test_f1_max(demo_dir, tmp_path):
    folder, run = tmp_path / "eval", tmp_path / "run"
    shutil.copytree(demo_dir / "eval" / "brick", folder)
    shutil.copytree(demo_dir / "runs" / "brick", run)
    (run / "calibration.json").unlink()
    metrics = json.loads((folder / "metrics.json").read_text())
    del metrics["calibration"]
    metrics["run"]["model"] = str(run)
    write_json(folder / "metrics.json", metrics)
    html = build_report(folder, top_k=0, warn=lambda m: None)
    assert NO_CALIBRATION in html and "calibrated on validation data" not in html
    assert f"<b>{metrics['image']['f1_max_threshold']:.4f}</b>" in html


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


def test_panels_show_outline_and_predicted_mask():
    image = np.full((64, 64, 3), 128, np.uint8)
    amap = np.zeros((64, 64), np.float32)
    amap[10:30, 10:30] = 5.0
    mask = np.zeros((64, 64), bool)
    mask[40:60, 40:60] = True
    out = panels(image, amap, mask, display_max=5.0, pixel_threshold=1.0, longest=64)
    assert [c for c, _, _ in out] == ["image", "ground truth", "heatmap", "predicted mask"]
    pred = np.asarray(Image.open(io.BytesIO(out[3][1])))
    assert pred[20, 20].min() > 200 and pred[5, 5].max() < 60  # predicted region white, rest dark
    assert tuple(pred[40, 50]) == (255, 0, 255)  # ground-truth outline drawn over it
    assert tuple(pred[50, 50]) != (255, 0, 255)  # outline only, not filled


def test_bad_score_rows_are_reported_and_skipped(demo_dir, tmp_path):
    folder = tmp_path / "eval"
    shutil.copytree(demo_dir / "eval" / "brick", folder)
    lines = (folder / "scores.csv").read_text().splitlines()
    lines.insert(2, "missing.png,1,crack,not-a-number")
    (folder / "scores.csv").write_text("\n".join(lines) + "\n")
    warnings: list[str] = []
    write_report(folder, top_k=0, warn=warnings.append)
    assert any("line 3" in w and "scores.csv" in w for w in warnings)


def test_missing_model_leaves_gallery_out_with_a_note(demo_dir, tmp_path):
    folder = tmp_path / "eval"
    shutil.copytree(demo_dir / "eval" / "brick", folder)
    metrics = json.loads((folder / "metrics.json").read_text())
    metrics["run"]["model"] = str(tmp_path / "gone")
    write_json(folder / "metrics.json", metrics)
    warnings: list[str] = []
    html = build_report(folder, warn=warnings.append)
    assert "No gallery" in html and any("not found" in w for w in warnings)


def test_experiment_folder(tmp_path):
    (tmp_path / "plots").mkdir()
    (tmp_path / "results.csv").write_text("detector,category,image_auroc\npatchcore,brick,0.91\npadim,brick,0.75\n")
    buf = io.BytesIO()
    Image.new("RGB", (30, 20), (200, 10, 10)).save(buf, format="PNG")
    (tmp_path / "plots" / "auroc.png").write_bytes(buf.getvalue())
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


def test_road_section(tmp_path):
    write_json(tmp_path / "eval" / "metrics.json", _road_metrics())
    (tmp_path / "panels").mkdir()
    Image.new("RGB", (50, 10), (1, 2, 3)).save(tmp_path / "panels" / "000_panel.png")
    html = write_report(tmp_path).read_text()
    for text in ("Per-class IoU", "mIoU", "max_logit", "FPR95 (nearest)", "per-image AUROC", "000_panel.png"):
        assert text in html, text
    assert 'data-value="0.95"' in html  # per-class IoU and AUROC cells sort numerically
    sizes = {_decode(u).size for u in _images(html)}
    assert (50, 10) in sizes and len(sizes) == 2  # the panel and the IoU bar chart


def test_errors(tmp_path):
    with pytest.raises(OddspotError, match="no such folder"):
        write_report(tmp_path / "nope")
    with pytest.raises(OddspotError, match="no metrics.json"):
        write_report(tmp_path)
    with pytest.raises(OddspotError, match="--thumb"):
        write_report(tmp_path, thumb=4)
    (tmp_path / "metrics.json").write_text("{oops")
    with pytest.raises(OddspotError, match="corrupt JSON"):
        write_report(tmp_path, warn=lambda m: None)


def test_cli(demo_dir, tmp_path):
    runner = CliRunner()
    out = tmp_path / "r.html"
    res = runner.invoke(cli, ["report", str(demo_dir / "eval" / "grass"), "--top", "0", "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert out.exists() and "report:" in res.output
    res = runner.invoke(cli, ["report", str(tmp_path / "missing")])
    assert res.exit_code == 2 and "error:" in res.output


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


def _chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        found = shutil.which(name)
        if found:
            return found
    if os.environ.get("CI"):
        pytest.fail("headless Chromium is required in CI (.ci/run installs Debian's chromium)")
    pytest.skip("chromium not installed (and not in CI): apt-get install -y chromium")


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
    browser = _chromium()
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


def test_video_evaluation_gets_its_section(tmp_path):
    """A video evaluate folder: metrics tables per event type and per video, and the inlined score curves."""
    import io
    import json

    from PIL import Image

    from oddspot.report import write_report

    ev = {"skip_first": 0, "frames": 40, "anomalous_frames": 10, "micro_auroc": 0.9123, "ap": 0.8, "macro_auroc": 0.88,
          "macro_ap": 0.7, "per_event_type": {"too_fast": {"auroc": 0.97, "ap": 0.9, "frames": 10}},
          "per_video": {"01": {"auroc": 0.88, "ap": 0.7, "frames": 40, "anomalous_frames": 10}}}
    folder = tmp_path / "motion"
    folder.mkdir()
    (folder / "evaluation.json").write_text(json.dumps(ev))
    buf = io.BytesIO()
    Image.new("RGB", (40, 20), (200, 30, 30)).save(buf, format="PNG")
    (folder / "score_curves.png").write_bytes(buf.getvalue())
    html = write_report(tmp_path).read_text()
    assert "video: motion" in html and "0.912" in html and "too_fast" in html
    assert "Scores over time" in html and "data:image/png;base64," in html
