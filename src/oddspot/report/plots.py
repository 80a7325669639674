"""Report figures (matplotlib, Agg, no pyplot state) rendered to PNG bytes for inlining.

Every function takes plain lists/arrays (as read from curves.json / scores.csv) and returns PNG
bytes, or None when there is nothing to draw.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from oddspot.report.html import fmt as _fmt

WIDTH, HEIGHT, DPI = 5.6, 3.7, 110
IMAGE_COLOUR, PIXEL_COLOUR = "#2458c6", "#d35400"
NORMAL_COLOUR, ANOMALOUS_COLOUR = "#3b8bd0", "#d64541"


def _figure() -> tuple[Figure, Any]:
    fig = Figure(figsize=(WIDTH, HEIGHT), dpi=DPI)
    ax = fig.add_subplot(1, 1, 1)
    ax.grid(True, color="#e3e6eb", linewidth=0.8)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    return fig, ax


def to_png(fig: Figure) -> bytes:
    """Render a figure to PNG bytes."""
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, metadata={"Software": None})
    return buf.getvalue()


def _label(name: str, metric: str, value: Any) -> str:
    return f"{name} ({metric} {value:.3f})" if isinstance(value, (int, float)) else name


def roc_plot(image: dict | None, pixel: dict | None, image_auroc: Any = None, pixel_auroc: Any = None,
             names: tuple[str, str] = ("image", "pixel")) -> bytes | None:
    """Image and pixel ROC curves on one axis (`names` labels the two levels)."""
    if not image and not pixel:
        return None
    fig, ax = _figure()
    ax.plot([0, 1], [0, 1], color="#b0b6c0", linestyle="--", linewidth=1)
    if image:
        ax.plot(image["fpr"], image["tpr"], color=IMAGE_COLOUR, linewidth=2, drawstyle="default",
                label=_label(names[0], "AUROC", image_auroc))
    if pixel:
        ax.plot(pixel["fpr"], pixel["tpr"], color=PIXEL_COLOUR, linewidth=2, label=_label(names[1], "AUROC", pixel_auroc))
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate", ylabel="true positive rate", title="ROC")
    ax.legend(loc="lower right", fontsize=9, frameon=False)
    return to_png(fig)


def pr_plot(image: dict | None, pixel: dict | None, image_ap: Any = None, pixel_ap: Any = None,
            image_prevalence: float | None = None, pixel_prevalence: float | None = None,
            names: tuple[str, str] = ("image", "pixel")) -> bytes | None:
    """Image and pixel precision-recall curves; dotted lines mark each chance level (prevalence)."""
    if not image and not pixel:
        return None
    fig, ax = _figure()
    if image:
        ax.step(image["recall"], image["precision"], where="post", color=IMAGE_COLOUR, linewidth=2,
                label=_label(names[0], "AP", image_ap))
        if image_prevalence is not None:
            ax.axhline(image_prevalence, color=IMAGE_COLOUR, linestyle=":", linewidth=1)
    if pixel:
        ax.step(pixel["recall"], pixel["precision"], where="post", color=PIXEL_COLOUR, linewidth=2,
                label=_label(names[1], "AP", pixel_ap))
        if pixel_prevalence is not None:
            ax.axhline(pixel_prevalence, color=PIXEL_COLOUR, linestyle=":", linewidth=1)
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="recall", ylabel="precision", title="Precision-recall")
    ax.legend(loc="lower left", fontsize=9, frameon=False)
    return to_png(fig)


def pro_plot(pro: dict | None, aupro: Any = None, fpr_limit: float = 0.3) -> bytes | None:
    """Per-region overlap against pixel FPR, up to the AUPRO integration limit."""
    if not pro:
        return None
    fig, ax = _figure()
    fpr, overlap = np.asarray(pro["fpr"], float), np.asarray(pro["pro"], float)
    keep = fpr <= fpr_limit * 1.05
    if keep.sum() < len(fpr):  # keep one point past the limit so the line reaches the edge
        keep[min(int(keep.sum()), len(fpr) - 1)] = True
    ax.plot(fpr[keep], overlap[keep], color=PIXEL_COLOUR, linewidth=2, label=_label("pixel", "AUPRO", aupro))
    ax.axvline(fpr_limit, color="#7f8794", linestyle="--", linewidth=1)
    ax.set(xlim=(0, fpr_limit * 1.05), ylim=(0, 1.02), xlabel="pixel false positive rate",
           ylabel="per-region overlap", title=f"PRO (AUPRO up to FPR {fpr_limit:g})")
    ax.legend(loc="lower right", fontsize=9, frameon=False)
    return to_png(fig)


def score_histogram(scores: Sequence[float], labels: Sequence[int], threshold: float | None,
                    threshold_name: str = "threshold") -> bytes | None:
    """Histograms of normal vs anomalous image scores on shared bins, with the threshold."""
    scores_a, labels_a = np.asarray(scores, float), np.asarray(labels, int)
    if scores_a.size == 0:
        return None
    fig, ax = _figure()
    finite = scores_a[np.isfinite(scores_a)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
    if threshold is not None and np.isfinite(threshold):
        lo, hi = min(lo, threshold), max(hi, threshold)
    if hi <= lo:
        hi = lo + 1.0
    bins = np.linspace(lo, hi, int(np.clip(np.sqrt(scores_a.size) * 2, 10, 40)) + 1)
    for value, name, colour in ((0, "normal", NORMAL_COLOUR), (1, "anomalous", ANOMALOUS_COLOUR)):
        part = scores_a[labels_a == value]
        if part.size:
            ax.hist(part, bins=bins, color=colour, alpha=0.55, label=f"{name} (n={part.size})",
                    edgecolor=colour, linewidth=0.8)
    if threshold is not None and np.isfinite(threshold):
        ax.axvline(threshold, color="#111111", linewidth=1.6, label=f"{threshold_name} {threshold:.3g}")
    ax.set(xlabel="image score", ylabel="images", title="Image scores: normal vs anomalous")
    ax.yaxis.get_major_locator().set_params(integer=True)
    ax.legend(fontsize=9, frameon=False)
    return to_png(fig)


def frame_score_plot(videos: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]], title: str = "",
                     threshold: float | None = None) -> bytes | None:
    """Frame score over time, one row per video (frames, scores, labels), anomalous frames shaded."""
    if not videos:
        return None
    fig = Figure(figsize=(WIDTH * 1.5, 1.3 * len(videos) + 0.7), dpi=DPI)
    axes = fig.subplots(len(videos), 1, squeeze=False)[:, 0]
    for ax, (name, (frames, scores, labels)) in zip(axes, videos.items()):
        ax.fill_between(frames, 0, 1, where=labels.astype(bool), transform=ax.get_xaxis_transform(),
                        color=ANOMALOUS_COLOUR, alpha=0.2, linewidth=0, step="mid")
        ax.plot(frames, scores, color=IMAGE_COLOUR, linewidth=1)
        if threshold is not None and np.isfinite(threshold):
            ax.axhline(threshold, color="#111111", linewidth=0.8, linestyle="--")
        ax.set_ylabel(name, fontsize=8)
        ax.tick_params(labelsize=7)
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
    axes[-1].set_xlabel("frame")
    if title:
        fig.suptitle(title, fontsize=9)
    return to_png(fig)


def _arr(values: Sequence[Any]) -> np.ndarray:
    """A JSON list as floats (null -> NaN)."""
    return np.array([np.nan if v is None else v for v in values], float)


CYCLE = ("#2458c6", "#d35400", "#1e8449", "#8e44ad", "#c0392b", "#16a085", "#7f8c8d", "#b7950b")


def named_curves(curves: dict[str, dict], kind: str, values: dict[str, Any] | None = None,
                 title: str = "") -> bytes | None:
    """One ROC (`kind` "roc") or precision-recall ("pr") curve per name on one axis, e.g. per anomaly score."""
    items = [(name, c.get(kind)) for name, c in curves.items() if isinstance(c, dict) and isinstance(c.get(kind), dict)]
    if not items:
        return None
    fig, ax = _figure()
    metric = "AUROC" if kind == "roc" else "AP"
    if kind == "roc":
        ax.plot([0, 1], [0, 1], color="#b0b6c0", linestyle="--", linewidth=1)
    for i, (name, c) in enumerate(items):
        label = _label(name, metric, (values or {}).get(name))
        colour = CYCLE[i % len(CYCLE)]
        if kind == "roc":
            ax.plot(_arr(c["fpr"]), _arr(c["tpr"]), color=colour, linewidth=1.8, label=label)
        else:
            ax.step(_arr(c["recall"]), _arr(c["precision"]), where="post", color=colour, linewidth=1.8, label=label)
    xlabel, ylabel = ("false positive rate", "true positive rate") if kind == "roc" else ("recall", "precision")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel=xlabel, ylabel=ylabel,
           title=title or ("ROC" if kind == "roc" else "Precision-recall"))
    ax.legend(loc="lower right" if kind == "roc" else "upper right", fontsize=8, frameon=False)
    return to_png(fig)


def reliability_plot(rel: dict[str, Any]) -> bytes | None:
    """Observed anomaly frequency against mean normalized score per bin (`metrics.reliability`), with ECE."""
    try:
        bins = [b for b in rel.get("bins", []) if isinstance(b, dict) and b.get("n")]
        mean = [float(b["mean_score"]) for b in bins]
        freq = [float(b["frequency"]) for b in bins]
        sizes = [20 + 200 * float(b["n"]) / max(1.0, float(rel.get("n_images") or 1)) for b in bins]
    except (TypeError, ValueError, KeyError):  # an edited metrics.json: no figure rather than no report
        return None
    if not bins:
        return None
    fig = Figure(figsize=(WIDTH, HEIGHT), dpi=DPI)
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], color="#b0b6c0", linestyle="--", linewidth=1, label="perfectly reliable")
    ax.plot(mean, freq, color=IMAGE_COLOUR, linewidth=1.5)
    ax.scatter(mean, freq, s=sizes, color=IMAGE_COLOUR, zorder=3, label="bins (size = images)")
    kind = str(rel.get("kind", "score")).split(" (")[0]
    ax.set(xlim=(0, 1), ylim=(-0.02, 1.02), xlabel=f"mean {kind}", ylabel="observed anomaly frequency",
           title=f"Reliability (ECE {_fmt(rel.get('ece'))})")
    ax.legend(loc="upper left", fontsize=9, frameon=False)
    return to_png(fig)
