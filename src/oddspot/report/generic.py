"""Fallback for outputs without a dedicated section: every number of a metrics.json, flattened."""

from __future__ import annotations

from typing import Any

from oddspot.report.html import table

MAX_ROWS = 400


def flatten(obj: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """(dotted key, value) for every scalar in nested dicts; short lists of scalars are kept whole."""
    out: list[tuple[str, Any]] = []
    if isinstance(obj, dict):
        for k, v in obj.items():
            out += flatten(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(obj, list):
        if len(obj) <= 8 and all(not isinstance(v, (dict, list)) for v in obj):
            out.append((prefix, ", ".join(str(v) for v in obj)))
        else:
            for i, v in enumerate(obj[:50]):
                out += flatten(v, f"{prefix}[{i}]")
    else:
        out.append((prefix, obj))
    return out


def metrics_table(metrics: Any, caption: str) -> str:
    """A sortable key / value table of a metrics dict (first MAX_ROWS entries)."""
    rows = [[k, v] for k, v in flatten(metrics)][:MAX_ROWS]
    return table(["metric", "value"], rows, sortable=True, caption=caption)
