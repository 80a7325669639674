"""The road-task section of a report: segmentation quality, pixel OOD metrics per score, panels.

Reads the evaluation record of `oddspot road evaluate`: metrics.json (task "road", keys
"segmentation" (validation) and "anomaly", and when present "segmentation_test", "tta" (the
test-time augmentation) and "image" for the image-level decision), curves.json (pooled pixel
ROC / PR per score, image-level curves), scores.csv (one row per test image) and the
`<name>_panel.png` files in a `panels/` folder in or next to it (input | prediction | overlay |
confidence | anomaly score).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from oddspot.errors import OddspotError
from oddspot.records.evaluation import CURVES_FILE, SCORES_FILE
from oddspot.report import plots
from oddspot.report.gallery import Warn
from oddspot.report.html import details, esc, fmt, img, reliability_note, table
from oddspot.report.scores import read_curves, read_scores

MAX_PANELS = 8
MAX_PANEL_BYTES = 3 * 2**20


def is_road(metrics: Any) -> bool:
    """True for the metrics of a road evaluation (segmentation and per-score anomaly metrics)."""
    return (isinstance(metrics, dict) and isinstance(metrics.get("segmentation"), dict)
            and isinstance((metrics.get("anomaly") or {}).get("scores"), dict))


def iou_plot(iou: dict[str, float]) -> bytes | None:
    """Horizontal bars of per-class IoU."""
    items = [(k, v) for k, v in iou.items() if isinstance(v, (int, float)) and v == v]
    if not items:
        return None
    fig = Figure(figsize=(plots.WIDTH, max(2.4, 0.28 * len(items) + 0.9)), dpi=plots.DPI)
    ax = fig.add_subplot(1, 1, 1)
    ax.barh([k for k, _ in items][::-1], [v for _, v in items][::-1], color=plots.IMAGE_COLOUR)
    ax.set(xlim=(0, 1), xlabel="IoU (validation)", title="Per-class IoU")
    ax.grid(True, axis="x", color="#e3e6eb")
    ax.set_axisbelow(True)
    return plots.to_png(fig)


def panel_files(folder: Path) -> list[Path]:
    """Panels written by road predict, in `panels/` beside or above the metrics folder."""
    for where in (folder / "panels", folder.parent / "panels"):
        if where.is_dir():
            return sorted(where.glob("*_panel.png"))[:MAX_PANELS]
    return []


def _curves(folder: Path, warn: Warn) -> dict[str, Any]:
    path = folder / CURVES_FILE
    if not path.exists():
        return {}
    try:
        return read_curves(path, "road")
    except OddspotError as exc:
        warn(f"skipped: {exc}")
        return {}


def pixel_curves_html(anomaly: dict[str, Any], curves: dict[str, Any]) -> str:
    """Pooled pixel ROC and PR curves, one line per anomaly score."""
    pixel = curves.get("pixel") if isinstance(curves.get("pixel"), dict) else {}
    scores = anomaly.get("scores") or {}
    aurocs = {k: (v.get("pooled") or {}).get("auroc") for k, v in scores.items() if isinstance(v, dict)}
    aps = {k: (v.get("pooled") or {}).get("ap") for k, v in scores.items() if isinstance(v, dict)}
    figs = [("pixel ROC per score", plots.named_curves(pixel, "roc", aurocs, "Pixel ROC (pooled)")),
            ("pixel PR per score", plots.named_curves(pixel, "pr", aps, "Pixel precision-recall (pooled)"))]
    body = "".join(img(data, "image/png", alt) for alt, data in figs if data)
    return f'<div class="plots">{body}</div>' if body else ""


def image_html(metrics: dict[str, Any], folder: Path, curves: dict[str, Any], warn: Warn) -> str:
    """The image-level decision (does a test image hold anomaly pixels?): its table, curves and score histogram."""
    image = metrics.get("image")
    if not isinstance(image, dict):
        return ""
    rows = [["score", image.get("score")], ["image statistic", image.get("statistic")],
            ["images / with anomaly", f"{fmt(image.get('n_images'))} / {fmt(image.get('n_anomalous'))}"],
            ["AUROC", image.get("auroc")], ["AP", image.get("ap")], ["F1-max", image.get("f1_max")],
            ["threshold", image.get("threshold")]]
    if image.get("tp") is not None:
        rows += [["tp / fp", f"{image.get('tp')} / {image.get('fp')}"], ["tn / fn", f"{image.get('tn')} / {image.get('fn')}"]]
    figs = []
    image_curves = curves.get("image")
    if isinstance(image_curves, dict):
        named = {str(image.get("score") or "image"): image_curves}
        figs.append(("image ROC", plots.named_curves(named, "roc", {next(iter(named)): image.get("auroc")},
                                                     "Image ROC")))
    if (folder / SCORES_FILE).exists():
        try:
            scored = read_scores(folder / SCORES_FILE, warn)
        except OddspotError as exc:
            warn(f"skipped: {exc}")
            scored = []
        threshold = image.get("threshold")
        figs.append(("image score histogram", plots.score_histogram(
            [r.score for r in scored], [r.label for r in scored],
            float(threshold) if isinstance(threshold, (int, float)) else None)))
    rel = image.get("reliability")
    if isinstance(rel, dict) and isinstance(rel.get("bins"), list):
        figs.append(("reliability diagram of the image decisions", plots.reliability_plot(rel)))
    body = "".join(img(data, "image/png", alt) for alt, data in figs if data) + reliability_note(rel)
    return ("<h3>Image level</h3>" + '<div class="row"><div>'
            + table(["image level", "value"], rows, caption="Does a test image hold anomaly pixels?") + "</div></div>"
            + (f'<div class="plots">{body}</div>' if body else ""))


def sensitivity_html(anomaly: dict[str, Any]) -> str:
    """Per score: precision / recall / F1 at thresholds around the validation one (collapsed)."""
    parts = []
    for score, r in (anomaly.get("scores") or {}).items():
        rows = [[s.get("offset"), s.get("threshold"), s.get("precision"), s.get("recall"), s.get("f1")]
                for s in (r.get("sensitivity") or []) if isinstance(s, dict)] if isinstance(r, dict) else []
        if rows:
            parts.append(table(["offset (spreads)", "threshold", "precision", "recall", "F1"], rows, caption=str(score)))
    if not parts:
        return ""
    body = '<div class="row">' + "".join(f"<div>{p}</div>" for p in parts) + "</div>"
    return details("Threshold sensitivity (per score)", f"<div>{body}</div>")


def tta_text(tta: Any) -> str:
    """The test-time augmentation of an evaluation in words ("none" for a single plain pass)."""
    if not isinstance(tta, dict) or not isinstance(tta.get("scales"), list) or int(tta.get("passes") or 1) <= 1:
        return "none"
    scales = ", ".join(f"{s:g}" if isinstance(s, (int, float)) else str(s) for s in tta["scales"])
    return (f"scales {scales}" + (" + horizontal flip" if tta.get("flip") else "") + f" ({tta.get('passes')} passes averaged; "
            "logit scores from the mean logits, feature scores as the mean of the passes' maps)")


def segmentation_html(seg: dict[str, Any], test: Any) -> str:
    """Both splits' mIoU in both conventions, pixel accuracy and per-class IoU, and the IoU plot."""
    if seg.get("miou") is None and seg.get("note"):  # a benchmark of binary labels: no classes, no mIoU
        return f'<p class="note">{esc(seg["note"])}</p>'
    test = test if isinstance(test, dict) else {}
    iou, test_iou = seg.get("iou") or {}, test.get("iou") or {}
    rows = [["mIoU over classes present", seg.get("miou_present_classes", seg.get("miou")), test.get("miou_present_classes")],
            ["mIoU over all classes (absent = 0, StreetHazards code)", seg.get("miou_all_classes"), test.get("miou_all_classes")],
            ["pixel accuracy", seg.get("pixel_accuracy"), test.get("pixel_accuracy")],
            ["images", seg.get("n_images"), test.get("n_images")]]
    caption = ("Summary; on test the anomaly class is no class of the mean, its pixels' predictions count as false "
               "positives (StreetHazards code)" if test else "Summary")
    summary = table(["segmentation", str(seg.get("split", "validation")), "test"], rows, caption=caption)
    iou_table = table(["class", "IoU (validation)", "IoU (test)"], [[k, v, test_iou.get(k)] for k, v in iou.items()],
                      sortable=True, caption="Per-class IoU")
    plot = iou_plot(iou)
    return ('<div class="row"><div>' + summary + iou_table + "</div>"
            + (f'<div style="flex:1;min-width:420px">{img(plot, "image/png", "per-class IoU")}</div>' if plot else "")
            + "</div>")


def components_html(anomaly: dict[str, Any]) -> str:
    """SegmentMeIfYouCan's component metrics at the stored threshold (binary-label benchmarks only)."""
    comp = anomaly.get("components")
    if not comp:
        return ""
    rows = [["sIoU (mean over anomalies)", comp.get("siou_gt")], ["PPV (mean over predicted components)", comp.get("ppv")],
            ["mean F1 (sIoU thresholds 0.25..0.75)", comp.get("mean_f1")],
            *[[f"F1 at sIoU {t}", (comp.get("f1") or {}).get(t)] for t in ("0.25", "0.50", "0.75")],
            ["anomalies / predicted components", f"{fmt(comp.get('n_gt_components'))} / {fmt(comp.get('n_pred_components'))}"]]
    caption = (f"Components of {esc(str(comp.get('score')))} ≥ {fmt(comp.get('threshold'), 4)} (the stored threshold; "
               f"components under {fmt(comp.get('min_pred_size'))} predicted / {fmt(comp.get('min_gt_size'))} "
               "labelled pixels left out, as the benchmark does)")
    return table(["component level", "value"], rows, caption=caption)


def section(metrics: dict[str, Any], folder: Path, anchor: str, name: str, warn: Warn) -> str:
    """The road section: segmentation tables and plot, anomaly-score table, curves, sensitivity, panels."""
    seg, anomaly = metrics["segmentation"], metrics["anomaly"]
    parts = [f'<h2 id="{anchor}">{esc(name)}</h2>',
             f'<p class="meta">road task · run <code>{esc(metrics.get("run") or "?")}</code> · segmentation on the '
             f'{esc(seg.get("split", "validation"))} split, anomaly scores on the {esc(anomaly.get("split", "test"))} split'
             f' · test-time augmentation: {esc(tta_text(metrics.get("tta")))}</p>',
             "<h3>Segmentation</h3>", segmentation_html(seg, metrics.get("segmentation_test"))]
    rows = []
    for score, r in anomaly["scores"].items():
        p, per, th = r.get("pooled") or {}, r.get("per_image") or {}, r.get("threshold") or {}
        rows.append([score, p.get("auroc"), p.get("ap"), p.get("fpr95_first"), p.get("fpr95_nearest"), p.get("f1_max"),
                     per.get("auroc"), per.get("ap"), th.get("threshold"), th.get("precision"), th.get("recall"), th.get("f1")])
    headers = ["score", "AUROC", "AP", "FPR95 (first)", "FPR95 (nearest)", "F1-max", "per-image AUROC", "per-image AP",
               "threshold", "precision@thr", "recall@thr", "F1@thr"]
    caption = (f"Pixel anomaly scores ({fmt(anomaly.get('n_images'))} test images, "
               f"{fmt(anomaly.get('n_images_with_anomaly'))} with anomalies; pooled over all valid pixels, "
               "per-image = mean over images with both classes; thresholds from validation)")
    curves = _curves(folder, warn)
    parts += ["<h3>Out-of-distribution metrics</h3>",
              f'<div class="scroll">{table(headers, rows, sortable=True, caption=caption, cls="wide")}</div>',
              components_html(anomaly), pixel_curves_html(anomaly, curves), sensitivity_html(anomaly),
              image_html(metrics, folder, curves, warn)]
    figures = []
    for path in panel_files(folder):
        data = path.read_bytes()
        if len(data) > MAX_PANEL_BYTES:
            warn(f"{path}: {len(data) / 2**20:.1f} MiB is over the report's per-panel budget; left out")
            continue
        figures.append(f'<figure>{img(data, "image/png", path.stem)}<figcaption>{esc(path.name)}</figcaption></figure>')
    if figures:
        legend = '<p class="legend">input | prediction | overlay (pixels ≥ threshold) | confidence | anomaly score</p>'
        parts += ["<h3>Panels</h3>", details(f"Test panels ({len(figures)})",
                                             f'<div>{legend}<div class="road-panels">{"".join(figures)}</div></div>')]
    skipped = metrics.get("skipped_files") or []
    if skipped:
        parts.append('<p class="note">Skipped during evaluation: ' + "; ".join(esc(s) for s in skipped[:20]) + "</p>")
    return "".join(parts)
