"""Robust image and mask decoding: any common PNG/JPEG/TIFF/BMP flavour to RGB uint8 or bool."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from oddspot.errors import OddspotError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"})


def is_image_file(path: Path) -> bool:
    """True when the file name has an image suffix we decode."""
    return path.suffix.lower() in IMAGE_SUFFIXES


def list_images(folder: Path, recursive: bool = False) -> list[Path]:
    """The image files in `folder` (recursive: also below it), sorted; hidden files (`._x`, `.DS_Store`) left out."""
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in pattern if p.is_file() and is_image_file(p) and not p.name.startswith("."))


def open_image(path: Path, what: str = "image") -> Image.Image:
    """Open and fully decode an image file; a missing or broken file is a one-line error naming it."""
    if not path.exists():
        raise OddspotError(f"{path}: no such {what} file; check the path")
    try:
        img = Image.open(path)
        img.load()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise OddspotError(f"{path}: cannot decode {what} ({exc}); replace or remove the file") from None
    return img


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


def read_image(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an image file as H x W x 3 uint8 RGB; raise OddspotError naming the file if it cannot."""
    return decode_rgb(open_image(Path(path)))


def read_mask(path: str | os.PathLike[str], shape: tuple[int, int] | None = None) -> np.ndarray:
    """Read a ground-truth mask as H x W bool (any non-zero pixel is anomalous).

    With `shape` (H, W), a mask of another size is an error naming the file.
    """
    path = Path(path)
    img = open_image(path, "mask")
    arr = np.asarray(img)
    if arr.ndim == 3:
        arr = arr[..., :3].max(axis=2) if img.mode != "LA" else arr[..., 0]
    mask = arr > 0
    if shape is not None and mask.shape != tuple(shape):
        raise OddspotError(
            f"{path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image is {shape[1]}x{shape[0]}; "
            "masks must have the size of their image"
        )
    return mask
