"""The video-task section of a report: frame-level metrics, per event type and per video, score curves.

Reads the `evaluation.json` that `oddspot video evaluate` (and the video demo) writes per detector,
and inlines the `score_curves.png` beside it: each test video's frame scores over time with the
ground-truth anomalous intervals shaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from oddspot.report.gallery import Warn
from oddspot.report.html import esc, img, table

EVALUATION_FILE = "evaluation.json"
CURVES_FILE = "score_curves.png"
MAX_CURVES_BYTES = 4 * 2**20


def is_video(evaluation: Any) -> bool:
    """True for the evaluation.json of a video evaluation."""
    return isinstance(evaluation, dict) and {"micro_auroc", "macro_auroc", "per_video"} <= set(evaluation)


def section(evaluation: dict[str, Any], folder: Path, anchor: str, name: str, warn: Warn) -> str:
    """Summary, per-event-type and per-video tables, and the score-over-time curves."""
    summary = [["micro AUROC (all test frames pooled)", evaluation.get("micro_auroc")],
               ["AP (micro)", evaluation.get("ap")],
               ["macro AUROC (mean over videos)", evaluation.get("macro_auroc")],
               ["macro AP", evaluation.get("macro_ap")],
               ["frames / anomalous", f"{evaluation.get('frames')} / {evaluation.get('anomalous_frames')}"],
               ["first frames skipped per video", evaluation.get("skip_first")]]
    events = [[kind, r.get("auroc"), r.get("ap"), r.get("frames")] for kind, r in (evaluation.get("per_event_type") or {}).items()]
    videos = [[vid, r.get("auroc"), r.get("ap"), r.get("frames"), r.get("anomalous_frames")]
              for vid, r in (evaluation.get("per_video") or {}).items()]
    parts = [f'<h2 id="{anchor}">{esc(name)}</h2>',
             f'<p class="meta">video task · frame-level evaluation · folder <code>{esc(folder)}</code></p>',
             '<div class="row"><div>' + table(["frame level", "value"], summary, caption="Summary") + "</div><div>"
             + table(["event type", "AUROC", "AP", "frames"], events, sortable=True,
                     caption="Each event type's frames against all normal frames") + "</div></div>",
             table(["video", "AUROC", "AP", "frames", "anomalous"], videos, sortable=True, caption="Per test video")]
    curves = folder / CURVES_FILE
    if curves.exists():
        data = curves.read_bytes()
        if len(data) > MAX_CURVES_BYTES:
            warn(f"{curves}: {len(data) / 2**20:.1f} MiB is over the report's budget for score curves; left out")
        else:
            parts += ["<h3>Scores over time</h3>",
                      '<p class="legend">frame score per test video; ground-truth anomalous frames shaded</p>',
                      img(data, "image/png", f"score curves of {name}")]
    return "".join(parts)
