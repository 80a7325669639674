"""Result tables of a road study: results.csv (one row per cell and score) and results.md (mean +- std over seeds).

In results.md every number is `mean ± std` over the seeds of a setting: the sample standard
deviation (n - 1 in the denominator), shown only when at least two seeds finished; `n` says how
many did. A seed whose cell failed is left out of its setting's statistics and listed below.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from oddspot.experiments.road_config import RoadCell, RoadStudyConfig
from oddspot.experiments.tables import fmt, md_table, write_results_md
from oddspot.files import atomic_write_text

CSV_COLUMNS = ("cell_id", "group", "setting", "seed", "status", "error", "score", "miou", "auroc", "ap",
               "fpr95_first", "fpr95_nearest", "per_image_auroc", "f1_at_threshold", "image_auroc",
               "fit_seconds", "evaluate_seconds")
SCORE_METRICS = (("auroc", "pixel AUROC"), ("ap", "AP"), ("fpr95_first", "FPR95"), ("per_image_auroc", "per-image AUROC"))


def mean_std(values: list[float]) -> tuple[float | None, float | None, int]:
    """(mean, sample std or None with fewer than 2 values, n) of the finite values."""
    v = [float(x) for x in values if isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)]
    if not v:
        return None, None, 0
    mean = sum(v) / len(v)
    std = math.sqrt(sum((x - mean) ** 2 for x in v) / (len(v) - 1)) if len(v) > 1 else None
    return mean, std, len(v)


def fmt_mean_std(values: list[float], digits: int = 3) -> str:
    """`mean ± std` (or the mean alone for one value; "–" for none)."""
    mean, std, _ = mean_std(values)
    if mean is None:
        return "–"
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if std is not None else f"{mean:.{digits}f}"


def csv_rows(cell: RoadCell, result: dict[str, Any] | None) -> list[dict[str, Any]]:
    """results.csv rows of one cell: one per score (one row without scores when it has not finished)."""
    base = {"cell_id": cell.cell_id, "group": cell.group, "setting": cell.setting, "seed": cell.seed}
    if result is None or result.get("status") != "ok":
        status = "pending" if result is None else result.get("status")
        return [{**base, "status": status, "error": "" if result is None else result.get("error") or ""}]
    values = result.get("values", {})
    common = {**base, "status": "ok", "error": "", "miou": values.get("miou"), "image_auroc": values.get("image_auroc"),
              "fit_seconds": result.get("fit_seconds"), "evaluate_seconds": result.get("evaluate_seconds")}
    return [{**common, "score": name, **metrics} for name, metrics in values.get("scores", {}).items()]


def write_road_tables(cfg: RoadStudyConfig, results: list[tuple[RoadCell, dict[str, Any] | None]]) -> dict[str, Path]:
    """Write results.csv and results.md under cfg.out; return their paths."""
    rows = [r for cell, res in results for r in csv_rows(cell, res)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_COLUMNS, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    for r in rows:
        writer.writerow({k: "" if r.get(k) is None else (repr(r[k]) if isinstance(r.get(k), float) else r[k])
                         for k in CSV_COLUMNS})
    csv_path = cfg.out / "results.csv"
    atomic_write_text(csv_path, buf.getvalue())

    ok = [r for r in rows if r["status"] == "ok"]
    settings = list(dict.fromkeys((c.group, c.setting) for c, _ in results))
    md = [f"# {cfg.name}", "",
          f"Road study `{cfg.path.name}`; data `{cfg.data}`; seeds {', '.join(map(str, cfg.seeds))} (each seeds "
          "training and score fitting). Every number is mean ± sample std over the seeds that finished (n); "
          "mIoU on the validation split, anomaly metrics on all test pixels pooled (FPR95: the FPR at the first "
          "point with TPR >= 0.95), per-image AUROC averaged over test images with anomalies.", ""]
    seg_rows = []
    for group, setting in settings:
        mine = {r["seed"]: r for r in ok if (r["group"], r["setting"]) == (group, setting)}
        seg_rows.append([group, setting, str(len(mine)), fmt_mean_std([r["miou"] for r in mine.values()]),
                         fmt_mean_std([r["fit_seconds"] for r in mine.values()], 1)])
    md += ["## Segmentation", ""]
    md += md_table(("group", "setting", "n", "validation mIoU", "fit s"), seg_rows)
    md += ["## Anomaly scores", ""]
    for score in cfg.scores:
        body = []
        for group, setting in settings:
            mine = [r for r in ok if (r["group"], r["setting"], r["score"]) == (group, setting, score)]
            body.append([group, setting, str(len(mine))] + [fmt_mean_std([r.get(k) for r in mine]) for k, _ in SCORE_METRICS])
        md += [f"### `{score}`", ""]
        md += md_table(("group", "setting", "n", *(label for _, label in SCORE_METRICS)), body)
    best = _best_lines(ok, settings, cfg.scores)
    if best:
        md += ["## Best score per setting (mean pixel AUROC)", ""] + best
    md_path = write_results_md(cfg.out, md, rows, "Every cell and score, per seed: `results.csv`; each evaluation record: "
                                                   "`cells/<group>/<setting>/seed=<s>/eval`.")
    return {"results_csv": csv_path, "results_md": md_path}


def _best_lines(ok: list[dict[str, Any]], settings: list[tuple[str, str]], scores: tuple[str, ...]) -> list[str]:
    body = []
    for group, setting in settings:
        means = {s: mean_std([r.get("auroc") for r in ok if (r["group"], r["setting"], r["score"]) == (group, setting, s)])[0]
                 for s in scores}
        known = {s: m for s, m in means.items() if m is not None}
        if known:
            top = max(known, key=lambda s: known[s])
            body.append([group, setting, top, fmt(known[top])])
    return md_table(("group", "setting", "best score", "pixel AUROC"), body) if body else []
