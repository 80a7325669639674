"""Frame-level video evaluation: micro vs macro AUROC on a hand-made case, skip_first, event types,
the decision threshold's precision/recall/F1, and the evaluation record's files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from oddspot.data.avenue import Event, Video
from oddspot.errors import OddspotError
from oddspot.records.evaluation import read_metrics
from oddspot.runs.prediction import Prediction
from oddspot.video.evaluate import evaluate_video_scores, write_evaluation, write_score_curves


class _Labelled(Video):
    def __init__(self, vid, labels, events=()):
        super().__init__(vid, f"/nowhere/{vid}", labels=np.asarray(labels), events=events)
        self._length = len(labels)


def _scores(vid, s, threshold=None):
    s = np.asarray(s, dtype=np.float64)
    return Prediction(scores=s * 10, normalized=s, decisions=None if threshold is None else s >= threshold, name=vid)


def test_micro_vs_macro_auroc_hand_made():
    # each video ranks its own anomalous frame first (macro 1.0), but video B's normal frames
    # outscore video A's anomalous frame when pooled: micro = 6 of 8 pairs = 0.75
    videos = [_Labelled("A", [0, 0, 1]), _Labelled("B", [0, 0, 1])]
    results = [_scores("A", [0.1, 0.2, 0.3]), _scores("B", [0.5, 0.6, 0.7])]
    ev = evaluate_video_scores(results, videos)
    assert ev["macro_auroc"] == pytest.approx(1.0)
    assert ev["micro_auroc"] == pytest.approx(0.75)
    # AP pooled: ranking 0.7(+) 0.6 0.5 0.3(+) -> (1/2)*1 + (1/2)*(2/4) = 0.75
    assert ev["ap"] == pytest.approx(0.75)
    assert ev["frames"] == 6 and ev["anomalous_frames"] == 2
    assert ev["per_video"]["A"]["auroc"] == pytest.approx(1.0)


def test_skip_first_and_single_class_videos_are_listed():
    videos = [_Labelled("A", [1, 0, 0, 1]), _Labelled("B", [0, 0, 0, 0])]
    results = [_scores("A", [0.0, 0.1, 0.2, 0.9]), _scores("B", [0.3, 0.2, 0.1, 0.0])]
    full = evaluate_video_scores(results, videos)
    skipped = evaluate_video_scores(results, videos, skip_first=1)
    assert skipped["frames"] == 6 and full["frames"] == 8
    assert skipped["micro_auroc"] == pytest.approx(1.0)
    assert full["micro_auroc"] < 1.0
    assert skipped["videos_without_both_classes"] == ["B"] and skipped["macro_videos"] == 1
    with pytest.raises(OddspotError, match="skip_first"):
        evaluate_video_scores(results, videos, skip_first=-1)


def test_per_event_type_against_normal_frames():
    videos = [_Labelled("A", [0, 1, 1, 0, 1, 1], [Event("too_fast", 1, 2), Event("wrong_direction", 4, 5)])]
    results = [_scores("A", [0.0, 0.9, 0.8, 0.1, 0.05, 0.5])]
    ev = evaluate_video_scores(results, videos)["per_event_type"]
    assert ev["too_fast"]["auroc"] == pytest.approx(1.0) and ev["too_fast"]["frames"] == 2
    assert ev["wrong_direction"]["auroc"] == pytest.approx(0.75)  # 0.05 < 0.1 loses one pair of four


def test_mismatched_lengths_are_an_error():
    with pytest.raises(OddspotError, match="3 scores for 2"):
        evaluate_video_scores([_scores("A", [0, 1, 2])], [_Labelled("A", [0, 1])])


def test_curves_are_written(tmp_path):
    videos = [_Labelled("A", [0, 1, 1, 0], [Event("too_fast", 1, 2)])]
    path = write_score_curves(tmp_path, [_scores("A", [0.0, 1.0, 1.0, 0.0])], videos, title="t", threshold=0.5)
    assert path.name == "score_curves.png" and path.stat().st_size > 0


def test_decision_precision_recall_f1():
    videos = [_Labelled("A", [0, 0, 1, 1]), _Labelled("B", [0, 1, 0, 0])]
    results = [_scores("A", [0.1, 0.6, 0.7, 0.2], 0.5), _scores("B", [0.0, 0.9, 0.3, 0.1], 0.5)]
    d = evaluate_video_scores(results, videos, threshold=0.5)["decision"]
    # flagged: A1 (normal), A2, B1 -> tp 2, fp 1, fn 1 (A3)
    assert (d["tp"], d["fp"], d["fn"], d["tn"]) == (2, 1, 1, 4)
    assert d["precision"] == pytest.approx(2 / 3) and d["recall"] == pytest.approx(2 / 3) and d["f1"] == pytest.approx(2 / 3)
    assert evaluate_video_scores(results, videos)["decision"]["threshold"] is None
    # ranking by the raw scores instead of the normalized ones
    assert evaluate_video_scores(results, videos, key="scores")["score"] == "scores"


def test_evaluation_record_files(tmp_path):
    videos = [_Labelled("A", [0, 0, 1, 1], [Event("too_fast", 2, 3)]), _Labelled("B", [0, 1, 0, 0])]
    results = [_scores("A", [0.1, 0.6, 0.7, 0.2], 0.5), _scores("B", [0.0, 0.9, 0.3, 0.1], 0.5)]
    ev = write_evaluation(tmp_path, results, videos, threshold=0.5, extra={"kind": "motion", "protocol": "trained"})
    metrics = read_metrics(tmp_path, task="video")
    assert metrics["kind"] == "motion" and metrics["micro_auroc"] == ev["micro_auroc"] and metrics["decision"]["f1"] > 0
    assert not (tmp_path / "evaluation.json").exists() and not (tmp_path / "scores.json").exists()
    with open(tmp_path / "scores.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["video", "frame", "label", "score", "normalized", "anomalous"]
    assert len(rows) == 8 and rows[1] == {"video": "A", "frame": "1", "label": "0", "score": "6.0", "normalized": "0.6",
                                          "anomalous": "1"}
    curves = json.loads((tmp_path / "curves.json").read_text())
    assert set(curves["frame"]) == {"roc", "pr"} and curves["frame"]["roc"]["tpr"][-1] == 1.0
    assert (tmp_path / "score_curves.png").stat().st_size > 0
