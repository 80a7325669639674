"""How an undefined metric is reported: NaN plus a warning that says why, never a made-up number."""

from __future__ import annotations

import warnings


class UndefinedMetricWarning(UserWarning):
    """A metric is NaN because the data cannot define it (e.g. no positives, no negatives)."""


def warn_undefined(where: str, names: str, reason: str) -> float:
    """Warn that `names` are undefined in `where` because of `reason`; returns NaN."""
    warnings.warn(f"{where}: {names} undefined ({reason}); reported as NaN", UndefinedMetricWarning, stacklevel=3)
    return float("nan")
