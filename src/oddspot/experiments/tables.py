"""Result tables of a study: results.csv (one row per cell, every metric) and results.md (readable)."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from oddspot.errors import OddspotError
from oddspot.experiments.config import PROTOCOLS, Cell, ExperimentConfig
from oddspot.files import atomic_write_text, read_json

FACT_COLUMNS = ("calibrated_on", "calibration_strategy", "image_threshold", "pixel_threshold", "fit_seconds",
                "predict_seconds", "memory_bank_size", "n_train")
CELL_COLUMNS = ("cell_id", "group", "protocol", "detector", "setting", "category", "status", "error")
_SKIP = {"error_bound", "exact", "n_defective_without_mask"}

Row = dict[str, Any]


def read_result(path: Path) -> dict[str, Any] | None:
    """A cell's result.json, or None when absent or unreadable (an interrupted write never is: writes are atomic)."""
    try:
        return read_json(path, "the cell runs again")
    except OddspotError:
        return None


def flatten_metrics(metrics: dict[str, Any]) -> dict[str, Any]:
    """Scalar image / pixel metrics as flat `image_auroc`-style keys; CIs as `_ci_lo` / `_ci_hi`."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, obj: Any) -> None:
        for key, value in obj.items():
            if key in _SKIP:
                continue
            name = f"{prefix}_{key}"
            if isinstance(value, dict):
                if key == "ci":
                    for metric, bounds in value.items():
                        if isinstance(bounds, list) and len(bounds) == 2:
                            flat[f"{prefix}_{metric}_ci_lo"], flat[f"{prefix}_{metric}_ci_hi"] = bounds
                        elif metric in ("level", "n"):
                            flat[f"{prefix}_ci_{metric}"] = bounds
                else:
                    walk(name, value)
            elif isinstance(value, (int, float)) and not isinstance(value, bool) or value is None:
                flat[name] = value

    for level in ("image", "pixel"):
        if metrics.get(level):
            walk(level, metrics[level])
    return flat


def result_row(cell: Cell, result: dict[str, Any] | None) -> Row:
    """One row of results.csv: the cell, its status, facts and metric values."""
    row: Row = {"cell_id": cell.cell_id, "group": cell.group, "protocol": cell.protocol, "detector": cell.detector,
                "setting": cell.setting, "category": cell.category}
    if result is None:
        row.update(status="pending", error="")
        return row
    row.update(status=result.get("status"), error=result.get("error") or "")
    row.update({k: result.get(k) for k in FACT_COLUMNS})
    row.update(result.get("values", {}))
    return row


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)
    return v


def fmt(v: Any, digits: int = 3) -> str:
    """A number for a Markdown table; "–" for missing / NaN."""
    if v is None or v == "" or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.{digits}f}"
    return str(v)


def fmt_int(v: Any) -> str:
    """A count for a Markdown table."""
    return "–" if v is None or v == "" else str(int(v))


def _ci(row: Row, metric: str) -> str:
    lo, hi = row.get(f"{metric}_ci_lo"), row.get(f"{metric}_ci_hi")
    value = fmt(row.get(metric))
    return f"{value} [{fmt(lo)}, {fmt(hi)}]" if lo is not None and hi is not None else value


def md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """A Markdown table's lines, then a blank line."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return lines + [""]


def write_results_md(out: Path, md: list[str], rows: Sequence[dict[str, Any]], footer: str) -> Path:
    """Write out/results.md: the lines `md`, the failed cells and the count of pending ones among `rows`, `footer`."""
    failed = [r for r in rows if r["status"] == "error"]
    if failed:
        md = md + ["## Failed cells", ""] + md_table(("cell", "error"),
                                                     [[r["cell_id"], str(r["error"]).replace("|", "\\|")] for r in failed])
    pending = [r for r in rows if r["status"] == "pending"]
    if pending:
        md = md + [f"{len(pending)} cells have not run yet.", ""]
    path = out / "results.md"
    atomic_write_text(path, "\n".join(md + [footer, ""]))
    return path


MAIN_HEADER = ("category", "protocol", "image AUROC [95% CI]", "image AP", "image F1-max", "F1 @thr", "precision @thr",
               "recall @thr", "image thr", "pixel AUROC", "AUPRO", "pixel F1 @thr", "fit s", "predict s", "memory bank")


def _main_cells(row: Row) -> list[str]:
    return [row["category"], row["protocol"], _ci(row, "image_auroc"), fmt(row.get("image_ap")),
            fmt(row.get("image_f1_max")), fmt(row.get("image_at_threshold_f1")),
            fmt(row.get("image_at_threshold_precision")), fmt(row.get("image_at_threshold_recall")),
            fmt(row.get("image_threshold"), 4), fmt(row.get("pixel_auroc")), fmt(row.get("pixel_aupro")),
            fmt(row.get("pixel_at_threshold_f1")), fmt(row.get("fit_seconds"), 1), fmt(row.get("predict_seconds"), 1),
            fmt_int(row.get("memory_bank_size"))]


def _num(row: Row | None, key: str) -> float | None:
    if row is None or row.get("status") != "ok":
        return None
    v = row.get(key)
    return float(v) if isinstance(v, (int, float)) and not (isinstance(v, float) and math.isnan(v)) else None


def _delta(a: float | None, b: float | None) -> str:
    return "n/a" if a is None or b is None else f"{a - b:+.3f}"


def recovery_lines(rows: list[Row]) -> list[str]:
    """Plain statements of what the shift costs and what each remedy recovers, per category."""
    by = {(r["detector"], r["category"], r["protocol"]): r for r in rows if r["group"] == "main"}
    keys = sorted({(d, c) for d, c, _ in by})
    lines: list[str] = []
    losses = recovered_thr = recovered_refit = 0
    for det, cat in keys:
        clean, none, thr, refit = (by.get((det, cat, p)) for p in ("clean", "shift-none", "shift-threshold", "shift-refit"))
        if none is None or clean is None:
            continue
        a_clean, a_none = _num(clean, "image_auroc"), _num(none, "image_auroc")
        f_clean, f_none = _num(clean, "image_at_threshold_f1"), _num(none, "image_at_threshold_f1")
        parts = [f"**{cat}** ({det}): the shift changes image AUROC by {_delta(a_none, a_clean)} "
                 f"and F1 at the clean threshold by {_delta(f_none, f_clean)}"
                 f" (pixel AUROC {_delta(_num(none, 'pixel_auroc'), _num(clean, 'pixel_auroc'))})"]
        if a_clean is not None and a_none is not None and a_none < a_clean:
            losses += 1
        f_thr = _num(thr, "image_at_threshold_f1")
        if thr is not None:
            parts.append(f"re-calibrating the threshold on shifted validation data changes F1 by {_delta(f_thr, f_none)} "
                         f"(precision {fmt(_num(thr, 'image_at_threshold_precision'))} / recall "
                         f"{fmt(_num(thr, 'image_at_threshold_recall'))} vs {fmt(_num(none, 'image_at_threshold_precision'))} / "
                         f"{fmt(_num(none, 'image_at_threshold_recall'))}); AUROC stays {fmt(_num(thr, 'image_auroc'))} "
                         "because the scores are the same")
            if f_thr is not None and f_none is not None and f_thr > f_none:
                recovered_thr += 1
        a_refit = _num(refit, "image_auroc")
        if refit is not None:
            share = ""
            if a_clean is not None and a_none is not None and a_refit is not None and a_clean - a_none > 1e-9:
                share = f" (recovering {100 * (a_refit - a_none) / (a_clean - a_none):.0f}% of the AUROC lost)"
            parts.append(f"re-fitting on shifted training data changes image AUROC by {_delta(a_refit, a_none)}{share} "
                         f"and F1 at its threshold by {_delta(_num(refit, 'image_at_threshold_f1'), f_none)} "
                         f"(pixel AUROC {_delta(_num(refit, 'pixel_auroc'), _num(none, 'pixel_auroc'))})")
            if a_refit is not None and a_none is not None and a_refit > a_none:
                recovered_refit += 1
        lines.append("- " + "; ".join(parts) + ".")
    if lines:
        n = len(lines)
        lines.append("")
        lines.append(f"In short: shift-none loses image AUROC against clean on {losses} of {n} categories; "
                     f"shift-threshold raises F1 at the threshold over shift-none on {recovered_thr} of {n} "
                     f"(it cannot change AUROC, a threshold-free metric); shift-refit raises image AUROC over "
                     f"shift-none on {recovered_refit} of {n}.")
    return lines


def global_lines(rows: list[Row]) -> list[str]:
    """Global model beside the per-category (clean) models."""
    by = {(r["detector"], r["category"], r["protocol"]): r for r in rows if r["group"] == "main"}
    pairs = sorted({(d, c) for d, c, p in by if p == "global"})
    if not pairs:
        return []
    body = []
    for det, cat in pairs:
        g, c = by.get((det, cat, "global")), by.get((det, cat, "clean"))
        body.append([cat, det, fmt(_num(c, "image_auroc")), fmt(_num(g, "image_auroc")),
                     _delta(_num(g, "image_auroc"), _num(c, "image_auroc")), fmt(_num(c, "pixel_auroc")),
                     fmt(_num(g, "pixel_auroc")), fmt(_num(c, "image_at_threshold_f1")), fmt(_num(g, "image_at_threshold_f1")),
                     fmt_int(_num(c, "memory_bank_size")), fmt_int(_num(g, "memory_bank_size"))])
    header = ("category", "detector", "per-category image AUROC", "global image AUROC", "Δ", "per-category pixel AUROC",
              "global pixel AUROC", "per-category F1 @thr", "global F1 @thr", "per-category bank", "global bank")
    return md_table(header, body)


def ablation_lines(rows: list[Row]) -> list[str]:
    """One table per ablation group and protocol: settings x categories, with the mean over categories."""
    lines: list[str] = []
    groups = [g for g in dict.fromkeys(r["group"] for r in rows) if g != "main"]
    for group in groups:
        mine = [r for r in rows if r["group"] == group]
        for protocol in dict.fromkeys(r["protocol"] for r in mine):
            sub = [r for r in mine if r["protocol"] == protocol]
            lines.append(f"### Ablation `{group}` ({protocol}, {sub[0]['detector']})")
            lines.append("")
            body = []
            for setting in dict.fromkeys(r["setting"] for r in sub):
                srows = [r for r in sub if r["setting"] == setting]
                for r in srows:
                    body.append([setting, r["category"], fmt(_num(r, "image_auroc")), fmt(_num(r, "image_ap")),
                                 fmt(_num(r, "pixel_auroc")), fmt(_num(r, "pixel_aupro")),
                                 fmt(_num(r, "image_at_threshold_f1")), fmt(_num(r, "fit_seconds"), 1),
                                 fmt(_num(r, "predict_seconds"), 1), fmt_int(_num(r, "memory_bank_size"))])
                vals = [_num(r, "image_auroc") for r in srows]
                pvals = [_num(r, "pixel_auroc") for r in srows]
                if len(srows) > 1 and all(v is not None for v in vals + pvals):
                    body.append([setting, "**mean**", f"**{sum(vals) / len(vals):.3f}**", "", f"**{sum(pvals) / len(pvals):.3f}**",
                                 "", "", "", "", ""])
            lines += md_table(("setting", "category", "image AUROC", "image AP", "pixel AUROC", "AUPRO", "F1 @thr",
                             "fit s", "predict s", "memory bank"), body)
    return lines


def write_tables(cfg: ExperimentConfig, results: list[tuple[Cell, dict[str, Any] | None]]) -> dict[str, Path]:
    """Write results.csv and results.md under cfg.out; return their paths."""
    rows = [result_row(cell, res) for cell, res in results]
    metric_keys: list[str] = []
    for r in rows:
        metric_keys += [k for k in r if k not in metric_keys and k not in CELL_COLUMNS and k not in FACT_COLUMNS]
    metric_keys.sort(key=lambda k: (not k.startswith("image_"), k))
    columns = [*CELL_COLUMNS, *FACT_COLUMNS, *metric_keys]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_value(r.get(k)) for k in columns})
    csv_path = cfg.out / "results.csv"
    atomic_write_text(csv_path, buf.getvalue())

    order = {p: i for i, p in enumerate(PROTOCOLS)}
    main = sorted((r for r in rows if r["group"] == "main" and r["status"] == "ok"),
                  key=lambda r: (r["detector"], r["category"], order[r["protocol"]]))
    shift = cfg.shift
    md = [f"# {cfg.name}", "",
          f"Config `{cfg.path.name}`; data `{cfg.data}`; split `{cfg.split}` (manifests in `splits/`, shared by every model); "
          f"seed {cfg.seed}; bootstrap {cfg.bootstrap} resamples (95% CI of image AUROC). "
          f"Shifted data: `{shift['path']}` (severity {shift['severity']}, only {shift['only'] or 'all families'}, "
          f"seed {shift['seed']}; parameters per image in its `shift.json`).", "",
          "Protocols: **clean** fit on train, threshold from validation, test on test; **shift-none** clean model and "
          "clean threshold on the shifted test split; **shift-threshold** clean model, threshold re-calibrated on the "
          "shifted validation split; **shift-refit** model re-fitted on shifted train and calibrated on shifted "
          "validation; **global** one model on the union of the categories' train splits, threshold per category "
          "from its validation split. `@thr` columns are measured at the calibrated image threshold (and pixel "
          "threshold for pixel F1); AUROC, AP, F1-max and AUPRO do not depend on any threshold.", ""]
    if main:
        md += ["## Protocols", ""]
        md += md_table(MAIN_HEADER, [_main_cells(r) for r in main])
    rec = recovery_lines([r for r in rows if r["status"] == "ok"])
    if rec:
        md += ["## What the shift costs and what recovers it", ""] + rec + [""]
    glob = global_lines([r for r in rows if r["status"] == "ok"])
    if glob:
        md += ["## One global model vs per-category models", ""] + glob
    abl = ablation_lines([r for r in rows if r["status"] == "ok"])
    if abl:
        md += ["## Ablations", ""] + abl
    md_path = write_results_md(cfg.out, md, rows, "Every row, with all image and pixel metrics and CIs: `results.csv`. Plots: `plots/`.")
    return {"results_csv": csv_path, "results_md": md_path}
