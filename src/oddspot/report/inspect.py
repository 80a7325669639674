"""The inspect-task section of a report: one evaluate output (metrics, curves, scores, gallery)."""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from oddspot.errors import OddspotError
from oddspot.report import plots
from oddspot.report.gallery import Warn, card_html, choose, read_scores, render
from oddspot.report.html import Raw, details, esc, fmt, img, table

NO_CALIBRATION = "F1-max on test (no calibration)"


def read_json(path: Path) -> Any:
    """A JSON file, with a one-line error naming it when it is unreadable."""
    try:
        return json.loads(path.read_text())
    except OSError as exc:
        raise OddspotError(f"{path}: cannot read ({exc.strerror}); check the folder") from None
    except json.JSONDecodeError as exc:
        raise OddspotError(f"{path}: corrupt JSON ({exc.msg}, line {exc.lineno}); re-run the command that wrote it") from None


def is_inspection(metrics: Any) -> bool:
    """True for the metrics.json of an inspect evaluation."""
    return isinstance(metrics, dict) and isinstance(metrics.get("image"), dict) and "auroc" in metrics["image"]


def resolve(path: str | None, near: Path | None) -> Path | None:
    """A path recorded in an output: as written, else relative to the output folder or its parents."""
    if not path:
        return None
    p = Path(path)
    if p.exists():
        return p
    if not p.is_absolute() and near is not None:
        for base in (near, *near.parents):
            for k in range(len(p.parts)):
                cand = base.joinpath(*p.parts[k:])
                if cand.exists():
                    return cand
    return None


@dataclass
class Evaluation:
    """What one evaluate output folder holds (curves and scores are optional)."""

    name: str
    folder: Path | None
    metrics: dict[str, Any]
    curves: dict[str, Any] | None = None
    scores: list | None = None

    @classmethod
    def load(cls, folder: Path, warn: Warn, name: str | None = None) -> "Evaluation":
        """Read metrics.json, curves.json and scores.csv of an evaluate output folder."""
        metrics = read_json(folder / "metrics.json")
        curves = read_json(folder / "curves.json") if (folder / "curves.json").exists() else None
        scores = read_scores(folder / "scores.csv", warn) if (folder / "scores.csv").exists() else None
        run = metrics.get("run") or {}
        return cls(name or str(run.get("category") or folder.name), folder, metrics, curves, scores)

    @property
    def model(self) -> Path | None:
        """The saved model (run folder) that produced the scores, when it can still be found."""
        return resolve((self.metrics.get("run") or {}).get("model"), self.folder)


@dataclass
class Thresholds:
    """The operating point shown in the report and where it comes from."""

    image: float | None
    pixel: float | None
    strategy: str
    calibrated: bool
    detail: str = ""


def thresholds(ev: Evaluation) -> Thresholds:
    """Calibrated thresholds (metrics["calibration"] or the run's calibration.json), else test F1-max."""
    cal = ev.metrics.get("calibration")
    model = ev.model
    if not cal and model is not None and (model / "calibration.json").exists():
        cal = read_json(model / "calibration.json")
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
        prows = [["AUROC (pooled pixels)", pixel.get("auroc")],
                 ["AP (pooled pixels)", pixel.get("ap")],
                 [f"AUPRO (FPR ≤ {fmt(pixel.get('aupro_fpr_limit', 0.3), 2)})", pixel.get("aupro")],
                 ["F1-max", pixel.get("f1_max")],
                 ["F1-max threshold", pixel.get("f1_max_threshold")],
                 ["FPR@95TPR (first TPR ≥ 0.95)", pixel.get("fpr95_first")],
                 ["FPR@95TPR (recall nearest 0.95)", pixel.get("fpr95_nearest")],
                 [f"per-image AUROC (mean over {per.get('n_used', '?')} images)", per.get("auroc")],
                 ["per-image AP", per.get("ap")],
                 ["defect regions", pixel.get("n_regions")]]
        out.append(table(["pixel-level", "value"], prows, caption="Pixel level"))
    return '<div class="row">' + "".join(f"<div>{t}</div>" for t in out) + "</div>"


def operating_points(ev: Evaluation, th: Thresholds) -> str:
    """Precision / recall / F1 / accuracy and counts at the shown thresholds."""
    image_at = ev.metrics["image"].get("at_threshold")
    if image_at is None and th.image is not None and ev.scores:
        from oddspot.metrics import BinaryRankingMetrics

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
    body = "".join(img(data, "image/png", alt) for alt, data in figs if data)
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


def gallery(ev: Evaluation, th: Thresholds, top_k: int, warn: Warn, thumb: int) -> str:
    """The collapsed gallery sections; notes instead when scores or model are missing."""
    if top_k == 0:
        return '<p class="legend">Gallery turned off (--top 0).</p>'
    if not ev.scores or th.image is None:
        return '<p class="note">No gallery: scores.csv is missing from this output.</p>'
    groups = choose(ev.scores, th.image, top_k)
    model = ev.model
    if model is None:
        where = (ev.metrics.get("run") or {}).get("model")
        warn(f"gallery of {ev.name}: saved model {where!r} not found; gallery left out")
        return (f'<p class="note">No gallery: the saved model <code>{esc(where)}</code> was not found, so the chosen '
                "images cannot be re-scored. Run the report where the run folder is reachable.</p>")
    from oddspot.detectors.registry import load_detector

    cards, skipped = render(groups, load_detector(model), th.pixel, warn, thumb)
    scores = [r.score for r in ev.scores]
    lo, hi = min(scores + [th.image]), max(scores + [th.image])
    legend = ('<p class="legend"><span class="swatch"></span>ground-truth outline · heatmap colours run from 0 to the '
              "model's stored display maximum (jet) · predicted mask = pixels whose anomaly score ≥ the pixel threshold "
              f"{fmt(th.pixel, 4)} · the bar shows the score (dot) against the image threshold (line) within the range of test scores</p>")
    parts = [legend]
    for g in groups:
        body = "".join(card_html(c, th.image, lo, hi) for c in cards[g.key])
        body = f'<p class="legend">{esc(g.note)}</p><div class="cards">{body}</div>' if body else \
            f'<p class="legend">{esc(g.note) if g.rows else "none"}</p>'
        parts.append(details(f"{esc(g.title)} ({len(cards[g.key])})", f"<div>{body}</div>"))
    if skipped:
        parts.append('<p class="note">Skipped (could not be read): ' + "; ".join(esc(s) for s in skipped) + "</p>")
    return "".join(parts)


def section(ev: Evaluation, anchor: str, top_k: int, warn: Warn, thumb: int, heading: str = "h2") -> str:
    """The full section for one evaluation."""
    th = thresholds(ev)
    run = ev.metrics.get("run") or {}
    meta = " · ".join(f"{k.replace('_', ' ')}: {esc(fmt(run[k]))}" for k in ("split", "n_test", "predict_seconds")
                      if k in run)
    src = f" · output <code>{esc(ev.folder)}</code>" if ev.folder else ""
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
    parts += ["<h3>Gallery</h3>", gallery(ev, th, top_k, warn, thumb)]
    return "".join(parts)


def results_row(ev: Evaluation, anchor: str) -> list[Any]:
    """The evaluation's row of a results table (one per category)."""
    image, pixel = ev.metrics["image"], ev.metrics.get("pixel") or {}
    return [Raw(f'<a href="#{anchor}">{esc(ev.name)}</a>', ev.name.lower()), image.get("auroc"), image.get("ap"),
            image.get("f1_max"), pixel.get("auroc"), pixel.get("ap"), pixel.get("aupro"),
            image.get("n_images", (ev.metrics.get("run") or {}).get("n_test"))]


RESULTS_HEADERS = ["category", "image AUROC", "image AP", "image F1-max", "pixel AUROC", "pixel AP", "AUPRO", "test images"]
