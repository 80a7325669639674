"""Evaluation records: what `evaluate` of every task writes and the only thing `report` reads."""

from oddspot.records.evaluation import (
    CURVES_FILE, METRICS_FILE, RECORD_VERSION, SCORES_FILE, read_metrics, write_csv, write_metrics,
)

__all__ = ["CURVES_FILE", "METRICS_FILE", "RECORD_VERSION", "SCORES_FILE", "read_metrics", "write_csv", "write_metrics"]
