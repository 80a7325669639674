"""Where a verb may write: `--out` is a folder apart from every input, and nothing lands outside it."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from oddspot.errors import OddspotError


def real_path(path: str | os.PathLike[str]) -> Path:
    """The absolute path with every symlink resolved (for a path that does not exist yet, of its parents)."""
    return Path(os.path.realpath(os.path.abspath(path)))


def _within(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def check_out(out: str | os.PathLike[str] | None, inputs: Iterable[str | os.PathLike[str] | None] = (),
              option: str = "--out") -> None:
    """A one-line error unless `out` is a folder (or absent) apart from every input path.

    `out` must not be an existing file, be an input, lie inside an input folder (the next run would
    read its own outputs), or hold an input (replacing `out` would delete it).
    """
    if out is None:
        return
    out_path = Path(out)
    if out_path.exists() and not out_path.is_dir():
        raise OddspotError(f"{option} {out_path}: is a file, not a folder; choose a folder")
    real_out = real_path(out_path)
    for item in inputs:
        if item is None:
            continue
        real_in = real_path(item)
        if real_out == real_in:
            raise OddspotError(f"{option} {out_path}: is the input {item}; choose another folder")
        if _within(real_out, real_in):
            raise OddspotError(f"{option} {out_path}: is inside the input folder {item} (a later run would read "
                               "these outputs as inputs); choose a folder outside it")
        if _within(real_in, real_out):
            raise OddspotError(f"{option} {out_path}: holds the input {item} (writing the outputs would replace it); "
                               "choose a folder apart from the inputs")


def inside(out: str | os.PathLike[str], relative: str | os.PathLike[str]) -> Path:
    """`out / relative`, or a one-line error when that would lie outside `out` (an absolute path, `..`)."""
    rel = Path(relative)
    if rel.is_absolute() or ".." in rel.parts:
        raise OddspotError(f"{relative}: output path would leave {out}; rename the input")
    target = Path(out) / rel
    if not _within(real_path(target), real_path(out)):
        raise OddspotError(f"{relative}: output path would leave {out} (through a link); remove the link")
    return target
