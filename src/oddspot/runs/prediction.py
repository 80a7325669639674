"""What `predict` returns for every task: raw scores, normalized scores, decisions, maps and masks."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from oddspot.errors import OddspotError


@dataclass
class Prediction:
    """Predictions for a list of items (images, or the frames of one video); larger = more anomalous.

    - `scores`: one raw float per item, on the model's own scale;
    - `maps`: per-item anomaly maps (float32 H x W at the item's own resolution), or None;
    - `normalized`: scores mapped by the model's post-processor (fitted on training or
      validation data only), or None when the model has no post-processor;
    - `decisions`: 1 = anomalous, 0 = normal, from the stored threshold, or None;
    - `masks`: per-item predicted anomalous pixels (bool H x W), or None;
    - `name`: what the items belong to (a video's id), or None.
    """

    scores: np.ndarray
    maps: list[np.ndarray] | None = None
    normalized: np.ndarray | None = None
    decisions: np.ndarray | None = None
    masks: list[np.ndarray] | None = None
    name: str | None = None


def finite_scores(scores: np.ndarray, what: str = "image") -> np.ndarray:
    """`scores`, when every one is a finite number; else a one-line error.

    A fitted model makes finite scores from any input; NaN or infinity comes from tensors that were
    damaged or edited under a matching hash, and would silently turn into "normal" decisions.
    """
    bad = np.flatnonzero(~np.isfinite(np.asarray(scores, dtype=np.float64)))
    if bad.size:
        raise OddspotError(f"the model scored {what} {int(bad[0])} as {float(scores[bad[0]])} ({bad.size} non-finite "
                           "scores); its tensors are damaged, refit the model")
    return scores
