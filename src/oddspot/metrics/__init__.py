"""Evaluation engine: exact streaming ranking metrics, AUPRO, mIoU, breakdowns and bootstrap CIs.

Public API:
- `BinaryRankingMetrics`: AUROC, AP, AUPR (trapezoid), FPR@95TPR (both conventions), F1-max,
  metrics at a threshold and plotting curves, streamed in bounded memory.
- `PerImageMetrics`: the same metrics averaged per image (images with both classes).
- `AUPRO`: MVTec per-region-overlap area, streamed over images.
- `SPRO`: MVTec LOCO AD's saturated per-region overlap, streamed over images.
- `ComponentMetrics`: SegmentMeIfYouCan's component-level sIoU, PPV and mean F1 at one threshold.
- `ConfusionMatrix`: streamed confusion matrix, per-class IoU, mIoU.
- `bootstrap_ci`: seeded percentile intervals for image-level AUROC / AP / F1-max.
- `defect_type_breakdown`, `size_breakdown`: image-level metrics per defect type / size.
- `InspectionEvaluator`: all of the above for one inspection run, JSON-ready.
- `ScoreTable`: the exact-then-binned streaming state behind them (design in its docstring).
"""

from oddspot.metrics.aupro import AUPRO
from oddspot.metrics.bootstrap import bootstrap_ci
from oddspot.metrics.components import ComponentMetrics
from oddspot.metrics.breakdowns import defect_type_breakdown, size_breakdown
from oddspot.metrics.curves import downsample_curve
from oddspot.metrics.inspection import InspectionEvaluator
from oddspot.metrics.per_image import PerImageMetrics
from oddspot.metrics.ranking import RANKING_METRICS, BinaryRankingMetrics
from oddspot.metrics.score_table import Bins, ScoreTable
from oddspot.metrics.segmentation import ConfusionMatrix
from oddspot.metrics.spro import SPRO
from oddspot.metrics.undefined import UndefinedMetricWarning

__all__ = [
    "AUPRO",
    "RANKING_METRICS",
    "SPRO",
    "BinaryRankingMetrics",
    "Bins",
    "ComponentMetrics",
    "ConfusionMatrix",
    "InspectionEvaluator",
    "PerImageMetrics",
    "ScoreTable",
    "UndefinedMetricWarning",
    "bootstrap_ci",
    "defect_type_breakdown",
    "downsample_curve",
    "size_breakdown",
]
