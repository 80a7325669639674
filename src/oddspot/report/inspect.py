"""The inspect-task section of a report: one evaluation record (metrics, curves, scores, gallery).

Everything comes from the files `oddspot inspect evaluate` wrote: metrics.json (task "inspect"),
curves.json, scores.csv and gallery/. No model and no dataset is opened.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oddspot.errors import OddspotError
from oddspot.metrics import BinaryRankingMetrics
from oddspot.records.evaluation import CURVES_FILE, SCORES_FILE
from oddspot.records.gallery import ScoreRow
from oddspot.report import plots
from oddspot.report.gallery import Warn, gallery_html
from oddspot.report.html import Raw, esc, fmt, img, reliability_note, table
from oddspot.report.scores import read_curves, read_scores

NO_CALIBRATION = "F1-max on test (no calibration)"


def is_inspection(metrics: Any) -> bool:
    """True for inspect metrics (an evaluation's metrics.json, or one category of a summary)."""
    return isinstance(metrics, dict) and isinstance(metrics.get("image"), dict) and "auroc" in metrics["image"]


@dataclass
class Evaluation:
    """What one inspect evaluation record holds (curves, scores and gallery are optional)."""

    name: str
    folder: Path | None
    metrics: dict[str, Any]
    curves: dict[str, Any] | None = None
    scores: list[ScoreRow] | None = None

    @classmethod
    def load(cls, folder: Path, metrics: dict[str, Any], warn: Warn, name: str | None = None) -> Evaluation:
        """The record in `folder` (its metrics.json already read): curves.json and scores.csv when present."""
        curves = scores = None
        try:
            if (folder / CURVES_FILE).exists():
                curves = read_curves(folder / CURVES_FILE)
            if (folder / SCORES_FILE).exists():
                scores = read_scores(folder / SCORES_FILE, warn)
        except OddspotError as exc:
            warn(f"skipped: {exc}")
        run = metrics.get("run") or {}
        return cls(name or str(run.get("category") or folder.name), folder, metrics, curves, scores)


@dataclass
class Thresholds:
    """The operating point shown in the report and where it comes from."""

    image: float | None
    pixel: float | None
    strategy: str
    calibrated: bool
    detail: str = ""


def thresholds(ev: Evaluation) -> Thresholds:
    """The calibrated thresholds recorded in metrics.json ("calibration"), else the test F1-max ones."""
    cal = ev.metrics.get("calibration")
    if isinstance(cal, dict) and cal.get("image_threshold") is not None:
        strategy = str(cal.get("strategy", "calibrated"))
        info = cal.get("details") if isinstance(cal.get("details"), dict) else {}
        detail = " · ".join(f"{k.replace('_', ' ')} {fmt(v)}" for k, v in info.items() if not isinstance(v, (dict, list)))
        return Thresholds(float(cal["image_threshold"]), _float(cal.get("pixel_threshold")),
                          f"{strategy} (calibrated on validation data)", True, detail)
    pixel = ev.metrics.get("pixel") or {}
    return Thresholds(_float(ev.metrics["image"].get("f1_max_threshold")), _float(pixel.get("f1_max_threshold")),
                      NO_CALIBRATION, False)


def _float(v: Any) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _ci(m: dict[str, Any], key: str) -> str:
    ci = (m.get("ci") or {}).get(key)
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]" if isinstance(ci, (list, tuple)) and len(ci) == 2 else "–"


def summary_tables(ev: Evaluation, th: Thresholds) -> str:
    """Image- and pixel-level metric tables, with bootstrap intervals and operating points."""
    image = ev.metrics["image"]
    ci = image.get("ci") or {}
    ci_head = f"95% CI (bootstrap n={ci['n']})" if ci.get("n") else "95% CI"
    rows = [["AUROC", image.get("auroc"), _ci(image, "auroc")],
            ["AP (step-wise)", image.get("ap"), _ci(image, "ap")],
            ["F1-max", image.get("f1_max"), _ci(image, "f1_max")],
            ["F1-max threshold", image.get("f1_max_threshold"), ""],
            ["FPR@95TPR (first TPR ≥ 0.95)", image.get("fpr95_first"), ""],
            ["FPR@95TPR (recall nearest 0.95)", image.get("fpr95_nearest"), ""],
            ["images: good / defective", f"{image.get('n_neg', '?')} / {image.get('n_pos', '?')}", ""]]
    left = table(["image-level", "value", ci_head], rows, caption="Image level") + operating_points(ev, th)
    out = [left]
    pixel = ev.metrics.get("pixel")
    if pixel:
        per = pixel.get("per_image") or {}
        prows = [["AUROC (pooled pixels)", pixel.get("auroc"), _ci(pixel, "auroc")],
                 ["AP (pooled pixels)", pixel.get("ap"), _ci(pixel, "ap")],
                 [f"AUPRO (FPR ≤ {fmt(pixel.get('aupro_fpr_limit', 0.3), 2)})", pixel.get("aupro"), _ci(pixel, "aupro")],
                 ["F1-max", pixel.get("f1_max")],
                 ["F1-max threshold", pixel.get("f1_max_threshold")],
                 ["FPR@95TPR (first TPR ≥ 0.95)", pixel.get("fpr95_first")],
                 ["FPR@95TPR (recall nearest 0.95)", pixel.get("fpr95_nearest")],
                 [f"per-image AUROC (mean over {per.get('n_used', '?')} images)", per.get("auroc")],
                 ["per-image AP", per.get("ap")],
                 ["defect regions", pixel.get("n_regions")]]
        for group, spro in (pixel.get("spro") or {}).items():  # MVTec LOCO AD
            name = "sPRO (FPR ≤ 0.05)" + ("" if group == "all" else f", {group.replace('_', ' ')}")
            prows.append([name, (spro.get("auc") or {}).get("0.05")])
        pci = pixel.get("ci") or {}
        if pci.get("n"):
            prows = [r if len(r) == 3 else [*r, ""] for r in prows]
            out.append(table(["pixel-level", "value", f"95% CI (images resampled, n={pci['n']})"], prows,
                             caption="Pixel level"))
        else:
            out.append(table(["pixel-level", "value"], [r[:2] for r in prows], caption="Pixel level"))
    return '<div class="row">' + "".join(f"<div>{t}</div>" for t in out) + "</div>"


def operating_points(ev: Evaluation, th: Thresholds) -> str:
    """Precision / recall / F1 / accuracy and counts at the shown thresholds."""
    image_at = ev.metrics["image"].get("at_threshold")
    if image_at is None and th.image is not None and ev.scores:
        m = BinaryRankingMetrics()
        m.update(np.array([r.score for r in ev.scores]), np.array([r.label for r in ev.scores], bool))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            image_at = m.at_threshold(th.image)
    pixel_at = (ev.metrics.get("pixel") or {}).get("at_threshold")
    cols = [("image", image_at, th.image), ("pixel", pixel_at, th.pixel)]
    cols = [c for c in cols if c[1]]
    if not cols:
        return ""
    keys = ("precision", "recall", "f1", "accuracy", "tp", "fp", "tn", "fn")
    rows = [["threshold", *[t for _, _, t in cols]]] + [[k, *[c[1].get(k) for c in cols]] for k in keys]
    return table(["at threshold", *[c[0] for c in cols]], rows, caption="Operating point")


def curve_plots(ev: Evaluation, th: Thresholds) -> str:
    """ROC, PR, PRO and score histogram as inline PNGs."""
    image, pixel = ev.metrics["image"], ev.metrics.get("pixel") or {}
    cimg = (ev.curves or {}).get("image") or {}
    cpix = (ev.curves or {}).get("pixel") or {}
    figs = []

    def prevalence(m: dict[str, Any]) -> float | None:
        n = (m.get("n_pos") or 0) + (m.get("n_neg") or 0)
        return m["n_pos"] / n if n else None

    if ev.curves:
        figs.append(("ROC curves", plots.roc_plot(cimg.get("roc"), cpix.get("roc"), image.get("auroc"), pixel.get("auroc"))))
        figs.append(("precision-recall curves", plots.pr_plot(cimg.get("pr"), cpix.get("pr"), image.get("ap"), pixel.get("ap"),
                                                              prevalence(image), prevalence(pixel) if pixel else None)))
        figs.append(("PRO curve", plots.pro_plot(cpix.get("pro"), pixel.get("aupro"), pixel.get("aupro_fpr_limit", 0.3))))
    if ev.scores:
        name = "threshold" if th.calibrated else "F1-max threshold"
        figs.append(("score histogram", plots.score_histogram([r.score for r in ev.scores], [r.label for r in ev.scores],
                                                              th.image, name)))
    rel = ev.metrics.get("reliability")
    if isinstance(rel, dict) and isinstance(rel.get("bins"), list):
        figs.append((f"reliability diagram: {rel.get('kind', 'score')} vs observed anomaly frequency",
                     plots.reliability_plot(rel)))
    body = "".join(img(data, "image/png", alt) for alt, data in figs if data) + reliability_note(rel)
    missing = [] if ev.curves else ["curves.json"]
    missing += [] if ev.scores else ["scores.csv"]
    note = f'<p class="note">Not found: {esc(", ".join(missing))}; the plots that need it are left out.</p>' if missing else ""
    return f'{note}<div class="plots">{body}</div>' if body or note else ""


def breakdown_tables(ev: Evaluation) -> str:
    """Image-level AUROC / AP per defect type and per defect size."""
    bd = ev.metrics.get("breakdowns") or {}
    out = []
    types = bd.get("defect_type") or {}
    if types:
        rows = [[t, v.get("n"), v.get("n_good"), v.get("auroc"), v.get("ap")] for t, v in types.items() if isinstance(v, dict)]
        out.append(table(["defect type", "defective", "good", "AUROC", "AP"], rows, sortable=True,
                         caption="Per defect type (each type against all good images)"))
    size = bd.get("size") or {}
    rows = [[s, v.get("n"), v.get("n_good"), v.get("auroc"), v.get("ap")] for s, v in size.items() if isinstance(v, dict)]
    if rows:
        edges = size.get("edges")
        cap = "Per defect size (mask area fraction"
        cap += f"; edges {fmt(edges[0], 4)} and {fmt(edges[1], 4)})" if isinstance(edges, list) and len(edges) == 2 else ")"
        if size.get("n_unsized"):
            cap += f"; {size['n_unsized']} defective images without a mask"
        out.append(table(["defect size", "defective", "good", "AUROC", "AP"], rows, caption=cap))
    return '<div class="row">' + "".join(f"<div>{t}</div>" for t in out) + "</div>" if out else ""


def section(ev: Evaluation, anchor: str, top_k: int, warn: Warn, thumb: int | None, heading: str = "h2") -> str:
    """The full section for one evaluation."""
    th = thresholds(ev)
    run = ev.metrics.get("run") or {}
    meta = " · ".join(f"{k.replace('_', ' ')}: {esc(fmt(run[k]))}" for k in ("split", "n_test", "predict_seconds")
                      if k in run)
    src = f" · evaluation <code>{esc(ev.folder)}</code>" if ev.folder else ""
    cls = "" if th.calibrated else ' warn'
    caveat = f" ({th.detail})" if th.detail else ""
    caveat = caveat if th.calibrated else " (chosen on the test images themselves: optimistic)"
    thr = (f'<div class="threshold">Image threshold <b>{fmt(th.image, 4)}</b> · pixel threshold '
           f'<b>{fmt(th.pixel, 4)}</b> · strategy: <span class="strategy{cls}">{esc(th.strategy)}</span>{esc(caveat)}</div>')
    parts = [f'<{heading} id="{anchor}">{esc(ev.name)}</{heading}>', f'<p class="meta">{meta}{src}</p>', thr,
             summary_tables(ev, th), "<h3>Curves and score distributions</h3>", curve_plots(ev, th)]
    bd = breakdown_tables(ev)
    if bd:
        parts += ["<h3>Breakdowns</h3>", bd]
    scores = [r.score for r in ev.scores or ()]
    parts += ["<h3>Gallery</h3>", gallery_html(ev.folder, ev.name, scores, top_k, thumb, warn)]
    return "".join(parts)


def results_row(ev: Evaluation, anchor: str) -> list[Any]:
    """The evaluation's row of a results table (one per category)."""
    image, pixel = ev.metrics["image"], ev.metrics.get("pixel") or {}
    return [Raw(f'<a href="#{anchor}">{esc(ev.name)}</a>', ev.name.lower()), image.get("auroc"), image.get("ap"),
            image.get("f1_max"), pixel.get("auroc"), pixel.get("ap"), pixel.get("aupro"),
            image.get("n_images", (ev.metrics.get("run") or {}).get("n_test"))]


RESULTS_HEADERS = ["category", "image AUROC", "image AP", "image F1-max", "pixel AUROC", "pixel AP", "AUPRO", "test images"]
