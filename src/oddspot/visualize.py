"""Pictures of anomaly maps: heatmap overlays with a fixed, model-stored colour scale."""

from __future__ import annotations

import numpy as np
from matplotlib import colormaps


def heatmap_overlay(image: np.ndarray, anomaly_map: np.ndarray, display_max: float | None = None,
                    alpha: float = 0.5) -> np.ndarray:
    """Blend a jet-coloured anomaly map over the image (uint8 H x W x 3).

    The colour scale runs from 0 to `display_max`, a statistic stored with the model, so the same
    score has the same colour in every image; without it the map's own maximum is used.
    """
    top = display_max if display_max else float(anomaly_map.max()) or 1.0
    norm = np.clip(anomaly_map / top, 0.0, 1.0)
    colours = (colormaps["jet"](norm)[..., :3] * 255.0).astype(np.float32)
    out = image.astype(np.float32) * (1 - alpha) + colours * alpha
    return np.clip(out, 0, 255).astype(np.uint8)
