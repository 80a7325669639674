"""Inspect-task verbs: fit, predict, evaluate, demo."""

from __future__ import annotations

import click


def register(group: click.Group) -> None:
    """Attach the inspect verbs to the top-level group."""
