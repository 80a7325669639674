"""Frame-level video evaluation: micro vs macro AUROC on a hand-made case, skip_first, event types."""

from __future__ import annotations

import numpy as np
import pytest

from oddspot.data.avenue import Event, Video
from oddspot.errors import OddspotError
from oddspot.video.base import VideoScores
from oddspot.video.evaluate import evaluate_video_scores, write_score_curves


class _Labelled(Video):
    def __init__(self, vid, labels, events=()):
        super().__init__(vid, f"/nowhere/{vid}", labels=np.asarray(labels), events=events)
        self._length = len(labels)


def _scores(vid, s):
    s = np.asarray(s, dtype=np.float64)
    return VideoScores(vid, s, s)


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
    paths = write_score_curves(tmp_path, [_scores("A", [0.0, 1.0, 1.0, 0.0])], videos, title="t")
    assert all(p.exists() and p.stat().st_size > 0 for p in paths)
