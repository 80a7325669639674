"""Running the cells of a study, whatever its task: resumably, one result.json per cell.

A cell is finished when its result.json exists with status "ok" and the same spec (everything
that determines its numbers); finished cells are skipped, others (new, changed or failed) run. A
failing cell is recorded (status "error", the traceback in error.txt) and the rest go on.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

from oddspot import __version__
from oddspot.experiments.tables import read_result
from oddspot.files import atomic_write_text, write_json

RESULT_FILE = "result.json"
RESULT_VERSION = 1
C = TypeVar("C")


def cell_state(folder: Path, spec: dict[str, Any]) -> str:
    """"done", "failed" or "pending": what the result.json in `folder` says about a cell of this `spec`."""
    result = read_result(folder / RESULT_FILE)
    if result is None or result.get("spec") != spec:
        return "pending"
    return {"ok": "done", "error": "failed"}.get(result.get("status"), "pending")


def run_cells(cells: Sequence[C], name: Callable[[C], str], folder: Callable[[C], Path],
              spec: Callable[[C], dict[str, Any]], run: Callable[[C, Path], tuple[dict[str, Any], str]],
              echo: Callable[[str], Any]) -> dict[str, int]:
    """Run every unfinished cell: `run(cell, folder)` returns the facts for its result.json and a
    one-line summary to print. Returns the counts {"ok", "skipped", "failed"}."""
    ok = skipped = failed = 0
    for i, cell in enumerate(cells, 1):
        where, out, cell_spec = f"[{i}/{len(cells)}] {name(cell)}", folder(cell), spec(cell)
        if cell_state(out, cell_spec) == "done":
            ok += 1
            skipped += 1
            echo(f"{where}: done earlier, skipped")
            continue
        t0 = time.perf_counter()
        try:
            facts, summary = run(cell, out)
        except Exception as exc:  # a failing cell is recorded, the study goes on
            failed += 1
            message = f"{type(exc).__name__}: {exc}".splitlines()[0]
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_text(out / "error.txt", traceback.format_exc())
            write_json(out / RESULT_FILE, {"result_version": RESULT_VERSION, "status": "error", "spec": cell_spec,
                                           "error": message, "oddspot_version": __version__})
            echo(f"{where}: FAILED ({message}); details in {out / 'error.txt'}")
            continue
        (out / "error.txt").unlink(missing_ok=True)
        write_json(out / RESULT_FILE, {"result_version": RESULT_VERSION, "status": "ok", "spec": cell_spec, "error": None,
                                       "oddspot_version": __version__,
                                       "cell_seconds": round(time.perf_counter() - t0, 3), **facts})
        ok += 1
        echo(f"{where}: {summary} ({time.perf_counter() - t0:.1f} s)")
    return {"ok": ok, "skipped": skipped, "failed": failed}
