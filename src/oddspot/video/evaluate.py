"""Frame-level video evaluation through oddspot.metrics: micro (pooled) and macro (per video) AUROC/AP,
per-event-type AUROC, and per-video score curves for the report.

- micro: every evaluated test frame of every video pooled into one ranking;
- macro: the metric per video, averaged over the videos that have both normal and anomalous
  frames (the others are listed, not silently dropped);
- per event type: the frames of that event type against all normal frames, pooled;
- `skip_first` leaves out the first N frames of every video (models that need past frames).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from oddspot.data.avenue import Video
from oddspot.errors import OddspotError
from oddspot.files import atomic_write_bytes, write_json
from oddspot.metrics import BinaryRankingMetrics
from oddspot.video.base import VideoScores


def _ranking(scores: np.ndarray, targets: np.ndarray) -> dict:
    m = BinaryRankingMetrics()
    m.update(np.asarray(scores, dtype=np.float64), np.asarray(targets).astype(bool))
    out = m.compute()
    return {"auroc": float(out["auroc"]), "ap": float(out["ap"]), "n_pos": int(out["n_pos"]), "n_neg": int(out["n_neg"])}


def _mean(values: list[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def evaluate_video_scores(
    results: Sequence[VideoScores], videos: Sequence[Video], skip_first: int = 0, key: str = "scores"
) -> dict:
    """Frame-level metrics of `results` (matched to `videos` by id) on the frames after the first `skip_first`."""
    if skip_first < 0:
        raise OddspotError(f"skip_first {skip_first} is negative; use 0 to keep every frame")
    by_id = {v.video_id: v for v in videos}
    pooled_s, pooled_y, pooled_e = [], [], []
    per_video: dict[str, dict] = {}
    single_class: list[str] = []
    for r in results:
        video = by_id.get(r.video_id)
        if video is None or video.labels is None:
            raise OddspotError(f"video {r.video_id}: no ground truth; evaluation needs labelled test videos")
        scores = np.asarray(getattr(r, key), dtype=np.float64)
        labels = video.labels
        if scores.shape[0] != labels.shape[0]:
            raise OddspotError(f"video {r.video_id}: {scores.shape[0]} scores for {labels.shape[0]} labelled frames")
        scores, labels, events = scores[skip_first:], labels[skip_first:], video.event_types()[skip_first:]
        if scores.size == 0:
            continue
        pooled_s.append(scores)
        pooled_y.append(labels)
        pooled_e.append(events)
        entry = {"frames": int(labels.size), "anomalous_frames": int(labels.sum())}
        if 0 < labels.sum() < labels.size:
            entry.update({k: v for k, v in _ranking(scores, labels).items() if k in ("auroc", "ap")})
        else:
            single_class.append(r.video_id)
            entry.update(auroc=float("nan"), ap=float("nan"))
        per_video[r.video_id] = entry
    if not pooled_s:
        raise OddspotError("no frames left to evaluate; lower skip_first or give longer test videos")
    s, y, e = np.concatenate(pooled_s), np.concatenate(pooled_y), np.concatenate(pooled_e)
    if y.min() == y.max():
        raise OddspotError("the test frames are all of one class; AUROC needs normal and anomalous frames")
    micro = _ranking(s, y)
    per_event = {}
    for kind in sorted({str(k) for k in e if k}):
        sel = (e == kind) | (y == 0)
        per_event[kind] = {**_ranking(s[sel], (e[sel] == kind)), "frames": int((e == kind).sum())}
    return {
        "skip_first": int(skip_first),
        "frames": int(y.size),
        "anomalous_frames": int(y.sum()),
        "micro_auroc": micro["auroc"],
        "ap": micro["ap"],
        "macro_auroc": _mean([v["auroc"] for v in per_video.values()]),
        "macro_ap": _mean([v["ap"] for v in per_video.values()]),
        "macro_videos": len(per_video) - len(single_class),
        "videos_without_both_classes": single_class,
        "per_event_type": per_event,
        "per_video": per_video,
    }


def write_score_curves(out_dir: str | Path, results: Sequence[VideoScores], videos: Sequence[Video], title: str = "") -> list[Path]:
    """Write `scores.json` (per video raw and final scores, labels, event types) and `score_curves.png`."""
    import matplotlib

    matplotlib.use("Agg")
    import io

    import matplotlib.pyplot as plt

    out = Path(out_dir)
    by_id = {v.video_id: v for v in videos}
    table = {}
    for r in results:
        v = by_id[r.video_id]
        table[r.video_id] = {
            "raw": [float(x) for x in r.raw],
            "scores": [float(x) for x in r.scores],
            "labels": None if v.labels is None else v.labels.tolist(),
            "event_types": [str(x) for x in v.event_types()],
        }
    write_json(out / "scores.json", {"format_version": 1, "videos": table})
    fig, axes = plt.subplots(len(results), 1, figsize=(8, 1.6 * len(results) + 0.6), squeeze=False, sharex=False)
    for ax, r in zip(axes[:, 0], results):
        v = by_id[r.video_id]
        t = np.arange(len(r.scores))
        if v.labels is not None:
            ax.fill_between(t, 0, 1, where=v.labels.astype(bool), transform=ax.get_xaxis_transform(), color="tab:red", alpha=0.2, lw=0)
        for ev in v.events:
            ax.text(ev.start, 0.92, ev.type, transform=ax.get_xaxis_transform(), fontsize=7, va="top")
        ax.plot(t, r.scores, color="tab:blue", lw=1)
        ax.set_ylabel(r.video_id, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("frame")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    atomic_write_bytes(out / "score_curves.png", buf.getvalue())
    return [out / "scores.json", out / "score_curves.png"]
