"""Downsampling long curves (ROC, PR, PRO) for plotting, keeping their shape."""

from __future__ import annotations

import numpy as np

from oddspot.errors import OddspotError


def downsample_curve(x: np.ndarray, y: np.ndarray, max_points: int = 1000) -> np.ndarray:
    """Indices of at most `max_points` points spread evenly along the curve's length.

    The first and last points are always kept, so the curve's ends (and its area, closely) survive.
    """
    if max_points < 2:
        raise OddspotError(f"max_points must be >= 2, got {max_points}")
    n = len(x)
    if n <= max_points:
        return np.arange(n)
    length = np.concatenate(([0.0], np.cumsum(np.hypot(np.diff(x), np.diff(y)))))
    idx = np.searchsorted(length, np.linspace(0.0, length[-1], max_points - 1), side="left")
    return np.unique(np.concatenate((idx[: max_points - 2], [0, n - 1])).clip(0, n - 1))


def thin_indices(n: int, max_points: int) -> np.ndarray:
    """Evenly spaced indices (ends included) that cut a curve of millions of points to at most
    64 * max_points before `downsample_curve`, so plotting never copies the whole curve."""
    keep = 64 * max_points
    return np.arange(n) if n <= keep else np.unique(np.linspace(0, n - 1, keep).round().astype(np.int64))
