"""Images sent over HTTP -> H x W x 3 uint8 RGB, exactly as `oddspot predict` reads files.

The size is read from the header and held to the pixel budget before a byte of pixel data is
decoded (a 20000 x 20000 PNG bomb of a few hundred KB is refused, not decoded), only the formats
`predict` lists are tried, and a large image is reduced as `data.image_io.read_image` reduces it
(`reduce_to=DECODE_PIXELS`), so the service scores the very array `predict` scores.
"""

from __future__ import annotations

import io

import numpy as np
from PIL import Image, UnidentifiedImageError

from oddspot.data.image_io import DECODE_PIXELS, OverBudget, decode_rgb, load_within_budget, reduction
from oddspot.errors import OddspotError

# PIL format ids of the suffixes `data.image_io.IMAGE_SUFFIXES` lists (a camera's MPO opens as JPEG).
FORMATS = ("PNG", "JPEG", "BMP", "TIFF", "WEBP")
FORMAT_NAMES = "PNG, JPEG, BMP, TIFF or WebP"


class UnsupportedImage(OddspotError):
    """The bytes are not an image of a format the service decodes (HTTP 415)."""


def decode_image_bytes(data: bytes, max_pixels: int, what: str = "image",
                       reduce_to: int | None = DECODE_PIXELS) -> np.ndarray:
    """Decode an encoded image to H x W x 3 uint8; a one-line error naming `what` when it cannot.

    `UnsupportedImage` when the bytes are no image of `FORMATS`; `OddspotError` when the image is
    over `max_pixels` (checked from the header), truncated or damaged.
    """
    img = None
    try:
        img = load_within_budget(io.BytesIO(data), max_pixels, reduce_to, FORMATS)
        rgb = decode_rgb(img)
    except UnidentifiedImageError:
        raise UnsupportedImage(f"{what}: not a {FORMAT_NAMES} image; send one of those") from None
    except OverBudget as big:
        size = big.size() if big.width is None else f"{big.width}x{big.height} ({big.size()})"
        raise OddspotError(f"{what}: {size} is over the pixel budget of {max_pixels / 1e6:g} Mpx; send a smaller image") from None
    except (OSError, SyntaxError, ValueError, MemoryError, EOFError) as exc:
        raise OddspotError(f"{what}: cannot decode the image ({exc}); send an intact file") from None
    finally:
        if img is not None:
            img.close()
    scale = reduction(rgb.shape[0] * rgb.shape[1], reduce_to)
    if scale == 1:
        return rgb
    return np.asarray(Image.fromarray(rgb).reduce(scale))
