"""Pictures of anomaly maps: heatmap overlays with a fixed, model-stored colour scale."""

from __future__ import annotations

from functools import lru_cache

import numpy as np

OVERLAY_BLOCK = 1 << 20  # pixels blended at a time
LEVELS = 256


@lru_cache(maxsize=1)
def _jet() -> np.ndarray:
    """matplotlib's jet as a 256 x 3 float32 table (0..255): what `colormaps["jet"](x)` looks up."""
    from matplotlib import colormaps  # imported on first use: ~0.2 s that predict without heatmaps never pays

    return (colormaps["jet"](np.arange(LEVELS))[:, :3] * 255.0).astype(np.float32)


def heatmap_overlay(image: np.ndarray, anomaly_map: np.ndarray, display_max: float | None = None,
                    alpha: float = 0.5) -> np.ndarray:
    """Blend a jet-coloured anomaly map over the image (uint8 H x W x 3).

    The colour scale runs from 0 to `display_max`, a statistic stored with the model, so the same
    score has the same colour in every image; without it the map's own maximum is used. Colours
    come from a 256-entry table indexed as matplotlib indexes it (`int(x * 256)`, clipped).
    """
    top = display_max if display_max else float(anomaly_map.max()) or 1.0
    lut = _jet()
    out = np.empty(image.shape, np.uint8)
    step = max(1, OVERLAY_BLOCK // max(1, image.shape[1]))  # rows at a time: memory of a block, not of the image
    for r in range(0, image.shape[0], step):
        norm = np.clip(anomaly_map[r:r + step] / top, 0.0, 1.0)
        colours = lut[np.minimum((norm * LEVELS).astype(np.int32), LEVELS - 1)]
        blend = image[r:r + step].astype(np.float32) * (1 - alpha) + colours * alpha
        out[r:r + step] = np.clip(blend, 0, 255).astype(np.uint8)
    return out
