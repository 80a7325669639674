"""The report's gallery: the cards that `evaluate` stored under gallery/, inlined.

Nothing is re-scored: the worst misses, worst false alarms and best detections, their thumbnails,
thresholds and colour scale were chosen and drawn by `evaluate` (`oddspot.records.gallery`).
The report only picks how many cards per section to show (`--top`, capped by what was stored)
and may shrink the thumbnails (`--thumb`, never larger than stored).
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path

from PIL import Image

from oddspot.errors import OddspotError
from oddspot.records.gallery import GALLERY_DIR, GALLERY_FILE, Card, Gallery, read_gallery
from oddspot.report.html import details, esc, fmt, img

Warn = Callable[[str], None]
CAPTIONS = {"image": "image", "truth": "ground truth", "heatmap": "heatmap", "mask": "predicted mask"}
TAGS = {"tp": "true positive", "fn": "false negative", "fp": "false positive", "tn": "true negative"}


def thumbnail(path: Path, longest: int | None, lossless: bool) -> tuple[bytes, str]:
    """A stored thumbnail as (bytes, mime), shrunk to `longest` when smaller than stored.

    Photo-like panels are inlined as JPEG (a fraction of the PNG size); masks stay PNG.
    """
    try:
        with Image.open(path) as opened:
            image = opened.convert("RGB")
    except (OSError, ValueError) as exc:
        raise OddspotError(f"{path}: cannot read ({exc}); re-run `oddspot <task> evaluate`") from None
    if longest is not None and max(image.size) > longest:
        scale = longest / max(image.size)
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))),
                             Image.NEAREST if lossless else Image.LANCZOS)
    buf = io.BytesIO()
    if lossless:
        image.save(buf, format="PNG", optimize=True)
        return buf.getvalue(), "image/png"
    image.save(buf, format="JPEG", quality=84, optimize=True)
    return buf.getvalue(), "image/jpeg"


def _short(path: str, parts: int = 4) -> str:
    p = Path(path)
    return str(Path(*p.parts[-parts:])) if len(p.parts) > parts else path


def card_html(card: Card, threshold: float | None, lo: float, hi: float, longest: int | None) -> str:
    """One card: its panels, the decision tag, a score-vs-threshold meter and the file name."""
    kind = {(1, True): "tp", (1, False): "fn", (0, True): "fp", (0, False): "tn"}[(card.label, card.anomalous)]
    span = (hi - lo) or 1.0
    pos = lambda v: f"{100 * min(max((v - lo) / span, 0.0), 1.0):.1f}%"  # noqa: E731
    figures = []
    for panel, file in card.files.items():
        data, mime = thumbnail(file, longest, lossless=panel == "mask")
        caption = CAPTIONS[panel] if panel != "truth" or card.ground_truth else "ground truth: none"
        figures.append(f"<figure>{img(data, mime, f'{caption}: {Path(card.path).name}')}"
                       f"<figcaption>{esc(caption)}</figcaption></figure>")
    if threshold is None:
        against, meter = "", ""
    else:
        relation = "≥" if card.score >= threshold else "<"
        against = f" {relation} threshold {fmt(threshold, 4)}"
        meter = (f'<div class="meter" title="score within the range of test scores"><span class="thr" '
                 f'style="left:{pos(threshold)}"></span><span class="val" style="left:{pos(card.score)}"></span></div>')
    return (f'<div class="card"><div class="panels">{"".join(figures)}</div>'
            f'<div class="score"><span class="tag {kind}">{TAGS[kind]}</span> {esc(card.defect_type)} · score '
            f"<b>{fmt(card.score, 4)}</b>{against}</div>{meter}"
            f'<div class="name" title="{esc(card.path)}">{esc(_short(card.path))}</div></div>')


def stored_gallery(folder: Path, name: str, warn: Warn) -> Gallery | str:
    """The evaluation's stored gallery, or the note to show instead when it is missing or unusable."""
    where = folder / GALLERY_DIR / GALLERY_FILE
    if not where.is_file():
        warn(f"gallery of {name}: {where} not found; gallery left out")
        return (f'<p class="note">No gallery: <code>{esc(where)}</code> was not found. Re-run '
                "<code>oddspot inspect evaluate</code> to store the gallery material.</p>")
    try:
        return read_gallery(folder)
    except OddspotError as exc:
        warn(f"gallery of {name}: {exc}; gallery left out")
        return f'<p class="note">No gallery: {esc(exc)}</p>'


def gallery_html(folder: Path | None, name: str, scores: Sequence[float], top_k: int, thumb: int | None,
                 warn: Warn) -> str:
    """The collapsed gallery sections of one evaluation folder; a note instead when there is none."""
    if top_k == 0:
        return '<p class="legend">Gallery turned off (--top 0).</p>'
    if folder is None:
        return '<p class="note">No gallery: this evaluation has no output folder.</p>'
    stored = stored_gallery(folder, name, warn)
    if isinstance(stored, str):
        return stored
    shown = min(top_k, stored.per_group)
    if top_k > stored.per_group:
        warn(f"gallery of {name}: holds at most {stored.per_group} images per section; showing {shown} "
             f"(re-run evaluate with a larger gallery for more)")
    longest = None
    if thumb is not None:
        if thumb > stored.thumb:
            warn(f"gallery of {name}: thumbnails are stored at {stored.thumb} px; --thumb {thumb} cannot enlarge them")
        else:
            longest = thumb
    th = stored.image_threshold
    values = list(scores) + [c.score for g in stored.groups for c in g.cards] + ([th] if th is not None else [])
    lo, hi = (min(values), max(values)) if values else (0.0, 1.0)
    pixel = (f"predicted mask = pixels whose anomaly score ≥ the pixel threshold {fmt(stored.pixel_threshold, 4)} · "
             if stored.pixel_threshold is not None else "no pixel threshold, so no predicted mask · ")
    scale = (f"heatmap colours run from 0 to the model's stored display maximum {fmt(stored.display_max, 4)} (jet) · "
             if stored.display_max else "heatmap colours run from 0 to each map's maximum (jet) · ")
    parts = [f'<p class="legend"><span class="swatch"></span>ground-truth outline · {scale}{pixel}the bar shows the '
             "score (dot) against the image threshold (line) within the range of test scores</p>"]
    for g in stored.groups:
        cards = g.cards[:shown]
        body = "".join(card_html(c, th, lo, hi, longest) for c in cards)
        body = f'<p class="legend">{esc(g.note)}</p><div class="cards">{body}</div>' if body else '<p class="legend">none</p>'
        parts.append(details(f"{esc(g.title)} ({len(cards)})", f"<div>{body}</div>"))
    if stored.skipped:
        parts.append('<p class="note">Skipped at evaluation (could not be read): '
                     + "; ".join(esc(s) for s in stored.skipped) + "</p>")
    return "".join(parts)
