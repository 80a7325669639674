"""Atomic writes of files and of whole folders (a reader never sees a half-written result), and
the one checked JSON reader."""

from __future__ import annotations

import functools
import io
import json
import os
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from inspect import signature
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from PIL import Image

from oddspot.errors import OddspotError, safe_text
from oddspot.paths import check_out, real_path

try:
    import fcntl
except ImportError:  # Windows: no flock; leftovers are then always settled
    fcntl = None  # type: ignore[assignment]

F = TypeVar("F", bound=Callable[..., Any])
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


def _safe_strings(obj: Any) -> Any:
    """`obj` with `safe_text` applied to every string (keys and values) of its dicts and lists."""
    if isinstance(obj, str):
        return safe_text(obj)
    if isinstance(obj, dict):
        return {safe_text(k) if isinstance(k, str) else k: _safe_strings(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_safe_strings(v) for v in obj]
    return obj


def write_json(path: str | os.PathLike[str], obj: Any) -> None:
    """Save JSON (indented, keys in insertion order) atomically; strings pass through `safe_text`."""
    atomic_write_text(path, json.dumps(_safe_strings(obj), indent=2, allow_nan=True) + "\n")


# Whole-folder commits ---------------------------------------------------------------------------
#
# A verb writes its output or run folder OUT through `staged_folder(OUT)`:
#   1. recover: leftovers of an interrupted commit next to OUT are settled (`recover_folder`);
#   2. stage:   everything is written into a fresh sibling `.OUT.oddspot-tmp-<pid>-<hex>`, which
#               this process holds locked (flock) while it works on it;
#   3. commit:  the marker file is added (unless a model.json, metrics.json or split.json marks
#               the folder already), OUT (if any) is renamed to `.OUT.oddspot-old-<pid>-<hex>`
#               (still locked), the stage is renamed to OUT, and the old folder is deleted.
# A failure or interrupt before step 3 deletes the stage and leaves OUT untouched; a failure between
# the two renames of step 3 renames the old folder back. A process killed at any instant leaves OUT
# as the old complete folder, the new complete one, or (between the renames) absent next to its old
# sibling; `recover_folder`, run by the next commit and by readers of a missing run folder, renames
# an unlocked old sibling back to OUT when OUT is absent and deletes every other unlocked leftover.

MARKER_FILE = ".oddspot"
# A folder oddspot may replace holds one of these (its marker, or a file of an older oddspot).
_OWNED = (MARKER_FILE, "model.json", "metrics.json", "split.json")
# What oddspot writes at the top of a run or output folder: a folder without the marker (written
# before it existed) may be replaced only when it holds nothing else.
_KNOWN = frozenset({
    *_OWNED, "model.safetensors", "run.json", "scores.csv", "curves.json", "errors.csv", "gallery", "heatmaps",
    "masks", "maps", "panels", "report.html", "score_curves.png", "state", "history.json", "data", "runs", "eval",
    "models", "memory_bank.safetensors", "padim.safetensors", "calibration.json", "config.json", "scores",
    "weights.safetensors", "evaluation.json", "scores.json", "train_summary.json", "gate", "localizer", "exports",
})
_LEFTOVER = re.compile(r"oddspot-(tmp|old)-\d+-[0-9a-f]{8}")
_MARKER_TEXT = '{"written_by": "oddspot"}\n'


def _lock(path: Path) -> int | None:
    """An open descriptor of folder `path` holding an exclusive flock, or None when another holds it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return None
    if fcntl is not None:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return None
    return fd


def _sibling(target: Path, role: str) -> Path:
    return target.with_name(f".{target.name}.oddspot-{role}-{os.getpid()}-{secrets.token_hex(4)}")


def recover_folder(folder: str | os.PathLike[str]) -> None:
    """Settle what an interrupted commit of `folder` left next to it (deterministic and idempotent).

    Leftovers still locked by a living process are left alone. Of the others: when `folder` is
    absent, the first old sibling (by name) is renamed back to `folder` (the complete folder of
    before the commit); every other leftover (stages, old folders) is deleted.
    """
    target = real_path(folder)
    prefix = f".{target.name}."
    try:
        names = sorted(n for n in os.listdir(target.parent)
                       if n.startswith(prefix) and _LEFTOVER.fullmatch(n[len(prefix):]))
    except OSError:
        return
    for name in sorted(names, key=lambda n: "-old-" not in n):  # old folders first, then by name
        path = target.parent / name
        fd = _lock(path)
        if fd is None:
            continue
        try:
            if "-old-" in name and not os.path.lexists(target):
                os.rename(path, target)
            else:
                shutil.rmtree(path, ignore_errors=True)
        except OSError:
            pass
        finally:
            os.close(fd)


def check_out_folder(out: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None] = ()) -> Path:
    """The real path of `out` if oddspot may replace it as a whole, else a one-line error.

    `out` must be absent, an empty folder, or a folder oddspot wrote (its marker file, or a
    model.json / metrics.json / split.json); never a file, the current folder or one of its parents,
    the home folder, or a folder that holds one of `inputs`.
    """
    shown = Path(out)
    if os.path.lexists(shown) and not shown.is_dir():
        raise OddspotError(f"--out {shown}: is a file, not a folder; choose a folder")
    target = real_path(shown)
    try:
        home: Path | None = real_path(Path.home())
    except (RuntimeError, KeyError):
        home = None
    cwd = real_path(os.getcwd())
    if target == Path(target.anchor) or target == home or target == cwd or target in cwd.parents:
        raise OddspotError(f"--out {shown}: is the current folder, one of its parents or the home folder; "
                           "choose a new folder (nothing was deleted)")
    check_out(shown, inputs)
    if target.is_dir() and not _replaceable(target):
        raise OddspotError(f"--out {shown}: holds files oddspot did not write; choose a new or empty folder "
                           "(nothing was deleted)")
    return target


def _replaceable(target: Path) -> bool:
    """True for an empty folder, one with oddspot's marker, or an older oddspot folder holding only its files."""
    names = {p.name for p in target.iterdir()}
    if not names or MARKER_FILE in names:
        return True
    return bool(names & set(_OWNED)) and names <= _KNOWN


def mark_folder(folder: str | os.PathLike[str]) -> None:
    """Write oddspot's marker into `folder`: a later verb may replace the folder whatever file names it holds."""
    atomic_write_text(Path(folder) / MARKER_FILE, _MARKER_TEXT)


def claim_folder(out: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None] = ()) -> Path:
    """Check `out` like `check_out_folder`, create it and mark it as oddspot's: for a verb that fills
    a folder step by step (a demo, reusing its data and model) instead of committing it whole."""
    recover_folder(out)
    target = check_out_folder(out, inputs)
    try:
        target.mkdir(parents=True, exist_ok=True)
        if not os.path.lexists(target / MARKER_FILE):
            mark_folder(target)
    except OSError as exc:
        raise OddspotError(f"--out {out}: cannot write there ({exc.strerror or exc}); choose another folder") from None
    return Path(out)


@contextmanager
def staged_folder(out: str | os.PathLike[str], inputs: Iterable[str | os.PathLike[str] | None] = ()) -> Iterator[Path]:
    """Yield a fresh, empty stage for the folder `out`; on success, replace `out` by it as a whole.

    A reader sees the old complete `out` or the new complete one, never a mix, and outputs of an
    earlier run are replaced, not mixed with the new ones. On an exception or interrupt the stage
    is deleted and `out` is left untouched. `out` is first checked by `check_out_folder`, so a
    folder of the user's own files is never deleted. The protocol is described above.
    """
    recover_folder(out)
    target = check_out_folder(out, inputs)
    stage = _sibling(target, "tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        stage.mkdir(0o777)
    except OSError as exc:
        raise OddspotError(f"--out {out}: cannot write in {target.parent} ({exc.strerror or exc}); "
                           "choose another folder") from None
    fd = _lock(stage)
    try:
        yield stage
        if not any(os.path.lexists(stage / n) for n in _OWNED):  # model.json etc. mark it already
            mark_folder(stage)
        _commit(stage, target, Path(out))
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    finally:
        if fd is not None:
            os.close(fd)


def _commit(stage: Path, target: Path, shown: Path) -> None:
    """Put `stage` in the place of `target`: two renames, the old folder deleted last."""
    if not os.path.lexists(target):
        try:
            os.rename(stage, target)
        except OSError as exc:
            raise OddspotError(f"--out {shown}: cannot write it ({exc.strerror or exc}); choose another folder") from None
        return
    fd = _lock(target)
    if fd is None:
        raise OddspotError(f"--out {shown}: another oddspot command is writing it; wait for it or choose another folder")
    old = _sibling(target, "old")
    try:
        os.rename(target, old)
        try:
            os.rename(stage, target)
        except BaseException:
            os.rename(old, target)
            raise
    except OSError as exc:
        raise OddspotError(f"--out {shown}: cannot replace it ({exc.strerror or exc}); choose another folder") from None
    finally:
        os.close(fd)
    shutil.rmtree(old, ignore_errors=True)


def staged_output(param: str = "out", inputs: tuple[str, ...] = ()) -> Callable[[F], F]:
    """Decorator: the function's folder argument `param` is written through `staged_folder`.

    The function receives the stage in place of `param` and writes there; when it returns, the
    stage replaces the folder as a whole (when it raises, the folder is untouched). `inputs` name
    the arguments (a path, or a sequence of paths) the folder must not hold. A `param` of None
    (nothing to write) passes through; a returned stage path is returned as `param`.
    """

    def wrap(fn: F) -> F:
        sig = signature(fn)

        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> Any:
            bound = sig.bind(*args, **kwargs)
            out = bound.arguments.get(param)
            if out is None:
                return fn(*args, **kwargs)
            protect: list[Any] = []
            for name in inputs:
                value = bound.arguments.get(name)
                if isinstance(value, (str, os.PathLike)):
                    protect.append(value)
                elif isinstance(value, (list, tuple)):
                    protect += [v for v in value if isinstance(v, (str, os.PathLike))]
            with staged_folder(out, protect) as stage:
                bound.arguments[param] = stage
                result = fn(*bound.args, **bound.kwargs)
            return Path(out) if isinstance(result, Path) and result == stage else result

        return run  # type: ignore[return-value]

    return wrap


def read_json(path: str | os.PathLike[str], fix: str, version_key: str | None = None,
              versions: tuple[int, ...] = (), missing: str | None = None) -> dict[str, Any]:
    """The one checked JSON reader: a JSON object from `path`, or a one-line error naming it.

    A missing file, an unreadable or non-UTF-8 file, invalid JSON, or a value that is not an
    object are errors that end with `fix` (what the user should do); `missing`, when given, is the
    whole message of a missing file. With `version_key`, the object's version must be one of `versions`.
    """
    path = Path(path)
    if path.exists() and not path.is_file():  # a folder, FIFO or device: reading could block or never end
        raise OddspotError(f"{path}: not a regular file; {fix}")
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise OddspotError(f"{path}: {missing}" if missing else f"{path}: not found; {fix}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise OddspotError(f"{path}: cannot read ({getattr(exc, 'strerror', None) or exc}); {fix}") from None
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested too deeply to be oddspot's
        raise OddspotError(f"{path}: not valid JSON ({exc}); {fix}") from None
    if not isinstance(obj, dict):
        raise OddspotError(f"{path}: expected a JSON object, got {type(obj).__name__}; {fix}")
    if version_key is not None:
        version = obj.get(version_key)
        if isinstance(version, bool) or version not in versions:
            raise OddspotError(f"{path}: {version_key} {version!r} unsupported (this oddspot reads "
                               f"{', '.join(map(str, versions))}); {fix}")
    return obj
