"""One evaluation record for every task.

`evaluate` writes, in its output folder:
- `metrics.json`: `{"task": ..., "record_version": 1, ...the task's metrics}`;
- `scores.csv`: one row per scored item (image, or video frame);
- `curves.json` and task figures, and the material its gallery needs (`gallery/`).

`oddspot report` reads only these files: it never loads a model or a dataset again.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from oddspot.errors import OddspotError
from oddspot.files import atomic_write_bytes, atomic_write_text, read_json, safe_text, write_json

RECORD_VERSION = 1
METRICS_FILE = "metrics.json"
SCORES_FILE = "scores.csv"
CURVES_FILE = "curves.json"
PIXEL_STATS_FILE = "pixel_stats.npz"
TASKS = ("inspect", "road", "video")


def write_metrics(out: str | Path, task: str, metrics: dict[str, Any]) -> Path:
    """Write `out/metrics.json` with the task and record version first."""
    if task not in TASKS:
        raise OddspotError(f"task {task!r} unknown; use one of {', '.join(TASKS)}")
    path = Path(out) / METRICS_FILE
    body = {k: v for k, v in metrics.items() if k not in ("task", "record_version")}
    write_json(path, {"task": task, "record_version": RECORD_VERSION, **body})
    return path


def read_metrics(path: str | Path, task: str | None = None) -> dict[str, Any]:
    """A metrics.json written by `write_metrics` (checked: JSON object, known task and version)."""
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    obj = read_json(path, "re-run `oddspot <task> evaluate`",
                    missing="not found; pass the --out folder of `oddspot <task> evaluate`")
    if obj.get("task") not in TASKS:
        raise OddspotError(f"{path}: no known task ({obj.get('task')!r}); written by another tool or an older oddspot, "
                           "re-run `oddspot <task> evaluate`")
    if obj.get("record_version") != RECORD_VERSION:
        raise OddspotError(f"{path}: record_version {obj.get('record_version')!r} unsupported (this oddspot reads "
                           f"{RECORD_VERSION}); re-run `oddspot {obj['task']} evaluate`")
    if task is not None and obj["task"] != task:
        raise OddspotError(f"{path}: a {obj['task']} evaluation, not a {task} one")
    return obj


def write_csv(path: str | Path, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """Write a CSV file atomically (header first); text cells pass through `files.safe_text`, so a
    file name that is not UTF-8 is written escaped."""
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(list(header))
    w.writerows([safe_text(v) if isinstance(v, str) else v for v in row] for row in rows)
    atomic_write_text(path, buf.getvalue())
    return Path(path)


def write_pixel_stats(out: str | Path, stats: Any, paths: Sequence[str]) -> Path:
    """Write `out/pixel_stats.npz` atomically: the per-image pixel statistics (`metrics.bootstrap.PixelStats`)
    that pixel-level bootstrap intervals and `oddspot compare` resample, one row per path of scores.csv."""
    import numpy as np

    buf = io.BytesIO()
    np.savez_compressed(buf, paths=np.asarray([safe_text(p) for p in paths], dtype=str), **stats.arrays())
    path = Path(out) / PIXEL_STATS_FILE
    atomic_write_bytes(path, buf.getvalue())
    return path


def read_pixel_stats(folder: str | Path) -> tuple[Any, list[str]] | None:
    """The `PixelStats` and image paths of `folder/pixel_stats.npz`, or None when the folder has none."""
    import numpy as np

    from oddspot.metrics.bootstrap import PixelStats

    path = Path(folder) / PIXEL_STATS_FILE
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise OddspotError(f"{path}: unreadable ({exc}); re-run `oddspot evaluate`") from None
    paths = arrays.pop("paths", None)
    stats = PixelStats.from_arrays(arrays, str(path))
    if paths is None or paths.ndim != 1 or paths.size != len(stats):
        raise OddspotError(f"{path}: paths do not match the images; re-run `oddspot evaluate`")
    return stats, [str(p) for p in paths]
