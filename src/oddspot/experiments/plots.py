"""Plots saved beside a study's tables: metric vs a numeric ablated option (e.g. coreset ratio),
per-category bars per protocol, and image ROC overlays per protocol."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

from oddspot.experiments.config import PROTOCOLS, Cell, ExperimentConfig
from oddspot.experiments.tables import result_row
from oddspot.files import atomic_write_bytes, read_json

PROTOCOL_COLORS = {"clean": "#1b7837", "shift-none": "#c51b7d", "shift-threshold": "#e08214",
                   "shift-refit": "#2166ac", "global": "#762a83"}
# distinct dashes, so protocols with identical scores (shift-none / shift-threshold) both stay visible
PROTOCOL_STYLES = {"clean": "-", "shift-none": (0, (6, 2)), "shift-threshold": (0, (1, 2)), "shift-refit": "-.",
                   "global": (0, (3, 1, 1, 1, 1, 1))}


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())
    return path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    return plt


def _numeric_setting(setting: str) -> tuple[str, float] | None:
    """("coreset_ratio", 0.05) for a one-option numeric setting like "coreset_ratio=0.05"."""
    if "," in setting or "=" not in setting:
        return None
    key, value = setting.split("=", 1)
    try:
        return key, float(value)
    except ValueError:
        return None


def ablation_plots(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """Image and pixel AUROC vs the option of each one-dimensional numeric ablation, a line per category."""
    plt = _pyplot()
    paths = []
    for group in dict.fromkeys(r["group"] for r in rows if r["group"] != "main"):
        for protocol in dict.fromkeys(r["protocol"] for r in rows if r["group"] == group):
            sub = [r for r in rows if r["group"] == group and r["protocol"] == protocol and r["status"] == "ok"]
            points = [(r, _numeric_setting(r["setting"])) for r in sub]
            if not points or any(p is None for _, p in points):
                continue
            option = points[0][1][0]
            fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
            for ax, metric, title in ((axes[0], "image_auroc", "image AUROC"), (axes[1], "pixel_auroc", "pixel AUROC")):
                for cat in dict.fromkeys(r["category"] for r, _ in points):
                    xy = sorted((p[1], r.get(metric)) for r, p in points if r["category"] == cat and r.get(metric) is not None)
                    if xy:
                        ax.plot([x for x, _ in xy], [y for _, y in xy], marker="o", label=cat)
                ax.set_xlabel(option)
                ax.set_ylabel(title)
                ax.set_title(f"{title} vs {option} ({protocol})")
                if option.endswith("ratio"):
                    ax.xaxis.set_major_formatter(plt.FuncFormatter(lambda v, _: f"{100 * v:g}%"))
                ax.grid(alpha=0.3)
            axes[1].legend(fontsize=8)
            paths.append(_save(fig, out / f"ablation_{group}_{protocol}.png"))
    return paths


def protocol_bars(rows: list[dict[str, Any]], out: Path) -> list[Path]:
    """Grouped bars per category, one bar per protocol: image AUROC and F1 at the calibrated threshold."""
    plt = _pyplot()
    import numpy as np

    paths = []
    main = [r for r in rows if r["group"] == "main" and r["status"] == "ok"]
    for det in dict.fromkeys(r["detector"] for r in main):
        sub = [r for r in main if r["detector"] == det]
        cats = list(dict.fromkeys(r["category"] for r in sub))
        protocols = [p for p in PROTOCOLS if any(r["protocol"] == p for r in sub)]
        fig, axes = plt.subplots(1, 3, figsize=(15, 3.8))
        width = 0.8 / max(len(protocols), 1)
        for ax, metric, title in ((axes[0], "image_auroc", "image AUROC"), (axes[1], "pixel_auroc", "pixel AUROC"),
                                  (axes[2], "image_at_threshold_f1", "image F1 at calibrated threshold")):
            for j, p in enumerate(protocols):
                vals = [next((r.get(metric) for r in sub if r["category"] == c and r["protocol"] == p), None) for c in cats]
                x = np.arange(len(cats)) + (j - (len(protocols) - 1) / 2) * width
                ax.bar(x, [v if v is not None else 0.0 for v in vals], width, label=p, color=PROTOCOL_COLORS.get(p))
            ax.set_xticks(np.arange(len(cats)), cats)
            ax.set_title(title)
            ax.set_ylim(0, 1.05)
            ax.grid(axis="y", alpha=0.3)
        axes[2].legend(fontsize=8, loc="lower right")
        paths.append(_save(fig, out / f"protocols_{det}.png"))
    return paths


def roc_overlays(cells: list[Cell], rows: list[dict[str, Any]], folder_of: Callable[[Cell], Path], out: Path) -> list[Path]:
    """Image-level ROC curves of every protocol, one panel per category."""
    plt = _pyplot()
    paths = []
    ok = {r["cell_id"] for r in rows if r["status"] == "ok"}
    main = [c for c in cells if c.group == "main" and c.cell_id in ok]
    for det in dict.fromkeys(c.detector for c in main):
        sub = [c for c in main if c.detector == det]
        cats = list(dict.fromkeys(c.category for c in sub))
        fig, axes = plt.subplots(1, len(cats), figsize=(4.2 * len(cats), 4), squeeze=False)
        for ax, cat in zip(axes[0], cats):
            for c in sorted((c for c in sub if c.category == cat), key=lambda c: PROTOCOLS.index(c.protocol)):
                path = folder_of(c) / "curves.json"
                if not path.exists():
                    continue
                roc = read_json(path, "re-run the experiment").get("image", {}).get("roc")
                if not isinstance(roc, dict):
                    continue
                ax.plot(roc["fpr"], roc["tpr"], label=c.protocol, color=PROTOCOL_COLORS.get(c.protocol),
                        ls=PROTOCOL_STYLES.get(c.protocol, "-"), lw=1.8, alpha=0.85)
            ax.plot([0, 1], [0, 1], ls=":", color="grey", lw=0.8)
            ax.set_title(f"{cat}: image ROC")
            ax.set_xlabel("false positive rate")
            ax.set_ylabel("true positive rate")
            ax.legend(fontsize=8, loc="lower right")
        paths.append(_save(fig, out / f"roc_{det}.png"))
    return paths


def write_plots(cfg: ExperimentConfig, results: list[tuple[Cell, dict[str, Any] | None]],
                folder_of: Callable[[Cell], Path]) -> list[str]:
    """All plots of a study under cfg.out / "plots"; returns their paths."""
    rows = [result_row(cell, res) for cell, res in results]
    out = cfg.out / "plots"
    paths = ablation_plots(rows, out) + protocol_bars(rows, out)
    paths += roc_overlays([c for c, _ in results], rows, folder_of, out)
    return [str(p) for p in paths]
