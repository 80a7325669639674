"""Prediction panels of street scenes: input | prediction | overlay | confidence | anomaly score.

The overlay marks pixels at or above the score's validation threshold; the anomaly panel maps
`threshold +- 3 spread` (validation statistics, so the colours mean the same for every image)
onto a colour scale. Panels are saved as `<name>_panel.png`; an evaluation keeps a few under
`panels/`, where the report finds them.
"""

from __future__ import annotations

import numpy as np

PANELS_DIR = "panels"

# Colours of the 13 known classes (unlabeled, building, fence, other, pedestrian, pole, road line,
# road, sidewalk, vegetation, car, wall, traffic sign), close to the CARLA / Cityscapes palette.
PALETTE = np.array([
    [0, 0, 0], [70, 70, 70], [190, 153, 153], [72, 0, 90], [220, 20, 60], [153, 153, 153], [157, 234, 50],
    [128, 64, 128], [244, 35, 232], [107, 142, 35], [0, 0, 142], [102, 102, 156], [220, 220, 0],
], dtype=np.uint8)


def _colormap(values: np.ndarray) -> np.ndarray:
    """0..1 floats -> H x W x 3 uint8 through matplotlib's 'inferno' colour map."""
    from matplotlib import colormaps

    lut = (colormaps["inferno"](np.linspace(0, 1, 256))[:, :3] * 255).astype(np.uint8)
    return lut[np.clip(np.round(values * 255), 0, 255).astype(np.intp)]


def colorize(pred: np.ndarray) -> np.ndarray:
    """H x W class indices -> H x W x 3 palette colours (classes beyond the palette cycle through it)."""
    return PALETTE[np.asarray(pred) % len(PALETTE)]


def make_panel(image: np.ndarray, pred: np.ndarray, confidence: np.ndarray, score: np.ndarray, threshold: float,
               spread: float) -> np.ndarray:
    """input | prediction | overlay (prediction blended, flagged pixels in cyan) | confidence | anomaly score."""
    seg = colorize(pred)
    overlay = (0.55 * image + 0.45 * seg).astype(np.float32)
    flagged = score >= threshold
    overlay[flagged] = 0.35 * overlay[flagged] + 0.65 * np.array([0, 255, 255], np.float32)
    conf = _colormap(np.clip(confidence, 0, 1))
    width = 3 * spread if spread > 0 else max(abs(threshold), 1.0)
    anomaly = _colormap((score - (threshold - width)) / (2 * width))
    gap = np.full((image.shape[0], 2, 3), 255, np.uint8)
    parts = [image, seg, np.clip(overlay, 0, 255).astype(np.uint8), conf, anomaly]
    row: list[np.ndarray] = []
    for part in parts:
        row.extend([part, gap])
    return np.concatenate(row[:-1], axis=1)
