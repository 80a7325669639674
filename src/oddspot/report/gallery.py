"""The report's gallery: the worst misses, worst false alarms and best detections, re-scored.

evaluate keeps one score per image (scores.csv), not every anomaly map, so the gallery picks
its images from scores.csv and re-scores only those with the saved model. Each card shows the
image, its ground-truth outline, the heatmap overlay (colour scale stored with the model), the
predicted mask (map >= pixel threshold), the score against the threshold and the file name.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from oddspot.data.image_io import read_image, read_mask
from oddspot.data.mvtec import read_mvtec
from oddspot.errors import OddspotError
from oddspot.report.html import esc, fmt, img
from oddspot.visualize import heatmap_overlay

Warn = Callable[[str], None]
THUMB = 176
OUTLINE = np.array([255, 0, 255], np.uint8)


@dataclass(frozen=True)
class ScoreRow:
    """One line of evaluate's scores.csv; `anomalous` is the calibrated decision when the file has it."""

    path: str
    label: int
    defect_type: str
    score: float
    anomalous: bool | None = None


@dataclass(frozen=True)
class Group:
    """One gallery section: its key, title, explanation and the images chosen for it."""

    key: str
    title: str
    note: str
    rows: tuple[ScoreRow, ...]


def read_scores(path: Path, warn: Warn) -> list[ScoreRow]:
    """Rows of a scores.csv (path,label,defect_type,score[,normalized,anomalous]); a bad row is reported and skipped."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise OddspotError(f"{path}: cannot read ({exc.strerror}); re-run `oddspot evaluate`") from None
    reader = csv.DictReader(io.StringIO(text))
    missing = {"path", "label", "score"} - set(reader.fieldnames or ())
    if missing:
        raise OddspotError(f"{path}: missing column(s) {', '.join(sorted(missing))}; re-run `oddspot evaluate`")
    rows = []
    for line, rec in enumerate(reader, start=2):
        try:
            label, score = int(rec["label"]), float(rec["score"])
            if label not in (0, 1) or math.isnan(score):
                raise ValueError
        except (TypeError, ValueError):
            warn(f"{path}: line {line} has a bad label or score; skipped")
            continue
        flag = (rec.get("anomalous") or "").strip().lower()
        anomalous = {"1": True, "true": True, "0": False, "false": False}.get(flag)
        rows.append(ScoreRow(rec["path"], label, rec.get("defect_type") or ("good" if label == 0 else "defect"),
                             score, anomalous))
    return rows


def decided(row: ScoreRow, threshold: float) -> bool:
    """The image's decision: the stored calibrated one, else score >= threshold."""
    return row.anomalous if row.anomalous is not None else row.score >= threshold


def choose(rows: Sequence[ScoreRow], threshold: float, k: int) -> list[Group]:
    """Worst false negatives, worst false positives and best detections, at most `k` each.

    When a kind of error does not occur, the closest calls are shown instead (and said so).
    """
    defects = sorted((r for r in rows if r.label == 1), key=lambda r: (r.score, r.path))
    goods = sorted((r for r in rows if r.label == 0), key=lambda r: (-r.score, r.path))
    fn = [r for r in defects if not decided(r, threshold)]
    fp = [r for r in goods if decided(r, threshold)]
    fn_note = ("defective images scored below the threshold, lowest score first" if fn else
               "no defective image is missed at this threshold; the lowest-scoring defects are shown")
    fp_note = ("good images scored at or above the threshold, highest score first" if fp else
               "no good image raises an alarm at this threshold; the highest-scoring good images are shown")
    fn_rows = tuple((fn or defects)[:k])
    fp_rows = tuple((fp or goods)[:k])
    best = tuple([r for r in reversed(defects) if decided(r, threshold)][:k])
    fn_title = "Worst false negatives (missed defects)" if fn else "False negatives: none (lowest-scoring defects)"
    fp_title = "Worst false positives (false alarms)" if fp else "False positives: none (highest-scoring good images)"
    return [
        Group("fn", fn_title, fn_note, fn_rows),
        Group("fp", fp_title, fp_note, fp_rows),
        Group("tp", "Best detections", "detected defective images, highest score first", best),
    ]


def _size(shape: tuple[int, ...], longest: int) -> tuple[int, int]:
    h, w = shape[:2]
    scale = longest / max(h, w)
    return max(1, round(w * scale)), max(1, round(h * scale))


def _fit(array: np.ndarray, wh: tuple[int, int], resample: int) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize(wh, resample))


def _outline(mask: np.ndarray) -> np.ndarray:
    edge = mask & ~ndimage.binary_erosion(mask, border_value=0)
    return ndimage.binary_dilation(edge) if mask.shape[0] >= 96 else edge


def _jpeg(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=84, optimize=True)
    return buf.getvalue()


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def panels(image: np.ndarray, amap: np.ndarray, mask: np.ndarray | None, display_max: float | None,
           pixel_threshold: float | None, longest: int = THUMB) -> list[tuple[str, bytes, str]]:
    """(caption, bytes, mime) thumbnails: image, ground truth, heatmap overlay, predicted mask."""
    wh = _size(image.shape, longest)
    small = _fit(image, wh, Image.BILINEAR if max(image.shape[:2]) < 2 * longest else Image.LANCZOS)
    small_map = _fit(amap.astype(np.float32), wh, Image.BILINEAR)
    gt = None
    if mask is not None and mask.any():
        gt = _outline(_fit(mask.astype(np.uint8) * 255, wh, Image.BOX) > 0)
    truth = (small.astype(np.float32) * 0.6 + 40).astype(np.uint8)
    overlay = heatmap_overlay(small, small_map, display_max)
    if pixel_threshold is not None:
        predicted = _fit((amap >= pixel_threshold).astype(np.uint8) * 255, wh, Image.BOX) >= 128
    else:
        predicted = np.zeros(small.shape[:2], bool)
    pred_rgb = np.where(predicted[..., None], np.uint8(245), np.uint8(35)).repeat(3, axis=2).astype(np.uint8)
    if gt is not None:
        for panel in (truth, overlay, pred_rgb):
            panel[gt] = OUTLINE
    return [("image", _jpeg(small), "image/jpeg"),
            ("ground truth" if gt is not None else "ground truth: none", _jpeg(truth), "image/jpeg"),
            ("heatmap", _jpeg(overlay), "image/jpeg"),
            ("predicted mask", _png(pred_rgb), "image/png")]


def _mask_paths(paths: Sequence[Path]) -> dict[Path, Path | None]:
    """Ground-truth mask of each test image of an MVTec layout (<root>/<category>/test/<defect>/<name>)."""
    found: dict[Path, Path | None] = {}
    listed: dict[tuple[Path, str], dict[Path, Path | None]] = {}
    for p in paths:
        if len(p.parents) < 4 or p.parents[1].name != "test":
            found[p] = None
            continue
        key = (p.parents[3], p.parents[2].name)
        if key not in listed:
            try:
                listed[key] = {r.path: r.mask_path for r in read_mvtec(*key)["test"]}
            except OddspotError:
                listed[key] = {}
        found[p] = listed[key].get(p)
    return found


@dataclass
class Card:
    """A gallery card ready to print."""

    row: ScoreRow
    panels: list[tuple[str, bytes, str]]
    rescored: float


def render(groups: Sequence[Group], detector, pixel_threshold: float | None, warn: Warn,
           longest: int = THUMB) -> tuple[dict[str, list[Card]], list[str]]:
    """Re-score the chosen images with `detector`; cards per group key, and the files skipped (with why)."""
    unique = list(dict.fromkeys(r.path for g in groups for r in g.rows))
    images: dict[str, np.ndarray] = {}
    skipped: list[str] = []
    for path in unique:
        try:
            images[path] = read_image(path)
        except OddspotError as exc:
            warn(f"gallery: skipped {exc}")
            skipped.append(str(exc))
    masks = _mask_paths([Path(p) for p in images])
    order = list(images)
    if not order:
        return {g.key: [] for g in groups}, skipped
    pred = detector.predict([images[p] for p in order], maps=True)
    display_max = float(detector.state.get("map_display_max") or 0.0) or None
    by_path = {r.path: r for g in groups for r in g.rows}
    made: dict[str, Card] = {}
    for path, score, amap in zip(order, pred.scores, pred.maps):
        mask_path = masks.get(Path(path))
        mask = None
        if mask_path is not None:
            try:
                mask = read_mask(mask_path, shape=images[path].shape[:2])
            except OddspotError as exc:
                warn(f"gallery: mask not shown: {exc}")
        made[path] = Card(by_path[path], panels(images[path], amap, mask, display_max, pixel_threshold, longest), float(score))
    return {g.key: [made[r.path] for r in g.rows if r.path in made] for g in groups}, skipped


def card_html(card: Card, threshold: float, lo: float, hi: float) -> str:
    """One card: four panels, the decision tag, a score-vs-threshold meter and the file name."""
    row = card.row
    is_alarm = decided(row, threshold)
    kind = {(1, True): "tp", (1, False): "fn", (0, True): "fp", (0, False): "tn"}[(row.label, is_alarm)]
    tag = {"tp": "true positive", "fn": "false negative", "fp": "false positive", "tn": "true negative"}[kind]
    span = (hi - lo) or 1.0
    pos = lambda v: f"{100 * min(max((v - lo) / span, 0.0), 1.0):.1f}%"  # noqa: E731
    relation = "≥" if row.score >= threshold else "<"
    figures = "".join(f"<figure>{img(data, mime, f'{caption}: {Path(row.path).name}')}<figcaption>{esc(caption)}"
                      f"</figcaption></figure>" for caption, data, mime in card.panels)
    drift = ""
    if not math.isclose(card.rescored, row.score, rel_tol=1e-3, abs_tol=1e-4):
        drift = (f' <span class="warn" title="the saved model now gives a different score; it may have been '
                 f're-fitted since evaluation">(re-scored {fmt(card.rescored, 4)})</span>')
    return (f'<div class="card"><div class="panels">{figures}</div>'
            f'<div class="score"><span class="tag {kind}">{tag}</span> {esc(row.defect_type)} · score '
            f"<b>{fmt(row.score, 4)}</b> {relation} threshold {fmt(threshold, 4)}{drift}</div>"
            f'<div class="meter" title="score within the range of test scores"><span class="thr" style="left:{pos(threshold)}">'
            f'</span><span class="val" style="left:{pos(row.score)}"></span></div>'
            f'<div class="name" title="{esc(row.path)}">{esc(_short(row.path))}</div></div>')


def _short(path: str, parts: int = 4) -> str:
    p = Path(path)
    return str(Path(*p.parts[-parts:])) if len(p.parts) > parts else path
