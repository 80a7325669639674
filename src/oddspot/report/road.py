"""The road-task section of a report: segmentation quality, pixel OOD metrics per score, panels.

Reads the metrics.json of `oddspot.road.evaluate` (keys "segmentation" and "anomaly") and inlines
the `<name>_panel.png` files of `oddspot.road.predict` found in a `panels/` folder next to it
(input | prediction | overlay | confidence | anomaly score).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from oddspot.report import plots
from oddspot.report.gallery import Warn
from oddspot.report.html import details, esc, fmt, img, table

MAX_PANELS = 8
MAX_PANEL_BYTES = 3 * 2**20


def is_road(metrics: Any) -> bool:
    """True for the metrics.json of a road evaluation."""
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


def section(metrics: dict[str, Any], folder: Path, anchor: str, name: str, warn: Warn) -> str:
    """The road section: segmentation table and plot, anomaly-score table, panels."""
    seg, anomaly = metrics["segmentation"], metrics["anomaly"]
    iou = seg.get("iou") or {}
    seg_rows = [["mIoU (classes present)", seg.get("miou")], ["pixel accuracy", seg.get("pixel_accuracy")],
                ["images", seg.get("n_images")]]
    parts = [f'<h2 id="{anchor}">{esc(name)}</h2>',
             f'<p class="meta">road task · run <code>{esc(metrics.get("run", "?"))}</code> · segmentation on the '
             f'{esc(seg.get("split", "validation"))} split, anomaly scores on the {esc(anomaly.get("split", "test"))} split</p>',
             "<h3>Segmentation</h3>"]
    iou_table = table(["class", "IoU"], [[k, v] for k, v in iou.items()], sortable=True, caption="Per-class IoU")
    plot = iou_plot(iou)
    parts.append('<div class="row"><div>' + table(["segmentation", "value"], seg_rows, caption="Summary")
                 + iou_table + "</div>" + (f'<div style="flex:1;min-width:420px">{img(plot, "image/png", "per-class IoU")}</div>'
                                           if plot else "") + "</div>")
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
    parts += ["<h3>Out-of-distribution metrics</h3>",
              f'<div class="scroll">{table(headers, rows, sortable=True, caption=caption, cls="wide")}</div>']
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
