"""Per-image averaged pixel metrics (the StreetHazards official protocol) next to pooled ones.

Each image's pixels are ranked on their own (exactly) and the metrics are averaged over the
images that contain both classes; images with only one class are skipped and counted. Only a
handful of numbers per image are kept, so memory grows with images, not pixels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from oddspot.errors import OddspotError
from oddspot.metrics._inputs import flat_inputs
from oddspot.metrics._order import canonical_order, check_disjoint, item_key
from oddspot.metrics.ranking import RANKING_METRICS, ranking_metrics
from oddspot.metrics.score_table import ScoreTable
from oddspot.metrics.undefined import warn_undefined

_UNBOUNDED = 2**62


class PerImageMetrics:
    """Ranking metrics computed per image, averaged over images containing both classes.

    `update(scores, targets, valid=None)` adds ONE image (any shape); `update_batch` adds N
    images stacked on the first axis. `compute()` returns the mean of each metric in
    `RANKING_METRICS` plus `n_images`, `n_used` and `skipped` (images with a single class).

    `key` (optional, an int or str: the image's index or path) orders the per-image rows; the mean
    is taken over rows sorted by key (by default the insertion order), so `merge` of states that
    saw disjoint keyed images gives the same bits as one state that saw them all.
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget all images."""
        self._rows: list[list[float]] = []
        self._keys: list[int | str] = []
        self._n_images = 0

    def update(self, scores: Any, targets: Any, valid: Any | None = None, key: int | str | None = None) -> None:
        """Add one image's scores, 0/1 targets and optional valid mask (`key`: see the class docstring)."""
        s, t, v = flat_inputs(scores, targets, valid, "PerImageMetrics.update")
        k = item_key(key, self._n_images, "PerImageMetrics.update")
        self._n_images += 1
        sel = t if v is None else t & v
        n_pos = int(np.count_nonzero(sel))
        n_valid = s.size if v is None else int(np.count_nonzero(v))
        if n_pos == 0 or n_pos == n_valid:
            return
        table = ScoreTable(max_exact_values=_UNBOUNDED, block_size=_UNBOUNDED)
        table.add(s, t, v)
        result = ranking_metrics(table.bins(), "PerImageMetrics")
        self._rows.append([result[name] for name in RANKING_METRICS])
        self._keys.append(k)

    def update_batch(self, scores: Any, targets: Any, valid: Any | None = None, keys: Any | None = None) -> None:
        """Add N images stacked on the first axis (`keys`: one key per image, or None)."""
        for i in range(len(scores)):
            self.update(scores[i], targets[i], None if valid is None else valid[i], None if keys is None else keys[i])

    def merge(self, other: PerImageMetrics) -> PerImageMetrics:
        """Add the images `other` saw (another process's state, with keys of its own); returns self."""
        if not isinstance(other, PerImageMetrics):
            raise OddspotError(f"PerImageMetrics.merge: expected PerImageMetrics, got {type(other).__name__}")
        check_disjoint(self._keys, other._keys, "PerImageMetrics.merge")
        self._rows += [list(r) for r in other._rows]
        self._keys += other._keys
        self._n_images += other._n_images
        return self

    def compute(self) -> dict[str, Any]:
        """Mean of each metric over images with both classes, with image counts."""
        out: dict[str, Any] = {}
        if self._rows:
            means = np.mean(np.asarray(self._rows)[canonical_order(self._keys)], axis=0)
            out.update({name: float(value) for name, value in zip(RANKING_METRICS, means)})
        else:
            nan = warn_undefined("PerImageMetrics", "all per-image metrics", "no image contains both classes")
            out.update({name: nan for name in RANKING_METRICS})
        out.update(n_images=self._n_images, n_used=len(self._rows), skipped=self._n_images - len(self._rows))
        return out
