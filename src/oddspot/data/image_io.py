"""Robust image and mask decoding: any common PNG/JPEG/TIFF/BMP flavour to RGB uint8 or bool.

Every file is held to a pixel budget (`DEFAULT_MAX_PIXELS`, or `pixel_budget(n)` around a verb)
checked from the header, before a byte of pixel data is decoded: a decompression bomb (a
20000 x 20000 PNG of a few hundred KB) is a one-line error naming the file, not 1.2 GB of memory.
"""

from __future__ import annotations

import math
import os
import re
import warnings
from collections.abc import Iterator, Sequence
from typing import IO
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from oddspot.choices import DEFAULT_MAX_PIXELS, MAX_PIXELS_LIMIT
from oddspot.errors import OddspotError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})
# predict decodes a larger JPEG at a reduced DCT scale that keeps at least this many pixels:
# 2048 x 2048, the largest input size of any model, so the model sees the same detail.
DECODE_PIXELS = 2048 * 2048
_BUDGET: ContextVar[int] = ContextVar("oddspot_max_pixels", default=DEFAULT_MAX_PIXELS)


def check_max_pixels(value: int, what: str = "--max-pixels") -> int:
    """`value` as a pixel budget, or a one-line error naming `what` when it is not an int in range."""
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_PIXELS_LIMIT:
        raise OddspotError(f"{what} {value!r}: use a whole number of pixels in [1, {MAX_PIXELS_LIMIT}]")
    return value


def max_pixels() -> int:
    """The pixel budget in force: `DEFAULT_MAX_PIXELS` unless a `pixel_budget` block sets another."""
    return _BUDGET.get()


@contextmanager
def pixel_budget(value: int | None) -> Iterator[int]:
    """Within the block, every image and mask read is held to `value` pixels (None: the default)."""
    token = _BUDGET.set(DEFAULT_MAX_PIXELS if value is None else check_max_pixels(value))
    try:
        yield _BUDGET.get()
    finally:
        _BUDGET.reset(token)


def is_image_file(path: Path) -> bool:
    """True when the file name has an image suffix we decode."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """The image files in `folder` (recursive: also below it, linked folders followed, each real folder
    once), sorted; hidden files (`._x`, `.DS_Store`) left out."""
    return sorted(p for p in visible_files(folder, recursive) if is_image_file(p))


def visible_files(folder: Path, recursive: bool = False) -> list[Path]:
    """Every file in `folder` but hidden ones (recursive: also below it, linked folders followed, each
    real folder once), unsorted; `list_images` keeps the images among them."""
    if not recursive:
        return [p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".")]
    found: list[Path] = []
    seen: set[str] = set()
    for where, subfolders, names in os.walk(folder, followlinks=True):
        real = os.path.realpath(where)
        if real in seen:  # a link back up the tree, or two links to one folder
            subfolders[:] = []
            continue
        seen.add(real)
        found += [Path(where) / n for n in names if not n.startswith(".") and (Path(where) / n).is_file()]
    return found


def reduction(pixels: int, reduce_to: int | None) -> int:
    """The largest factor of 1, 2, 4, 8 (per side) that keeps at least `reduce_to` of `pixels` (None: 1)."""
    if reduce_to is None or pixels <= reduce_to:
        return 1
    return min(8, 2 ** int(math.log2(math.sqrt(pixels / reduce_to))))


class OverBudget(Exception):
    """An image over the pixel budget: its header size (`width`, `height`), or only its pixel count when
    PIL's own decompression-bomb limit refused it on open (`width` and `height` None)."""

    def __init__(self, pixels: int | None, width: int | None = None, height: int | None = None) -> None:
        super().__init__(pixels)
        self.pixels, self.width, self.height = pixels, width, height

    def size(self) -> str:
        """'{pixels / 1e6:.1f} Mpx', or 'too many pixels' when PIL did not say how many."""
        return "too many pixels" if self.pixels is None else f"{self.pixels / 1e6:.1f} Mpx"


def load_within_budget(source: str | os.PathLike[str] | IO[bytes], budget: int, reduce_to: int | None = None,
                       formats: Sequence[str] | None = None) -> Image.Image:
    """Open an encoded image (a path or a binary file), check its header size against `budget` before
    a byte of pixel data is decoded, and decode it fully; with `reduce_to` (pixels), a larger JPEG is
    decoded at the smallest DCT scale (1/2, 1/4, 1/8) that keeps at least that many pixels.

    Raises `OverBudget`, or what PIL raises on bytes it cannot decode (UnidentifiedImageError,
    OSError, ...); the caller words the one-line error, naming the file or request.
    """
    img = None
    done = False
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(source, formats=formats)
            width, height = img.size
            if width * height > budget:
                raise OverBudget(width * height, width, height)
            scale = reduction(width * height, reduce_to)
            if scale > 1 and img.format == "JPEG":
                img.draft(img.mode, (math.ceil(width / scale), math.ceil(height / scale)))
            img.load()
        done = True
    except Image.DecompressionBombError as exc:  # PIL refuses more than 2 * MAX_IMAGE_PIXELS on open
        found = re.search(r"\((\d+) pixels\)", str(exc))
        raise OverBudget(int(found.group(1)) if found else None) from None
    finally:
        if not done and img is not None:
            img.close()
    return img


def open_image(path: Path, what: str = "image", reduce_to: int | None = None) -> Image.Image:
    """Open and fully decode an image file (`load_within_budget` with `max_pixels()`); a missing,
    broken or over-budget file is a one-line error naming it."""
    if not path.exists():
        raise OddspotError(f"{path}: no such {what} file; check the path")
    budget = max_pixels()
    try:
        return load_within_budget(path, budget, reduce_to)
    except OverBudget as big:
        if big.width is None:
            raise OddspotError(f"{path}: {what} has {big.size()}, over the pixel budget of {budget / 1e6:g} Mpx (and "
                               "PIL's decompression-bomb limit); shrink it") from None
        raise OddspotError(f"{path}: {what} is {big.width}x{big.height} ({big.size()}), over the pixel budget of "
                           f"{budget / 1e6:g} Mpx; shrink it or raise --max-pixels") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, MemoryError) as exc:
        raise OddspotError(f"{path}: cannot decode {what} ({exc}); replace or remove the file") from None


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale integer or float pixel arrays of any depth to uint8."""
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        top = 65535 if arr.max(initial=0) > 255 else 255
        return np.clip(np.round(arr.astype(np.float64) * (255.0 / top)), 0, 255).astype(np.uint8)
    arr = arr.astype(np.float64)
    top = 1.0 if arr.max(initial=0.0) <= 1.0 else 255.0
    return np.clip(np.round(arr * (255.0 / top)), 0, 255).astype(np.uint8)


def decode_rgb(img: Image.Image) -> np.ndarray:
    """Convert a PIL image of any mode (L, LA, P, RGBA, I;16, I, F, CMYK, ...) to H x W x 3 uint8."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        gray = _to_uint8(np.asarray(img))
        return np.repeat(gray[:, :, None], 3, axis=2)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        img = Image.alpha_composite(background, rgba)
    return np.ascontiguousarray(np.asarray(img.convert("RGB"), dtype=np.uint8))


def read_image(path: str | os.PathLike[str], reduce_to: int | None = None) -> np.ndarray:
    """Read an image file as H x W x 3 uint8 RGB; raise OddspotError naming the file if it cannot.

    `reduce_to` (pixels): a larger image is returned reduced by 2, 4 or 8 per side, keeping at
    least that many pixels; a JPEG is decoded at that scale (see `open_image`), any other
    format is decoded whole, then box-averaged.
    """
    with open_image(Path(path), reduce_to=reduce_to) as img:
        rgb = decode_rgb(img)
    scale = reduction(rgb.shape[0] * rgb.shape[1], reduce_to)
    if scale == 1:
        return rgb
    return np.asarray(Image.fromarray(rgb).reduce(scale))


def read_mask_values(path: str | os.PathLike[str], shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a ground-truth mask's raw values as H x W (the largest of R, G, B for a colour file; 0 = normal).

    With `shape` (H, W), a mask of another size is an error naming the file.
    """
    path = Path(path)
    img = open_image(path, "mask")
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=2) if img.mode != "LA" else arr[..., 0]
    if shape is not None and arr.shape != tuple(shape):
        raise OddspotError(
            f"{path}: mask is {arr.shape[1]}x{arr.shape[0]} but its image is {shape[1]}x{shape[0]}; "
            "masks must have the size of their image"
        )
    return arr


def read_mask(path: str | os.PathLike[str], shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a ground-truth mask as H x W bool (any non-zero pixel is anomalous).

    With `shape` (H, W), a mask of another size is an error naming the file.
    """
    return read_mask_values(path, shape) > 0


def read_masks(paths: Sequence[str | os.PathLike[str]], shape: tuple[int, int] | None = None) -> np.ndarray:
    """The union (OR) of several ground-truth masks of one image, as H x W bool (e.g. one file per defect).

    Every file is read as `read_mask` reads it (any non-zero pixel is anomalous) and must have `shape`
    (or, without it, the shape of the first file).
    """
    if not paths:
        raise ValueError("read_masks needs at least one mask file")
    union = read_mask(paths[0], shape)
    for path in paths[1:]:
        union |= read_mask(path, union.shape)
    return union
