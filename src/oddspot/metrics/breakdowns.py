"""Image-level metrics broken down per defect type and per defect size (each group vs all good images)."""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from oddspot.errors import OddspotError
from oddspot.metrics.ranking import ranking_metrics
from oddspot.metrics.score_table import ScoreTable
from oddspot.metrics.undefined import UndefinedMetricWarning

SIZE_BUCKETS = ("small", "medium", "large")


def image_ranking(scores: np.ndarray, labels: np.ndarray, where: str = "image metrics") -> dict[str, Any]:
    """Exact ranking metrics of a small score array (one score per image)."""
    table = ScoreTable(max_exact_values=2**62, block_size=2**62)
    if scores.size:
        table.add(scores.astype(np.float64), labels.astype(bool))
    return ranking_metrics(table.bins(), where)


def _group(scores: np.ndarray, labels: np.ndarray, members: np.ndarray) -> dict[str, Any]:
    good = labels == 0
    sel = good | members
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        r = image_ranking(scores[sel], labels[sel])
    return {"auroc": r["auroc"], "ap": r["ap"], "n": int(members.sum()), "n_good": int(good.sum())}


def _warn_if_nan(result: dict[str, dict[str, Any]], where: str) -> None:
    empty = [name for name, r in result.items() if isinstance(r, dict) and np.isnan(r["auroc"])]
    if empty:
        warnings.warn(
            f"{where}: auroc/ap undefined for {empty} (no good images or no defective images); reported as NaN",
            UndefinedMetricWarning,
            stacklevel=3,
        )


def defect_type_breakdown(scores: np.ndarray, labels: np.ndarray, defect_types: Sequence[str]) -> dict[str, Any]:
    """{defect type: {auroc, ap, n, n_good}}: each defect type's images against all good images."""
    types = np.asarray(defect_types, dtype=object)
    names = sorted({str(t) for t in types[labels == 1]})
    result = {name: _group(scores, labels, (labels == 1) & (types == name)) for name in names}
    _warn_if_nan(result, "defect_type_breakdown")
    return result


def size_breakdown(
    scores: np.ndarray, labels: np.ndarray, areas: np.ndarray, edges: Sequence[float] | None = None
) -> dict[str, Any]:
    """{small|medium|large: {auroc, ap, n, n_good}, edges, n_unsized} by defect area.

    `areas` is each image's defect area as a fraction of its pixels (NaN when a defective image
    has no mask; such images are counted in `n_unsized`). Buckets are [0, e1), [e1, e2),
    [e2, 1]; default edges are the terciles of the defective images' areas.
    """
    defective = labels == 1
    sized = defective & ~np.isnan(areas)
    if edges is None:
        edges = [float(e) for e in np.quantile(areas[sized], [1 / 3, 2 / 3])] if sized.any() else [np.nan, np.nan]
    else:
        edges = [float(e) for e in edges]
        if len(edges) != 2 or not 0 <= edges[0] <= edges[1] <= 1:
            raise OddspotError(f"size_edges must be two increasing area fractions in [0, 1], got {edges}")
    e1, e2 = edges
    a = np.where(sized, areas, -1.0)
    buckets = {
        "small": sized & (a < e1),
        "medium": sized & (a >= e1) & (a < e2),
        "large": sized & (a >= e2),
    }
    result: dict[str, Any] = {name: _group(scores, labels, members) for name, members in buckets.items()}
    _warn_if_nan(result, "size_breakdown")
    result["edges"] = edges
    result["n_unsized"] = int((defective & ~sized).sum())
    return result
