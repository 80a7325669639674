"""Progress bars for long work; silent when stderr is not a terminal or ODDSPOT_QUIET is set."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable, Iterator
from typing import TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

T = TypeVar("T")


def enabled() -> bool:
    """True when progress bars should be drawn."""
    return sys.stderr.isatty() and not os.environ.get("ODDSPOT_QUIET")


def track(items: Iterable[T], description: str, total: int | None = None) -> Iterator[T]:
    """Yield from `items`, drawing a progress bar on stderr when interactive."""
    if not enabled():
        yield from items
        return
    if total is None and hasattr(items, "__len__"):
        total = len(items)  # type: ignore[arg-type]
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(description, total=total)
        for item in items:
            yield item
            progress.advance(task)
