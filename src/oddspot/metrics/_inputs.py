"""Turning user inputs (numpy arrays, torch tensors, lists) into flat numpy arrays, with checks.

Scores are never transformed: float16/bfloat16 widen exactly to float32, integers to float64
(exact below 2**53); nothing is squashed, clipped or rescaled.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from oddspot.errors import OddspotError

_EXACT_INT = 2**53


def to_numpy(x: Any, where: str) -> np.ndarray:
    """A numpy view of `x` (torch tensors are detached and moved to the CPU first)."""
    if type(x).__module__.startswith("torch"):
        t = x.detach().cpu()
        if t.dtype.is_floating_point and t.element_size() < 4:
            t = t.float()
        return t.numpy()
    try:
        return np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise OddspotError(f"{where}: cannot read as an array ({exc}); pass a numpy array or torch tensor") from None


def scores_array(x: Any, where: str) -> np.ndarray:
    """Scores as a float32 or float64 array (same shape); NaN is checked by the caller."""
    a = to_numpy(x, where)
    if a.dtype in (np.float32, np.float64):
        return a
    if a.dtype == np.float16:
        return a.astype(np.float32)
    if a.dtype.kind in "iub":
        if a.dtype.kind in "iu" and a.size and int(np.abs(a.astype(np.float64)).max()) > _EXACT_INT:
            raise OddspotError(f"{where}: integer scores beyond 2**53 cannot be ranked exactly; pass floats")
        return a.astype(np.float64)
    if a.dtype.kind == "f":
        return a.astype(np.float64)
    raise OddspotError(f"{where}: scores must be real numbers, got dtype {a.dtype}; pass a float array")


def binary_array(x: Any, where: str, what: str) -> np.ndarray:
    """A bool array from bool or 0/1 input; anything else is an error naming `what`."""
    a = to_numpy(x, where)
    if a.dtype == np.bool_:
        return a
    if a.dtype.kind not in "iuf":
        raise OddspotError(f"{where}: {what} must be bool or 0/1, got dtype {a.dtype}")
    if a.size and not np.all((a == 0) | (a == 1)):
        bad = a[(a != 0) & (a != 1)].flat[0]
        raise OddspotError(f"{where}: {what} must be bool or 0/1, found {bad!r}; convert it first (e.g. mask > 0)")
    return a.astype(np.bool_)


def flat_inputs(
    scores: Any, targets: Any, valid: Any | None, where: str
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Checked, flattened (scores, targets, valid) with identical shapes and no NaN where valid."""
    s = scores_array(scores, where)
    t = binary_array(targets, where, "targets")
    if s.shape != t.shape:
        raise OddspotError(f"{where}: scores shape {s.shape} != targets shape {t.shape}; pass arrays of one shape")
    v = None
    if valid is not None:
        v = binary_array(valid, where, "valid")
        if v.shape != s.shape:
            raise OddspotError(f"{where}: valid shape {v.shape} != scores shape {s.shape}; pass arrays of one shape")
        v = v.ravel()
    s = s.ravel()
    if s.size and s.dtype.kind == "f" and np.isnan(s.min()):
        nan = np.isnan(s) if v is None else np.isnan(s) & v
        if nan.any():
            raise OddspotError(
                f"{where}: {int(nan.sum())} scores are NaN; fix the scorer or mark those pixels invalid (valid=False)"
            )
    return s, t.ravel(), v
