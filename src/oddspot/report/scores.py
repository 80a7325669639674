"""The scores.csv and curves.json of an evaluation record, read for the report.

scores.csv holds image rows (inspect) or frame rows (video). A row that cannot be used (bad
label or score) is reported through `warn` and skipped, so one damaged line does not cost the
whole report.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from oddspot.errors import OddspotError
from oddspot.files import read_json
from oddspot.records.gallery import ScoreRow

Warn = Callable[[str], None]
_FLAGS = {"1": True, "true": True, "0": False, "false": False}


@dataclass(frozen=True)
class FrameScore:
    """One line of a video scores.csv (video,frame,label,score,normalized,anomalous); label None when unknown."""

    video: str
    frame: int
    label: int | None
    score: float
    normalized: float | None
    anomalous: bool | None


def _reader(path: Path, needed: set[str], task: str) -> csv.DictReader:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise OddspotError(f"{path}: cannot read ({exc}); re-run `oddspot {task} evaluate`") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = needed - set(reader.fieldnames or ())
    if missing:
        raise OddspotError(f"{path}: missing column(s) {', '.join(sorted(missing))}; re-run `oddspot {task} evaluate`")
    return reader


def _flag(text: str | None) -> bool | None:
    return _FLAGS.get((text or "").strip().lower())


def _label(text: str | None) -> int:
    label = int((text or "").strip())
    if label not in (0, 1):
        raise ValueError
    return label


def _score(text: str | None) -> float:
    score = float(text or "nan")
    if math.isnan(score):
        raise ValueError
    return score


def read_scores(path: Path, warn: Warn) -> list[ScoreRow]:
    """Rows of an inspect scores.csv (path,label,defect_type,score[,normalized,anomalous])."""
    rows = []
    for line, rec in enumerate(_reader(path, {"path", "label", "score"}, "inspect"), start=2):
        try:
            label, score = _label(rec["label"]), _score(rec["score"])
        except (TypeError, ValueError):
            warn(f"{path}: line {line} has a bad label or score; skipped")
            continue
        rows.append(ScoreRow(rec["path"], label, rec.get("defect_type") or ("good" if label == 0 else "defect"),
                             score, _flag(rec.get("anomalous"))))
    return rows


def read_frame_scores(path: Path, warn: Warn) -> list[FrameScore]:
    """Rows of a video scores.csv (video,frame,label,score[,normalized,anomalous])."""
    rows = []
    for line, rec in enumerate(_reader(path, {"video", "frame", "label", "score"}, "video"), start=2):
        try:
            label = _label(rec["label"]) if (rec["label"] or "").strip() else None
            score = _score(rec["score"])
            frame = int(rec["frame"])
            normalized = float(rec["normalized"]) if (rec.get("normalized") or "").strip() else None
        except (TypeError, ValueError):
            warn(f"{path}: line {line} has a bad frame, label or score; skipped")
            continue
        rows.append(FrameScore(rec["video"], frame, label, score, normalized, _flag(rec.get("anomalous"))))
    return rows


def read_curves(path: Path, task: str = "inspect") -> dict[str, Any]:
    """An evaluation's curves.json, with a one-line error naming it when it is unreadable."""
    return read_json(path, f"re-run `oddspot {task} evaluate`")
