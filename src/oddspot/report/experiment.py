"""Experiment outputs in a report: the results table (sortable) and the experiment's own plots.

An experiment folder holds `results.csv` (one row per configuration / category, one column per
setting or metric) or `results.json` (a list of such rows), and its figures as PNG / SVG / JPEG
files next to it or under `plots/`.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from oddspot import files
from oddspot.errors import OddspotError
from oddspot.report.gallery import Warn
from oddspot.report.html import esc, img, table

PLOT_TYPES = {".png": "image/png", ".svg": "image/svg+xml", ".jpg": "image/jpeg", ".jpeg": "image/jpeg"}
MAX_PLOT_BYTES = 4 * 2**20


def read_json(path: Path) -> Any:
    """A JSON file, with a one-line error naming it when it is unreadable."""
    return files.read_json(path, "re-run the command that wrote it")


def _value(text: str) -> Any:
    try:
        v = float(text)
    except (TypeError, ValueError):
        return text
    return int(v) if v.is_integer() and "." not in text and "e" not in text.lower() else v


def read_results(folder: Path) -> tuple[list[str], list[list[Any]]] | None:
    """Headers and rows of results.csv / results.json, or None when the folder has neither."""
    path = folder / "results.csv"
    if path.exists():
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise OddspotError(f"{path}: cannot read ({exc}); re-run the experiment") from None
        reader = csv.reader(io.StringIO(text))
        rows = [r for r in reader if r]
        if not rows:
            raise OddspotError(f"{path}: empty; re-run the experiment")
        return rows[0], [[_value(c) for c in r] for r in rows[1:]]
    path = folder / "results.json"
    if path.exists():
        data = read_json(path)
        if isinstance(data, dict) and isinstance(data.get("rows"), list):
            data = data["rows"]
        if not isinstance(data, list) or not all(isinstance(r, dict) for r in data):
            raise OddspotError(f"{path}: expected a list of objects (one per row); re-run the experiment")
        headers = list(dict.fromkeys(k for r in data for k in r))
        return headers, [[r.get(h) for h in headers] for r in data]
    return None


def results_table(headers: list[str], rows: list[list[Any]]) -> str:
    """The sortable results table."""
    clean = [[None if isinstance(v, float) and math.isnan(v) else v for v in r] for r in rows]
    body = table(headers, clean, sortable=True, caption="Results (click a column to sort)", cls="wide")
    return f'<div class="scroll">{body}</div>'


def plot_files(folder: Path) -> list[Path]:
    """The experiment's figures: image files in the folder itself and in plots/."""
    found = []
    for where in (folder, folder / "plots"):
        if where.is_dir():
            found += sorted(p for p in where.iterdir() if p.is_file() and p.suffix.lower() in PLOT_TYPES)
    return found


def plots_html(files: list[Path], warn: Warn) -> str:
    """Inline the figures (each under MAX_PLOT_BYTES; larger ones are listed, not embedded)."""
    parts, skipped = [], []
    for p in files:
        try:
            data = p.read_bytes()
        except OSError as exc:
            warn(f"{p}: cannot read ({exc.strerror}); left out of the report")
            skipped.append(f"{p.name} (unreadable)")
            continue
        if len(data) > MAX_PLOT_BYTES:
            warn(f"{p}: {len(data) / 2**20:.1f} MiB is over the report's per-figure budget; left out")
            skipped.append(f"{p.name} (too large)")
            continue
        parts.append(f"<figure>{img(data, PLOT_TYPES[p.suffix.lower()], p.stem)}<figcaption>{esc(p.name)}</figcaption></figure>")
    note = f'<p class="note">Not embedded: {esc(", ".join(skipped))}</p>' if skipped else ""
    return f'<div class="plots">{"".join(parts)}</div>{note}' if parts or note else ""
