"""`oddspot compare A B`: paired bootstrap of two evaluations of the same test set.

Reads only evaluation records (`oddspot <task> evaluate --out`): scores.csv (key = the columns
before `label`: the image path, or video and frame; `label`, `score`) for image-level metrics and, when both folders hold one,
pixel_stats.npz for pixel AUROC / AP and AUPRO. The two records must cover the same items with
the same labels (a one-line error names the first difference). Writes comparison.json (all
rows, settings, seed) and comparison.csv (one row per metric) into `out`; see
`metrics.paired` for the statistics.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

import numpy as np

from oddspot.errors import OddspotError
from oddspot.files import staged_output, write_json
from oddspot.metrics.paired import paired_image_bootstrap, paired_pixel_bootstrap
from oddspot.records.evaluation import SCORES_FILE, read_metrics, read_pixel_stats, write_csv

COMPARISON_JSON = "comparison.json"
COMPARISON_CSV = "comparison.csv"
CSV_HEADER = ("level", "metric", "a", "b", "difference", "ci_low", "ci_high", "p_value", "n_used", "better", "verdict")


def read_scores(folder: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Keys (the columns before `label`, joined by "/"), 0/1 labels and scores of `folder/scores.csv`, checked."""
    path = folder / SCORES_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OddspotError(f"{path}: not found; pass the --out folder of `oddspot <task> evaluate`") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OddspotError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc}); re-run evaluate") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header or "label" not in header or "score" not in header:
        raise OddspotError(f"{path}: needs a header with label and score columns; re-run evaluate")
    li, si = header.index("label"), header.index("score")
    if li == 0:
        raise OddspotError(f"{path}: no key column before label; re-run evaluate")
    keys, labels, scores = [], [], []
    for n, row in enumerate(reader, start=2):
        try:
            label, score = int(row[li]), float(row[si])
        except (IndexError, ValueError):
            raise OddspotError(f"{path}, line {n}: unreadable label or score; re-run evaluate") from None
        if label not in (0, 1) or not math.isfinite(score):
            raise OddspotError(f"{path}, line {n}: label must be 0/1 and score finite; re-run evaluate")
        keys.append("/".join(row[:li]))
        labels.append(label)
        scores.append(score)
    if not keys:
        raise OddspotError(f"{path}: no scored items; re-run evaluate")
    if len(set(keys)) != len(keys):
        raise OddspotError(f"{path}: the key ({', '.join(header[:li])}) repeats a value; re-run evaluate")
    return keys, np.asarray(labels, np.int8), np.asarray(scores, np.float64)


def _align(a: Path, b: Path, keys_a: list[str], keys_b: list[str], labels_a: np.ndarray,
           labels_b: np.ndarray) -> np.ndarray:
    """Indices of B's items in A's order; a one-line error at the first item they disagree on."""
    where_b = {k: i for i, k in enumerate(keys_b)}
    for k in keys_a:
        if k not in where_b:
            raise OddspotError(f"{b / SCORES_FILE}: has no row for {k!r} (in {a / SCORES_FILE}); "
                               "compare evaluations of the same test set")
    if len(keys_b) != len(keys_a):
        extra = next(k for k in keys_b if k not in set(keys_a))
        raise OddspotError(f"{a / SCORES_FILE}: has no row for {extra!r} (in {b / SCORES_FILE}); "
                           "compare evaluations of the same test set")
    order = np.array([where_b[k] for k in keys_a])
    bad = np.flatnonzero(labels_b[order] != labels_a)
    if bad.size:
        k = keys_a[int(bad[0])]
        raise OddspotError(f"{b / SCORES_FILE}: {k!r} has label {int(labels_b[order][bad[0]])} but "
                           f"{int(labels_a[bad[0]])} in {a / SCORES_FILE}; compare evaluations of the same test set")
    return order


@staged_output("out", inputs=("a", "b"))
def compare(a: str | Path, b: str | Path, out: str | Path | None = None, n: int = 1000, level: float = 0.95,
            seed: int = 0, pixel: bool = True) -> dict[str, Any]:
    """Paired bootstrap comparison of evaluation folders `a` and `b`; writes `out` when given and returns the result."""
    a, b = Path(a), Path(b)
    metrics_a, metrics_b = read_metrics(a), read_metrics(b)
    if metrics_a["task"] != metrics_b["task"]:
        raise OddspotError(f"{b}: a {metrics_b['task']} evaluation, but {a} is a {metrics_a['task']} one; "
                           "compare evaluations of one task")
    keys_a, labels_a, scores_a = read_scores(a)
    keys_b, labels_b, scores_b = read_scores(b)
    order = _align(a, b, keys_a, keys_b, labels_a, labels_b)
    rows = paired_image_bootstrap(scores_a, scores_b[order], labels_a, n, level, seed)
    notes: list[str] = []
    if metrics_a["task"] == "video":
        notes.append("video frames are resampled one by one; neighbouring frames are correlated, so the intervals "
                     "are narrower than they should be")
    bounds = None
    if pixel:
        got_a, got_b = read_pixel_stats(a), read_pixel_stats(b)
        if got_a is None or got_b is None:
            missing = a if got_a is None else b
            notes.append(f"no pixel-level comparison: {missing} has no pixel_stats.npz (evaluate a model with maps "
                         "with this oddspot)")
        else:
            (stats_a, paths_a), (stats_b, paths_b) = got_a, got_b
            if paths_a != keys_a or sorted(paths_b) != sorted(keys_b):
                raise OddspotError(f"{a}: pixel_stats.npz does not list the images of scores.csv; re-run evaluate")
            index_b = {p: i for i, p in enumerate(paths_b)}
            stats_b = stats_b.reordered([index_b[k] for k in keys_a])
            fpr_limit = float((metrics_a.get("pixel") or {}).get("aupro_fpr_limit", 0.3))
            pixel_rows, bounds = paired_pixel_bootstrap(stats_a, stats_b, n, level, seed, fpr_limit)
            rows += pixel_rows
    result = {"a": str(a), "b": str(b), "task": metrics_a["task"], "n_items": len(keys_a),
              "n_positive": int(labels_a.sum()), "bootstrap": {"n": int(n), "level": float(level), "seed": int(seed),
                                                               "method": "paired percentile, items resampled"},
              "p_value": "min(1, 2 * min(1 + #{d <= 0}, 1 + #{d >= 0}) / (1 + resamples)), d = A - B per resample",
              "pixel_error_bound": bounds, "rows": rows, "notes": notes}
    if out is not None:
        out = Path(out)
        write_json(out / COMPARISON_JSON, result)
        write_csv(out / COMPARISON_CSV, CSV_HEADER,
                  [(r["level"], r["metric"], r["a"], r["b"], r["difference"], r["ci"][0], r["ci"][1], r["p_value"],
                    r["n_used"], r["better"] or "", r["verdict"]) for r in rows])
    return result
