"""Assemble report.html for an evaluate, demo or experiment output folder."""

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
from oddspot.report import experiment, generic, road, video
from oddspot.report.gallery import THUMB, Warn
from oddspot.report.html import details, esc, page, slug, table
from oddspot.report.inspect import RESULTS_HEADERS, Evaluation, is_inspection, read_json, results_row, section

SIZE_BUDGET = 20 * 10**6
DEPTH = 3
MAX_CARDS = 120  # gallery cards in one report; a card of a photo texture is about 40 kB (55 kB in base64)


def find_videos(folder: Path, warn: Warn) -> list[tuple[Path, dict[str, Any]]]:
    """Video evaluation folders (evaluation.json) at or below `folder`, up to DEPTH levels down."""
    found = []
    for depth in range(0, DEPTH + 1):
        for path in sorted(folder.glob("/".join(["*"] * depth + [video.EVALUATION_FILE]))):
            try:
                evaluation = read_json(path)
            except OddspotError as exc:
                warn(f"skipped: {exc}")
                continue
            if video.is_video(evaluation):
                found.append((path.parent, evaluation))
    return found


def find_outputs(folder: Path, warn: Warn) -> tuple[list[Path], list[tuple[Path, dict[str, Any]]]]:
    """Inspect and road evaluation folders below `folder`, up to DEPTH levels down.

    A metrics.json that cannot be read is reported through `warn` and skipped.
    """
    inspect, roads = [], []
    for depth in range(1, DEPTH + 1):
        for path in sorted(folder.glob("/".join(["*"] * depth) + "/metrics.json")):
            try:
                metrics = read_json(path)
            except OddspotError as exc:
                warn(f"skipped: {exc}")
                continue
            if is_inspection(metrics):
                inspect.append(path.parent)
            elif road.is_road(metrics):
                roads.append((path.parent, metrics))
    return inspect, roads


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


def build_report(folder: Path, top_k: int = 6, thumb: int = THUMB, warn: Warn = print) -> str:
    """The report's HTML for `folder` (see `write_report`)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise OddspotError(f"{folder}: no such folder; pass the --out folder of `oddspot evaluate` or an experiment")
    if top_k < 0:
        raise OddspotError(f"--top must be >= 0, got {top_k}")
    if thumb < 16:
        raise OddspotError(f"--thumb must be >= 16 pixels, got {thumb}")
    top = read_json(folder / "metrics.json") if (folder / "metrics.json").exists() else None
    if is_inspection(top):
        inspect_dirs, roads = [folder], []
    elif road.is_road(top):
        inspect_dirs, roads = [], [(folder, top)]
    else:
        inspect_dirs, roads = find_outputs(folder, warn)
    evals = [Evaluation.load(f, warn) for f in inspect_dirs]
    clashes = {e.name for e in evals if sum(o.name == e.name for o in evals) > 1}
    for e in evals:  # several evaluations of one category (experiment cells): name them by folder
        if e.name in clashes and e.folder is not None and e.folder != folder:
            e.name = e.folder.relative_to(folder).as_posix()
    names = {e.name for e in evals}
    if isinstance(top, dict) and isinstance(top.get("categories"), dict):
        evals += [Evaluation(str(c), None, m) for c, m in top["categories"].items() if is_inspection(m) and str(c) not in names]
    results = experiment.read_results(folder)
    figures = experiment.plot_files(folder)
    videos = find_videos(folder, warn)
    if not evals and not roads and not videos and results is None and not isinstance(top, dict):
        raise OddspotError(f"{folder}: no metrics.json (evaluate output) or results.csv (experiment output) found; "
                           "pass the --out folder of `oddspot evaluate` or an experiment")
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
    for video_folder, evaluation in videos:
        name = f"video: {video_folder.name}" if video_folder != folder else "video"
        anchor = _unique_anchor(name, used)
        parts.append(video.section(evaluation, video_folder, anchor, name, warn))
        nav.append(f'<a href="#{anchor}">{esc(name)}</a>')
    if not evals and not roads and not videos and results is None:
        parts += ['<h2 id="metrics">Metrics</h2>', generic.metrics_table(top, "metrics.json")]
    stamp = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    meta = (f'<p class="meta">Folder <code>{esc(folder)}</code> · generated {stamp} by oddspot {esc(__version__)}</p>'
            + (f"<nav>{''.join(nav)}</nav>" if len(nav) > 1 else ""))
    footer = ("<footer>Self-contained report: every image and plot is inlined; nothing is fetched from the network. "
              "Tables with ↕ sort by the clicked column.</footer>")
    return page(f"oddspot report: {folder.resolve().name}", "".join(parts) + footer, meta)


def write_report(folder: str | Path, top_k: int = 6, output: str | Path | None = None, thumb: int = THUMB,
                 warn: Warn = print) -> Path:
    """Write a self-contained `report.html` for an evaluate, demo or experiment output folder.

    Args:
        folder: output of `oddspot evaluate` (metrics.json, curves.json, scores.csv), of a demo
            (evaluate outputs below it), of an experiment (results.csv, plots/, cells/...), or of
            the road evaluation (metrics.json with segmentation and anomaly scores).
        top_k: images per gallery section (worst false negatives, worst false positives, best
            detections); 0 leaves the gallery out and does not load the model.
        output: file to write; default `folder/report.html`.
        thumb: longest side of gallery thumbnails in pixels.
        warn: receives one line per file that was skipped or could not be used.

    Returns the path written. A report over SIZE_BUDGET bytes is written, with a warning.
    """
    folder = Path(folder)
    text = build_report(folder, top_k, thumb, warn)
    out = Path(output) if output is not None else folder / "report.html"
    atomic_write_text(out, text)
    size = len(text.encode("utf-8"))
    if size > SIZE_BUDGET:
        warn(f"{out}: {size / 1e6:.1f} MB is over the {SIZE_BUDGET / 1e6:.0f} MB budget; lower --top or --thumb")
    return out
