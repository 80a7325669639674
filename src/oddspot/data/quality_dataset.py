"""The quality benchmark's dataset: 17 MVTec-AD-layout categories from photos shipped with scikit-image.

Textures (tiles are random crops, with flips, of one photo): brick, grass, gravel, hubble
(`hubble_deep_field`), ihc (`immunohistochemistry`), retina (the fundus's inner square).
Objects (one scene per category, seen with pose jitter: rotation +-4 degrees, scale +-4%, shift
+-3%): astronaut, camera, chelsea, coffee, rocket (the whole photo), and horse (the `horse`
silhouette in brown on a shaded background, jittered +-8 degrees).

Test defects cycle through the nine families of `oddspot.data.defects`; on the horse they are
placed on the animal, so `missing` removes a part of it. Each category also gets `predict/`: a
stream of JPEGs (normal and defective) to time `predict` on, outside the MVTec folders.

The 12 categories above are split into two fixed halves by one rule: within each kind (textures,
objects) in alphabetical order, the 1st, 3rd and 5th go to `selection` (where defaults are
chosen) and the 2nd, 4th and 6th to `confirmation` (where they are checked). Five more form the
`holdout`, added after the confirmation half had been seen, for a confirmation nothing was tuned
on: textures cell and moon, objects clock, coins and motorcycle (the left view of
`stereo_motorcycle`). They come after the others in CATEGORIES and are not foreign-texture
sources, so the 12 are the same images as before they existed. Everything is a function of
`seed`; `dataset.json` records the recipe, and `recipe(...)` returns it without building.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from oddspot.data.defects import FAMILIES, make_defect
from oddspot.data.demo_dataset import random_tile
from oddspot.errors import OddspotError
from oddspot.files import atomic_write_bytes, write_json, write_png

TEXTURES = ("brick", "grass", "gravel", "hubble", "ihc", "retina")
OBJECTS = ("astronaut", "camera", "chelsea", "coffee", "horse", "rocket")
HOLDOUT_TEXTURES = ("cell", "moon")
HOLDOUT_OBJECTS = ("clock", "coins", "motorcycle")
CATEGORIES = TEXTURES + OBJECTS + HOLDOUT_TEXTURES + HOLDOUT_OBJECTS  # appended: a category's seed is its index
HALVES: dict[str, tuple[str, ...]] = {
    "selection": tuple(sorted(TEXTURES)[0::2] + sorted(OBJECTS)[0::2]),
    "confirmation": tuple(sorted(TEXTURES)[1::2] + sorted(OBJECTS)[1::2]),
    "holdout": HOLDOUT_TEXTURES + HOLDOUT_OBJECTS,
}
# skimage.data loader and the crop (y0, y1, x0, x1) of its photo that is the texture or the scene
SOURCES: dict[str, tuple[str, tuple[int, int, int, int] | None]] = {
    "brick": ("brick", None), "grass": ("grass", None), "gravel": ("gravel", None),
    "hubble": ("hubble_deep_field", None), "ihc": ("immunohistochemistry", None), "retina": ("retina", (330, 1080, 330, 1080)),
    "astronaut": ("astronaut", None), "camera": ("camera", None), "chelsea": ("chelsea", None),
    "coffee": ("coffee", None), "rocket": ("rocket", None),
}
# The holdout's photos; not in SOURCES, the pool of foreign textures, which the 12 draw from.
HOLDOUT_SOURCES: dict[str, tuple[str, tuple[int, int, int, int] | None]] = {
    "cell": ("cell", None), "moon": ("moon", None), "clock": ("clock", None), "coins": ("coins", None),
    "motorcycle": ("stereo_motorcycle", None),
}
VERSION = 1


def half_of(category: str) -> str:
    """The half ("selection", "confirmation" or "holdout") a category belongs to."""
    for name, cats in HALVES.items():
        if category in cats:
            return name
    raise OddspotError(f"unknown category {category!r}; use one of {', '.join(CATEGORIES)}")


@functools.cache
def photo(name: str) -> np.ndarray:
    """The RGB uint8 source photo of a category (or of any skimage.data loader name); read-only, cached."""
    from skimage import data

    loader, crop = SOURCES.get(name) or HOLDOUT_SOURCES.get(name, (name, None))
    img = getattr(data, loader)()
    img = np.asarray(img[0] if isinstance(img, tuple) else img)  # stereo_motorcycle: (left, right, disparity)
    if img.dtype == bool:
        img = img.astype(np.uint8) * 255
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    img = img[..., :3]
    if crop is not None:
        img = img[crop[0]:crop[1], crop[2]:crop[3]]
    img = np.ascontiguousarray(img).astype(np.uint8)
    img.flags.writeable = False
    return img


def _square(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(h, w)
    return img[(h - s) // 2:(h - s) // 2 + s, (w - s) // 2:(w - s) // 2 + s]


def _posed(layers: Sequence[np.ndarray], size: int, rng: np.random.Generator, degrees: float) -> list[np.ndarray]:
    """The same random rotation, scale and shift applied to each square layer, cropped to `size`."""
    angle = rng.uniform(-degrees, degrees)
    scale = rng.uniform(0.96, 1.04)
    shift = rng.uniform(-0.03, 0.03, 2) * size
    canvas = int(round(size * 1.2 * scale))
    lo = (canvas - size) // 2
    out = []
    for i, layer in enumerate(layers):
        im = Image.fromarray(layer).resize((canvas, canvas), Image.BILINEAR if i == 0 else Image.NEAREST)
        im = im.rotate(angle, resample=Image.BILINEAR if i == 0 else Image.NEAREST, translate=tuple(shift))
        out.append(np.ascontiguousarray(np.asarray(im)[lo:lo + size, lo:lo + size]))
    return out


@functools.lru_cache(maxsize=4)
def _horse_silhouette(side: int) -> np.ndarray:
    """skimage's horse silhouette (True on the horse) centred on a `side` square with a 5% margin; read-only."""
    from skimage import data

    sil = ~np.asarray(data.horse())
    full = max(sil.shape) * 11 // 10
    mask = np.zeros((full, full), np.uint8)
    y0, x0 = (full - sil.shape[0]) // 2, (full - sil.shape[1]) // 2
    mask[y0:y0 + sil.shape[0], x0:x0 + sil.shape[1]] = sil * 255
    small = np.asarray(Image.fromarray(mask).resize((side, side), Image.BILINEAR)) > 127
    small.flags.writeable = False
    return small


def _horse_scene(size: int, rng: np.random.Generator, texture: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A brown horse (fur shading from `texture`) on a softly shaded background, posed."""
    from scipy import ndimage

    from oddspot.data.synthetic import perlin_noise

    side = int(round(size * 1.25))
    mask = _horse_silhouette(side)
    coarse = perlin_noise((max(4, side // 8),) * 2, (3, 3), rng)
    shade = ndimage.zoom(coarse, side / coarse.shape[0], order=1)[:side, :side, None] * 12
    background = np.array([205.0, 200, 185], np.float32) + shade
    fur = texture[:side, :side, :1].astype(np.float32) / 128.0
    horse = np.array([120.0, 78, 45], np.float32) * (0.75 + 0.25 * fur)
    scene = np.clip(np.where(mask[..., None], horse, background), 0, 255).astype(np.uint8)
    image, posed_mask = _posed([scene, mask.astype(np.uint8) * 255], size, rng, 8.0)
    return image, posed_mask > 127


def _jpeg(path: Path, image: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="JPEG", quality=90)
    atomic_write_bytes(path, buf.getvalue())


def recipe(categories: Sequence[str] = CATEGORIES, n_train: int = 60, n_test_good: int = 20, n_test_bad: int = 27,
           n_predict: int = 60, tile: int = 256, seed: int = 0) -> dict[str, Any]:
    """What `build_quality_dataset` writes to dataset.json for these arguments (a cache key)."""
    counts = {"n_train": n_train, "n_test_good": n_test_good, "n_test_bad": n_test_bad, "n_predict": n_predict}
    for name, value in {**counts, "tile": tile, "seed": seed}.items():
        if isinstance(value, bool) or not isinstance(value, int) or value < (1 if name == "n_train" else 0):
            raise OddspotError(f"{name} {value!r}: use a whole number >= {1 if name == 'n_train' else 0}")
    for c in categories:
        half_of(c)
    return {"generator": "oddspot.data.quality_dataset", "version": VERSION, "seed": seed,
            "categories": list(categories), "halves": {k: [c for c in v if c in categories] for k, v in HALVES.items()},
            "families": list(FAMILIES), "n_train": n_train, "n_test_good": n_test_good, "n_test_bad": n_test_bad,
            "n_predict": n_predict, "tile": tile}


def build_quality_dataset(root: str | Path, categories: Sequence[str] = CATEGORIES, n_train: int = 60,
                          n_test_good: int = 20, n_test_bad: int = 27, n_predict: int = 60, tile: int = 256,
                          seed: int = 0) -> Path:
    """Write the dataset under `root` (MVTec AD layout, plus `<category>/predict/*.jpg`) and return `root`.

    Category number i of CATEGORIES draws from `default_rng([seed, i])`, so a category's images do
    not depend on which other categories are built. Test image j of a category has defect family
    FAMILIES[j % 9]; its foreign texture (family `texture`) is a photo of another category.
    """
    root = Path(root)
    info = recipe(categories, n_train, n_test_good, n_test_bad, n_predict, tile, seed)
    if not 32 <= tile <= 400:
        raise OddspotError(f"tile {tile}: use 32..400 px (texture tiles are crops of 512 px photos)")
    for cat in categories:
        _write_category(root, cat, n_train, n_test_good, n_test_bad, n_predict, tile, seed)
    write_json(root / "dataset.json", info)
    return root


def _drawer(category: str, tile: int, rng: np.random.Generator) -> Callable[[], tuple[np.ndarray, np.ndarray | None]]:
    """A function drawing one normal image of `category` and its object mask (None for a texture or a photo scene)."""
    if category in TEXTURES + HOLDOUT_TEXTURES:
        src = photo(category)
        return lambda: (random_tile(src, tile, rng), None)
    if category == "horse":
        fur = photo("grass")
        return lambda: _horse_scene(tile, rng, random_tile(fur, min(512, int(round(tile * 1.25))), rng))
    square = _square(photo(category))
    return lambda: (_posed([square], tile, rng, 4.0)[0], None)


def _write_category(root: Path, category: str, n_train: int, n_test_good: int, n_test_bad: int, n_predict: int,
                    tile: int, seed: int) -> None:
    rng = np.random.default_rng([seed, CATEGORIES.index(category)])
    draw = _drawer(category, tile, rng)
    foreign = [n for n in sorted(SOURCES) if n != category]

    def defective(j: int) -> tuple[np.ndarray, np.ndarray, str]:
        family = FAMILIES[j % len(FAMILIES)]
        image, within = draw()
        source = photo(foreign[int(rng.integers(len(foreign)))])
        bad, mask = make_defect(image, rng, family, foreign=source, within=within)
        return bad, mask, family

    folder = root / category
    for i in range(n_train):
        write_png(folder / "train" / "good" / f"{i:03d}.png", draw()[0])
    for i in range(n_test_good):
        write_png(folder / "test" / "good" / f"{i:03d}.png", draw()[0])
    for j in range(n_test_bad):
        bad, mask, family = defective(j)
        write_png(folder / "test" / family / f"{j:03d}.png", bad)
        write_png(folder / "ground_truth" / family / f"{j:03d}_mask.png", mask.astype(np.uint8) * 255)
    for k in range(n_predict):
        _jpeg(folder / "predict" / f"{k:04d}.jpg", defective(k)[0] if k % 4 == 3 else draw()[0])
