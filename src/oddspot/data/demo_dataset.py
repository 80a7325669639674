"""A small MVTec-AD-layout dataset built from real photos shipped with scikit-image.

Each category is one texture photo; tiles are random crops (with flips). Test defects are made
by the synthetic-anomaly generator with textures from the other photos, so the dataset needs
no download and is identical for a given seed.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oddspot.choices import TEXTURES
from oddspot.files import write_json, write_png



def texture_photo(name: str) -> np.ndarray:
    """An RGB uint8 photo from skimage.data by name."""
    from skimage import data

    img = getattr(data, name)()
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3]).astype(np.uint8)


def random_tile(photo: np.ndarray, size: int, rng: np.random.Generator) -> np.ndarray:
    """A random `size` square crop of `photo`, flipped left-right and up-down each with probability 1/2."""
    y = int(rng.integers(0, photo.shape[0] - size + 1))
    x = int(rng.integers(0, photo.shape[1] - size + 1))
    tile = photo[y:y + size, x:x + size]
    if rng.random() < 0.5:
        tile = tile[:, ::-1]
    if rng.random() < 0.5:
        tile = tile[::-1]
    return np.ascontiguousarray(tile)


def build_demo_dataset(root: str | Path, categories: tuple[str, ...] = TEXTURES, n_train: int = 60,
                       n_test_good: int = 20, n_test_bad: int = 30, tile: int = 160, seed: int = 0) -> Path:
    """Write the dataset under `root` (MVTec AD layout) and return `root`; a `dataset.json` records the recipe."""
    from oddspot.data.synthetic import KINDS, synthesize_anomaly  # here: the CLI imports this module for --help

    root = Path(root)
    # sorted: set order varies with Python's per-process hash seed, and the foreign-texture pick
    # below indexes this order, so an unsorted set made the dataset differ between runs
    photos = {name: texture_photo(name) for name in sorted(set(categories) | {"coffee", "chelsea", "astronaut"})}
    for ci, cat in enumerate(categories):
        rng = np.random.default_rng(seed * 1000 + ci)
        photo = photos[cat]
        foreign = [photos[n] for n in photos if n != cat]
        for i in range(n_train):
            write_png(root / cat / "train" / "good" / f"{i:03d}.png", random_tile(photo, tile, rng))
        for i in range(n_test_good):
            write_png(root / cat / "test" / "good" / f"{i:03d}.png", random_tile(photo, tile, rng))
        for i in range(n_test_bad):
            kind = KINDS[i % len(KINDS)]
            src = foreign[int(rng.integers(len(foreign)))]
            bad, mask, _ = synthesize_anomaly(random_tile(photo, tile, rng), rng, kind=kind, foreign=src)
            write_png(root / cat / "test" / kind / f"{i:03d}.png", bad)
            write_png(root / cat / "ground_truth" / kind / f"{i:03d}_mask.png", mask.astype(np.uint8) * 255)
    write_json(root / "dataset.json", {"generator": "oddspot.data.demo_dataset", "seed": seed,
                                       "categories": list(categories), "n_train": n_train,
                                       "n_test_good": n_test_good, "n_test_bad": n_test_bad, "tile": tile})
    return root
