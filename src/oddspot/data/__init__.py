"""Reading data: the Sample model, image decoding, dataset layouts, splits and synthetic generators."""

from oddspot.data.image_io import read_image, read_mask
from oddspot.data.sample import Sample

__all__ = ["Sample", "read_image", "read_mask"]
