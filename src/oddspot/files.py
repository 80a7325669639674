"""Atomic file writes (a reader never sees a half-written result) and the one checked JSON reader."""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from oddspot.errors import OddspotError

_UMASK = os.umask(0)
os.umask(_UMASK)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write bytes to `path` through a temp file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; results get the usual permissions
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write text (UTF-8) atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def write_png(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Save a uint8 (H x W) or (H x W x 3) array as PNG atomically."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    atomic_write_bytes(path, buf.getvalue())


def write_npy(path: str | os.PathLike[str], array: np.ndarray) -> None:
    """Save an array as .npy atomically (never with pickle)."""
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    atomic_write_bytes(path, buf.getvalue())


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Save JSON (indented, keys in insertion order) atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, allow_nan=True) + "\n")


def read_json(path: str | os.PathLike[str], fix: str, version_key: str | None = None,
              versions: tuple[int, ...] = (), missing: str | None = None) -> dict[str, Any]:
    """The one checked JSON reader: a JSON object from `path`, or a one-line error naming it.

    A missing file, an unreadable or non-UTF-8 file, invalid JSON, or a value that is not an
    object are errors that end with `fix` (what the user should do); `missing`, when given, is the
    whole message of a missing file. With `version_key`, the object's version must be one of `versions`.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OddspotError(f"{path}: {missing}" if missing else f"{path}: not found; {fix}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OddspotError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc}); {fix}") from None
    try:
        obj = json.loads(text)
    except ValueError as exc:
        raise OddspotError(f"{path}: not valid JSON ({exc}); {fix}") from None
    if not isinstance(obj, dict):
        raise OddspotError(f"{path}: expected a JSON object, got {type(obj).__name__}; {fix}")
    if version_key is not None:
        version = obj.get(version_key)
        if isinstance(version, bool) or version not in versions:
            raise OddspotError(f"{path}: {version_key} {version!r} unsupported (this oddspot reads "
                               f"{', '.join(map(str, versions))}); {fix}")
    return obj
