"""Frame-level video evaluation through oddspot.metrics, and the evaluation record it writes.

- micro: every evaluated test frame of every video pooled into one ranking;
- macro: the metric per video, averaged over the videos that have both normal and anomalous
  frames (the others are listed, not silently dropped);
- per event type: the frames of that event type against all normal frames, pooled;
- decision: precision, recall and F1 of the model's stored threshold (fitted on training frames)
  on the pooled test frames;
- `skip_first` leaves out the first N frames of every video (models that need past frames).

`write_evaluation` writes the record `oddspot report` reads: `metrics.json` (task "video"),
`scores.csv` (video,frame,label,score,normalized,anomalous), `curves.json` (frame-level ROC and PR
curves) and `score_curves.png` (each video's scores over time, anomalous frames shaded).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from oddspot.data.avenue import Video
from oddspot.errors import OddspotError
from oddspot.files import atomic_write_bytes, write_json
from oddspot.metrics import BinaryRankingMetrics
from oddspot.records.evaluation import CURVES_FILE, SCORES_FILE, write_csv, write_metrics
from oddspot.runs.prediction import Prediction

SCORE_CURVES_FILE = "score_curves.png"
SCORES_HEADER = ("video", "frame", "label", "score", "normalized", "anomalous")
KEYS = ("normalized", "scores")


def _ranking(scores: np.ndarray, targets: np.ndarray) -> dict:
    m = BinaryRankingMetrics()
    m.update(np.asarray(scores, dtype=np.float64), np.asarray(targets).astype(bool))
    out = m.compute()
    return {"auroc": float(out["auroc"]), "ap": float(out["ap"]), "n_pos": int(out["n_pos"]), "n_neg": int(out["n_neg"])}


def _mean(values: list[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return float(np.mean(vals)) if vals else float("nan")


def _pooled(predictions: Sequence[Prediction], videos: Sequence[Video], skip_first: int, key: str):
    """Per video (id, scores, labels, event types) after `skip_first`, checked against the ground truth."""
    if skip_first < 0:
        raise OddspotError(f"skip_first {skip_first} is negative; use 0 to keep every frame")
    if key not in KEYS:
        raise OddspotError(f"score key {key!r} unknown; use one of {', '.join(KEYS)}")
    by_id = {v.video_id: v for v in videos}
    out = []
    for p in predictions:
        video = by_id.get(p.name)
        if video is None or video.labels is None:
            raise OddspotError(f"video {p.name}: no ground truth; evaluation needs labelled test videos")
        values = getattr(p, key)
        if values is None:
            raise OddspotError(f"video {p.name}: the predictions hold no {key} scores")
        scores = np.asarray(values, dtype=np.float64)
        labels = video.labels
        if scores.shape[0] != labels.shape[0]:
            raise OddspotError(f"video {p.name}: {scores.shape[0]} scores for {labels.shape[0]} labelled frames")
        out.append((p.name, scores[skip_first:], labels[skip_first:], video.event_types()[skip_first:]))
    return out


def evaluate_video_scores(
    predictions: Sequence[Prediction], videos: Sequence[Video], skip_first: int = 0, key: str = "normalized",
    threshold: float | None = None, note: str | None = None,
) -> dict[str, Any]:
    """Frame-level metrics of `predictions` (matched to `videos` by name) on the frames after the first
    `skip_first`, ranked by `key` ('normalized', the default, or the raw 'scores'). With `threshold`
    (on the `key` scale), also the decision's precision, recall and F1 ("anomalous iff score >= threshold");
    without one, `note` says why (default: the model has none)."""
    per_video: dict[str, dict] = {}
    single_class: list[str] = []
    pooled_s, pooled_y, pooled_e = [], [], []
    for vid, scores, labels, events in _pooled(predictions, videos, skip_first, key):
        if scores.size == 0:
            continue
        pooled_s.append(scores)
        pooled_y.append(labels)
        pooled_e.append(events)
        entry = {"frames": int(labels.size), "anomalous_frames": int(labels.sum())}
        if 0 < labels.sum() < labels.size:
            entry.update({k: v for k, v in _ranking(scores, labels).items() if k in ("auroc", "ap")})
        else:
            single_class.append(vid)
            entry.update(auroc=float("nan"), ap=float("nan"))
        per_video[vid] = entry
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
        "score": key,
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
        "decision": _decision(s, y, threshold, note),
    }


def _decision(scores: np.ndarray, labels: np.ndarray, threshold: float | None, note: str | None = None) -> dict[str, Any]:
    """Confusion counts, precision, recall and F1 of "anomalous iff score >= threshold" on the pooled frames."""
    if threshold is None:
        return {"threshold": None, "note": note or ("no decision threshold (a model upgraded from oddspot 0.1, or the "
                                                    "legacy per-video protocol); refit the model for decisions")}
    m = BinaryRankingMetrics()
    m.update(scores, labels.astype(bool))
    at = m.at_threshold(threshold)
    keys = ("threshold", "precision", "recall", "f1", "accuracy", "tp", "fp", "tn", "fn")
    return {k: at[k] for k in keys}


def frame_curves(predictions: Sequence[Prediction], videos: Sequence[Video], skip_first: int = 0,
                 key: str = "normalized", max_points: int = 1000) -> dict[str, Any]:
    """Frame-level ROC and PR curves of the pooled test frames, downsampled, as plain lists."""
    parts = _pooled(predictions, videos, skip_first, key)
    m = BinaryRankingMetrics()
    m.update(np.concatenate([p[1] for p in parts]), np.concatenate([p[2] for p in parts]).astype(bool))
    return {"frame": {name: {k: np.asarray(v, dtype=np.float64).tolist() for k, v in curve.items()}
                      for name, curve in m.curves(max_points).items()}}


def score_rows(predictions: Sequence[Prediction], videos: Sequence[Video]) -> list[tuple]:
    """Rows of scores.csv: video, frame, label (empty when unknown), raw score, normalized score,
    anomalous (1/0; empty without decisions)."""
    by_id = {v.video_id: v for v in videos}
    rows = []
    for p in predictions:
        labels = by_id[p.name].labels if p.name in by_id else None
        normalized = p.normalized if p.normalized is not None else [None] * len(p.scores)
        for t, (raw, norm) in enumerate(zip(p.scores, normalized)):
            rows.append((p.name, t, "" if labels is None else int(labels[t]), float(raw),
                         "" if norm is None else float(norm),
                         "" if p.decisions is None else int(bool(p.decisions[t]))))
    return rows


def write_score_curves(out_dir: str | Path, predictions: Sequence[Prediction], videos: Sequence[Video],
                       title: str = "", threshold: float | None = None) -> Path:
    """Write `score_curves.png`: per video the normalized frame scores over time, ground-truth anomalous
    frames shaded, event names at their first frame, and the decision threshold dashed when given."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out = Path(out_dir)
    by_id = {v.video_id: v for v in videos}
    fig, axes = plt.subplots(len(predictions), 1, figsize=(8, 1.6 * len(predictions) + 0.6), squeeze=False, sharex=False)
    for ax, p in zip(axes[:, 0], predictions):
        v = by_id[p.name]
        values = p.normalized if p.normalized is not None else p.scores
        t = np.arange(len(values))
        if v.labels is not None:
            ax.fill_between(t, 0, 1, where=v.labels.astype(bool), transform=ax.get_xaxis_transform(), color="tab:red", alpha=0.2, lw=0)
        for ev in v.events:
            ax.text(ev.start, 0.92, ev.type, transform=ax.get_xaxis_transform(), fontsize=7, va="top")
        ax.plot(t, values, color="tab:blue", lw=1)
        if threshold is not None:
            ax.axhline(threshold, color="tab:gray", lw=0.8, ls="--")
        ax.set_ylabel(p.name, fontsize=8)
        ax.tick_params(labelsize=7)
    axes[-1, 0].set_xlabel("frame")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    path = out / SCORE_CURVES_FILE
    atomic_write_bytes(path, buf.getvalue())
    return path


def write_evaluation(out: str | Path, predictions: Sequence[Prediction], videos: Sequence[Video],
                     skip_first: int = 0, threshold: float | None = None, extra: dict[str, Any] | None = None,
                     title: str = "", note: str | None = None) -> dict[str, Any]:
    """Evaluate and write the record: metrics.json (`extra` first, then the metrics), scores.csv,
    curves.json and score_curves.png. Returns the metrics. `note`: why there is no threshold, if none."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    metrics = {**(extra or {}), **evaluate_video_scores(predictions, videos, skip_first, threshold=threshold, note=note)}
    write_metrics(out, "video", metrics)
    write_csv(out / SCORES_FILE, SCORES_HEADER, score_rows(predictions, videos))
    write_json(out / CURVES_FILE, frame_curves(predictions, videos, skip_first))
    write_score_curves(out, predictions, videos, title=title, threshold=threshold)
    return metrics
