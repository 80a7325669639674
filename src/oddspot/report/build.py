"""Assemble report.html for an evaluation record, a demo or an experiment folder (files only)."""

from __future__ import annotations

import datetime as _dt
import math
from pathlib import Path
from typing import Any

import numpy as np

from oddspot import __version__
from oddspot.errors import OddspotError
from oddspot.files import atomic_write_text
from oddspot.progress import track
from oddspot.records.evaluation import METRICS_FILE, read_metrics
from oddspot.records.gallery import PER_GROUP_MAX, THUMB_RANGE
from oddspot.report import experiment, generic, road, video
from oddspot.report.gallery import Warn
from oddspot.report.html import details, esc, page, slug, table
from oddspot.report.inspect import RESULTS_HEADERS, Evaluation, is_inspection, results_row, section

SIZE_BUDGET = 20 * 10**6
DEPTH = 3
MAX_CARDS = 120  # gallery cards in one report; a card of a photo texture is about 40 kB (55 kB in base64)
Found = tuple[Path, dict[str, Any]]


def find_records(folder: Path, warn: Warn) -> list[Found]:
    """Evaluation records (metrics.json of one evaluation) below `folder`, up to DEPTH levels down.

    A metrics.json that cannot be read, or that is not an evaluation record, is reported through
    `warn` and skipped; summaries (`"summary": true`) below the top are skipped quietly, since the
    evaluations they summarize are found on their own.
    """
    found = []
    for depth in range(1, DEPTH + 1):
        for path in sorted(folder.glob("/".join(["*"] * depth) + "/" + METRICS_FILE)):
            try:
                metrics = read_metrics(path)
            except OddspotError as exc:
                warn(f"skipped: {exc}")
                continue
            if not metrics.get("summary"):
                found.append((path.parent, metrics))
    return found


def check_options(top_k: int, thumb: int | None) -> None:
    """One-line errors for --top (0..PER_GROUP_MAX) and --thumb (THUMB_RANGE)."""
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 0 <= top_k <= PER_GROUP_MAX:
        raise OddspotError(f"--top must be an integer in 0..{PER_GROUP_MAX}, got {top_k!r}")
    low, high = THUMB_RANGE
    if thumb is not None and (isinstance(thumb, bool) or not isinstance(thumb, int) or not low <= thumb <= high):
        raise OddspotError(f"--thumb must be an integer in {low}..{high} pixels, got {thumb!r}")


def _mean(values: list[Any]) -> float | None:
    nums = [float(v) for v in values if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v))]
    return float(np.mean(nums)) if nums else None


def _unique_anchor(name: str, used: set[str]) -> str:
    base = anchor = "cat-" + slug(name)
    i = 2
    while anchor in used:
        anchor, i = f"{base}-{i}", i + 1
    used.add(anchor)
    return anchor


def build_report(folder: Path, top_k: int = 6, thumb: int | None = None, warn: Warn = print) -> str:
    """The report's HTML for `folder` (see `write_report`)."""
    folder = Path(folder)
    check_options(top_k, thumb)
    if not folder.is_dir():
        raise OddspotError(f"{folder}: no such folder; pass the --out folder of `oddspot <task> evaluate`, "
                           "a demo or an experiment")
    top = read_metrics(folder / METRICS_FILE) if (folder / METRICS_FILE).exists() else None
    single = top is not None and not top.get("summary")  # the folder is one evaluation record
    records = [(folder, top)] if single else find_records(folder, warn)
    shaped = {"inspect": is_inspection, "road": road.is_road, "video": video.is_video}
    others = [(f, m) for f, m in records if not shaped[m["task"]](m)]
    for f, m in others:
        warn(f"{f / METRICS_FILE}: a {m['task']} record without the metrics its section needs; shown as a plain table")
    evals = [Evaluation.load(f, m, warn) for f, m in records if m["task"] == "inspect" and is_inspection(m)]
    roads = [(f, m) for f, m in records if m["task"] == "road" and road.is_road(m)]
    videos = [(f, m) for f, m in records if m["task"] == "video" and video.is_video(m)]
    clashes = {e.name for e in evals if sum(o.name == e.name for o in evals) > 1}
    for e in evals:  # several evaluations of one category (experiment cells): name them by folder
        if e.name in clashes and e.folder is not None and e.folder != folder:
            e.name = e.folder.relative_to(folder).as_posix()
    names = {e.name for e in evals}
    if top is not None and top.get("summary") and isinstance(top.get("categories"), dict):
        evals += [Evaluation(str(c), None, m) for c, m in top["categories"].items() if is_inspection(m) and str(c) not in names]
    results = experiment.read_results(folder)
    figures = [] if single else experiment.plot_files(folder)  # a record's own figures belong to its section
    if not evals and not roads and not videos and not others and results is None and top is None:
        raise OddspotError(f"{folder}: no metrics.json (evaluation record) or results.csv (experiment output) found; "
                           "pass the --out folder of `oddspot <task> evaluate`, a demo or an experiment")
    used: set[str] = set()
    anchors = [_unique_anchor(e.name, used) for e in evals]
    parts: list[str] = []
    nav = []
    if results is not None:
        parts += ['<h2 id="results">Results</h2>', experiment.results_table(*results)]
        nav.append('<a href="#results">results</a>')
    elif len(evals) > 1:
        rows = [results_row(e, a) for e, a in zip(evals, anchors)]
        foot = [["mean", *[_mean([r[i] for r in rows]) for i in range(1, len(RESULTS_HEADERS) - 1)],
                 sum(r[-1] for r in rows if isinstance(r[-1], int))]]
        parts += ['<h2 id="results">Results</h2>',
                  table(RESULTS_HEADERS, rows, sortable=True, foot=foot, caption="Per category (click a column to sort)")]
        nav.append('<a href="#results">results</a>')
    if figures:
        parts += ['<h2 id="plots">Plots</h2>', experiment.plots_html(figures, warn)]
        nav.append('<a href="#plots">plots</a>')
    per_section = min(top_k, MAX_CARDS // (3 * len(evals))) if evals else top_k
    if per_section < top_k:
        warn(f"{len(evals)} evaluations: gallery cut to {per_section} images per section to stay within the size budget")
    collapse = results is not None or len(evals) > 4  # many sections: each opens on demand
    for ev, anchor in track(list(zip(evals, anchors)), "report sections"):
        body = section(ev, f"{anchor}-section" if collapse else anchor, per_section, warn, thumb)
        parts.append(details(f'<span id="{anchor}">{esc(ev.name)}</span>', f"<div>{body}</div>", cls="section")
                     if collapse else body)
        nav.append(f'<a href="#{anchor}">{esc(ev.name)}</a>')
    for road_folder, metrics in roads:
        name = f"road: {road_folder.name}" if road_folder != folder else "road"
        anchor = _unique_anchor(name, used)
        parts.append(road.section(metrics, road_folder, anchor, name, warn))
        nav.append(f'<a href="#{anchor}">{esc(name)}</a>')
    for video_folder, metrics in videos:
        name = f"video: {video_folder.name}" if video_folder != folder else "video"
        anchor = _unique_anchor(name, used)
        parts.append(video.section(metrics, video_folder, anchor, name, warn))
        nav.append(f'<a href="#{anchor}">{esc(name)}</a>')
    for other_folder, metrics in others:
        name = f"{metrics['task']}: {other_folder.name}" if other_folder != folder else metrics["task"]
        anchor = _unique_anchor(name, used)
        parts += [f'<h2 id="{anchor}">{esc(name)}</h2>', generic.metrics_table(metrics, str(other_folder / METRICS_FILE))]
        nav.append(f'<a href="#{anchor}">{esc(name)}</a>')
    if not evals and not roads and not videos and not others and results is None:
        parts += ['<h2 id="metrics">Metrics</h2>', generic.metrics_table(top, METRICS_FILE)]
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = (f'<p class="meta">Folder <code>{esc(folder)}</code> · generated {stamp} by oddspot {esc(__version__)}</p>'
            + (f"<nav>{''.join(nav)}</nav>" if len(nav) > 1 else ""))
    footer = ("<footer>Self-contained report: every image and plot is inlined; nothing is fetched from the network. "
              "Tables with ↕ sort by the clicked column.</footer>")
    return page(f"oddspot report: {folder.resolve().name}", "".join(parts) + footer, meta)


def write_report(folder: str | Path, top_k: int = 6, output: str | Path | None = None, thumb: int | None = None,
                 warn: Warn = print) -> Path:
    """Write a self-contained `report.html` for an evaluate, demo or experiment output folder.

    Args:
        folder: an evaluation record (the --out folder of `oddspot <task> evaluate`: metrics.json
            with its task, scores.csv, curves.json, gallery/), a demo (a summary metrics.json and
            evaluation records below it) or an experiment (results.csv, plots/, cells/...).
        top_k: images per gallery section (worst false negatives, worst false positives, best
            detections), 0..100, capped by what the gallery material holds; 0 leaves it out.
        output: file to write; default `folder/report.html`.
        thumb: longest side of gallery thumbnails in pixels (16..1024); it can only shrink the
            stored thumbnails. None shows them as stored.
        warn: receives one line per file that was skipped or could not be used.

    Only these files are read: no model and no dataset is opened, so the report works after both
    are gone. Returns the path written. A report over SIZE_BUDGET bytes is written, with a warning.
    """
    folder = Path(folder)
    text = build_report(folder, top_k, thumb, warn)
    out = Path(output) if output is not None else folder / "report.html"
    atomic_write_text(out, text)
    size = len(text.encode("utf-8"))
    if size > SIZE_BUDGET:
        warn(f"{out}: {size / 1e6:.1f} MB is over the {SIZE_BUDGET / 1e6:.0f} MB budget; lower --top or --thumb")
    return out
