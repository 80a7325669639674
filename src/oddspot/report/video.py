"""The video-task section of a report: frame-level metrics, per event type and per video, score curves.

Reads the evaluation record that `oddspot video evaluate` (and the video demo) writes per detector:
metrics.json (task "video"), scores.csv (video,frame,label,score,normalized,anomalous), curves.json
(frame-level ROC and PR) and, when present, the `score_curves.png` beside it; without that figure
the scores over time are drawn from scores.csv (ground-truth anomalous frames shaded).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from oddspot.errors import OddspotError
from oddspot.records.evaluation import CURVES_FILE, SCORES_FILE
from oddspot.report import plots
from oddspot.report.gallery import Warn
from oddspot.report.html import esc, img, table
from oddspot.report.scores import FrameScore, read_curves, read_frame_scores

SCORE_CURVES_FILE = "score_curves.png"
MAX_CURVES_BYTES = 4 * 2**20
MAX_VIDEOS_DRAWN = 12


def is_video(metrics: Any) -> bool:
    """True for the metrics of a video evaluation (frame-level micro / macro AUROC per video)."""
    return isinstance(metrics, dict) and {"micro_auroc", "macro_auroc", "per_video"} <= set(metrics)


def operating_point(metrics: dict[str, Any], rows: list[FrameScore]) -> tuple[list[list[Any]], str] | None:
    """Rows of the operating-point table and its caption: the recorded decision metrics
    (metrics["decision"]), else counted from the decisions in scores.csv; None without either."""
    decision = metrics.get("decision")
    if isinstance(decision, dict) and decision.get("threshold") is not None:
        keys = ("threshold", "precision", "recall", "f1", "accuracy", "tp", "fp", "tn", "fn")
        return [[k, decision.get(k)] for k in keys], "Operating point (frames after the skipped ones)"
    decided = [r for r in rows if r.anomalous is not None and r.label is not None]
    if not decided:
        return None
    y = np.array([r.label for r in decided], bool)
    d = np.array([r.anomalous for r in decided], bool)
    tp, fp = int((y & d).sum()), int((~y & d).sum())
    fn, tn = int((y & ~d).sum()), int((~y & ~d).sum())
    table_rows = [["precision", tp / (tp + fp) if tp + fp else None], ["recall", tp / (tp + fn) if tp + fn else None],
                  ["f1", 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else None],
                  ["accuracy", (tp + tn) / len(decided)], ["tp", tp], ["fp", fp], ["tn", tn], ["fn", fn]]
    return table_rows, "Operating point (recorded frame decisions, all frames)"


def roc_pr_html(folder: Path, metrics: dict[str, Any], warn: Warn) -> str:
    """Frame-level ROC and precision-recall curves from curves.json ({"frame": {"roc": ..., "pr": ...}})."""
    path = folder / CURVES_FILE
    if not path.exists():
        return ""
    try:
        frame = read_curves(path, "video").get("frame")
    except OddspotError as exc:
        warn(f"skipped: {exc}")
        return ""
    if not isinstance(frame, dict):
        warn(f"{path}: no frame-level curves; ROC and PR plots left out")
        return ""
    n, pos = metrics.get("frames"), metrics.get("anomalous_frames")
    prevalence = pos / n if isinstance(n, int) and isinstance(pos, int) and n else None
    names = ("frame", "")
    figs = [plots.roc_plot(frame.get("roc"), None, metrics.get("micro_auroc"), names=names),
            plots.pr_plot(frame.get("pr"), None, metrics.get("ap"), image_prevalence=prevalence, names=names)]
    body = "".join(img(data, "image/png", alt) for alt, data in zip(("ROC curve", "precision-recall curve"), figs) if data)
    return f'<div class="plots">{body}</div>' if body else ""


def curves_html(folder: Path, rows: list[FrameScore] | None, name: str, metrics: dict[str, Any], warn: Warn) -> str:
    """The score-over-time figure: the stored one when present, else drawn from scores.csv."""
    legend = '<p class="legend">frame score per test video; ground-truth anomalous frames shaded</p>'
    stored = folder / SCORE_CURVES_FILE
    if stored.exists():
        data = stored.read_bytes()
        if len(data) <= MAX_CURVES_BYTES:
            return "<h3>Scores over time</h3>" + legend + img(data, "image/png", f"score curves of {name}")
        warn(f"{stored}: {len(data) / 2**20:.1f} MiB is over the report's budget for score curves; drawn from scores.csv")
    if not rows:
        return ""
    by_video: dict[str, list[FrameScore]] = {}
    for r in rows:
        by_video.setdefault(r.video, []).append(r)
    normalized = metrics.get("score") == "normalized" and all(r.normalized is not None for r in rows)
    decision = metrics.get("decision") if isinstance(metrics.get("decision"), dict) else {}
    drawn = {}
    for vid in sorted(by_video)[:MAX_VIDEOS_DRAWN]:
        frames = sorted(by_video[vid], key=lambda r: r.frame)
        drawn[vid] = (np.array([r.frame for r in frames]),
                      np.array([r.normalized if normalized else r.score for r in frames], float),
                      np.array([r.label == 1 for r in frames]))
    note = (f'<p class="note">{len(by_video)} test videos: the first {MAX_VIDEOS_DRAWN} are drawn.</p>'
            if len(by_video) > MAX_VIDEOS_DRAWN else "")
    data = plots.frame_score_plot(drawn, threshold=decision.get("threshold") if normalized else None)
    return "<h3>Scores over time</h3>" + legend + note + (img(data, "image/png", f"score curves of {name}") if data else "")


def section(metrics: dict[str, Any], folder: Path, anchor: str, name: str, warn: Warn) -> str:
    """Summary, operating point, per-event-type and per-video tables, and the score-over-time curves."""
    rows = None
    if (folder / SCORES_FILE).exists():
        try:
            rows = read_frame_scores(folder / SCORES_FILE, warn)
        except OddspotError as exc:
            warn(f"skipped: {exc}")
    ranked = {"normalized": "normalized frame scores", "scores": "raw frame scores"}.get(str(metrics.get("score")))
    summary = [["micro AUROC (all test frames pooled)", metrics.get("micro_auroc")],
               ["AP (micro)", metrics.get("ap")],
               ["macro AUROC (mean over videos)", metrics.get("macro_auroc")],
               ["macro AP", metrics.get("macro_ap")],
               ["frames / anomalous", f"{metrics.get('frames')} / {metrics.get('anomalous_frames')}"],
               ["first frames skipped per video", metrics.get("skip_first")]]
    if ranked:
        summary.append(["ranked by", ranked])
    if metrics.get("tta", "model") != "model" or metrics.get("power", 1.0) != 1.0:  # studies at evaluate
        views = metrics.get("tta_views")
        summary.append(["test-time views", ", ".join(map(str, views)) if isinstance(views, list) else metrics.get("tta")])
        summary.append(["score power", metrics.get("power")])
    events = [[kind, r.get("auroc"), r.get("ap"), r.get("frames")]
              for kind, r in (metrics.get("per_event_type") or {}).items() if isinstance(r, dict)]
    videos = [[vid, r.get("auroc"), r.get("ap"), r.get("frames"), r.get("anomalous_frames")]
              for vid, r in (metrics.get("per_video") or {}).items() if isinstance(r, dict)]
    point = operating_point(metrics, rows or [])
    left = table(["frame level", "value"], summary, caption="Summary")
    if point:
        left += table(["at threshold", "value"], point[0], caption=point[1])
    parts = [f'<h2 id="{anchor}">{esc(name)}</h2>',
             f'<p class="meta">video task · frame-level evaluation · folder <code>{esc(folder)}</code></p>',
             f'<div class="row"><div>{left}</div><div>'
             + table(["event type", "AUROC", "AP", "frames"], events, sortable=True,
                     caption="Each event type's frames against all normal frames") + "</div></div>",
             table(["video", "AUROC", "AP", "frames", "anomalous"], videos, sortable=True, caption="Per test video"),
             roc_pr_html(folder, metrics, warn), curves_html(folder, rows, name, metrics, warn)]
    return "".join(parts)
