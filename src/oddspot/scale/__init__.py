"""Batch scoring and evaluation on a Ray cluster."""
