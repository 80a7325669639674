"""What a scale-out job reads: image files listed from folders, manifests or object-store URIs.

A SOURCE is an image file, a folder (searched recursively, sorted, as `oddspot predict` does), a
manifest (`.csv` or `.parquet` with a `path` column; relative paths are relative to the
manifest's folder), or a URI (`s3://bucket/prefix`, `gs://...`, any scheme pyarrow has a file
system for) naming an image or a prefix to list. Workers read a URI through the same file system.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from oddspot.data.image_io import IMAGE_SUFFIXES, list_images
from oddspot.errors import OddspotError

MANIFEST_SUFFIXES = (".csv", ".parquet")
MANIFEST_COLUMN = "path"


@dataclass(frozen=True)
class Item:
    """One input: `path` as it is read (a local path or a URI) and `rel`, its name under the output folder."""

    path: str
    rel: str


def is_uri(source: str) -> bool:
    """True for `scheme://...` sources other than plain local paths."""
    return "://" in source and not source.startswith("file://")


def _filesystem(uri: str) -> tuple[Any, str]:
    from pyarrow import fs

    try:
        return fs.FileSystem.from_uri(uri)
    except (ValueError, OSError, ImportError) as exc:
        raise OddspotError(f"{uri}: no file system for this URI ({str(exc).splitlines()[0]}); use a local path or a "
                           "scheme pyarrow supports (s3://, gs://, hdfs://, abfs://)") from None


def _list_uri(uri: str) -> list[Item]:
    from pyarrow import fs

    filesystem, root = _filesystem(uri)
    info = filesystem.get_file_info(root)
    if info.type == fs.FileType.File:
        return [Item(uri, PurePosixPath(root).name)]
    if info.type != fs.FileType.Directory:
        raise OddspotError(f"{uri}: no such object or prefix; check SOURCE")
    scheme = uri.split("://", 1)[0]
    found = filesystem.get_file_info(fs.FileSelector(root, recursive=True))
    items = [Item(f"{scheme}://{f.path}", PurePosixPath(f.path).relative_to(root.rstrip("/")).as_posix())
             for f in found if f.type == fs.FileType.File and PurePosixPath(f.path).suffix.lower() in IMAGE_SUFFIXES
             and not PurePosixPath(f.path).name.startswith(".")]
    return sorted(items, key=lambda i: i.path)


def _read_manifest(path: Path) -> list[str]:
    """The `path` column of a CSV or Parquet manifest, as strings."""
    try:
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
        else:
            import pyarrow.csv as pacsv

            table = pacsv.read_csv(path)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise OddspotError(f"{path}: cannot read the manifest ({first}); give a CSV or Parquet file with a "
                           f"'{MANIFEST_COLUMN}' column") from None
    if MANIFEST_COLUMN not in table.column_names:
        raise OddspotError(f"{path}: the manifest has no '{MANIFEST_COLUMN}' column (it has {', '.join(table.column_names)}); "
                           "name the column of image paths 'path'")
    values = table.column(MANIFEST_COLUMN).to_pylist()
    bad = [v for v in values if not isinstance(v, str) or not v]
    if bad:
        raise OddspotError(f"{path}: {len(bad)} empty or non-text entries in the '{MANIFEST_COLUMN}' column; fix the manifest")
    return values


def _manifest_items(path: Path) -> list[Item]:
    items = []
    for value in _read_manifest(path):
        if is_uri(value):
            items.append(Item(value, PurePosixPath(value.split("://", 1)[1]).name))
            continue
        local = Path(value) if Path(value).is_absolute() else path.parent / value
        items.append(Item(str(local), Path(value).name if Path(value).is_absolute() else Path(value).as_posix()))
    return items


def list_inputs(sources: Sequence[str | os.PathLike[str]]) -> list[Item]:
    """Every image named by `sources` (see the module docstring), in order; a one-line error when none is."""
    items: list[Item] = []
    for source in sources:
        text = os.fspath(source)
        if is_uri(text):
            items += _list_uri(text)
            continue
        p = Path(text.removeprefix("file://"))
        if p.is_dir():
            items += [Item(str(f), f.relative_to(p).as_posix()) for f in list_images(p, recursive=True)]
        elif p.is_file() and p.suffix.lower() in MANIFEST_SUFFIXES:
            items += _manifest_items(p)
        elif p.is_file():
            items.append(Item(str(p), p.name))
        else:
            raise OddspotError(f"{p}: no such file or folder; check SOURCE")
    if not items:
        raise OddspotError(f"no images found in {', '.join(map(os.fspath, sources))}; pass image files, folders, "
                           "a manifest or a URI")
    seen: dict[str, str] = {}
    for item in items:
        if seen.get(item.rel, item.path) != item.path:
            raise OddspotError(f"{item.path} and {seen[item.rel]} would both be written as {item.rel}; pass their common "
                               "parent folder instead")
        seen[item.rel] = item.path
    return list(dict.fromkeys(items))


def local_paths(sources: Sequence[str | os.PathLike[str]]) -> list[str]:
    """The sources that are local paths (the output folder must stay apart from them)."""
    return [os.fspath(s).removeprefix("file://") for s in sources if not is_uri(os.fspath(s))]


@contextmanager
def local_copy(path: str) -> Iterator[Path]:
    """`path` as a local file: itself, or a URI's object downloaded to a temporary file (deleted afterwards)."""
    if not is_uri(path):
        yield Path(path.removeprefix("file://"))
        return
    filesystem, where = _filesystem(path)
    fd, tmp = tempfile.mkstemp(suffix=PurePosixPath(where).suffix)
    try:
        with os.fdopen(fd, "wb") as dst:
            try:
                with filesystem.open_input_stream(where) as src:
                    while chunk := src.read(1 << 20):
                        dst.write(chunk)
            except OSError as exc:
                raise OddspotError(f"{path}: cannot read it ({str(exc).splitlines()[0]}); check the URI and its "
                                   "access") from None
        yield Path(tmp)
    finally:
        Path(tmp).unlink(missing_ok=True)
