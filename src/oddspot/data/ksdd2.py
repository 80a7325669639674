"""Reader for the Kolektor Surface-Defect Dataset 2 (KSDD2) layout: one root, no category folders.

    <root>/train/<id>.png beside <root>/train/<id>_GT.png
    <root>/test/<id>.png  beside <root>/test/<id>_GT.png

Every image has a ground-truth mask; it is all zero for a defect-free image, and an image is
defective when any mask pixel is non-zero. KSDD2 is used unsupervised here: the training images
whose mask is empty are the normal training set, the defective training images are left out;
the test split is used whole. The masks are decoded when the dataset is listed, to know the labels.
"""

from __future__ import annotations

from pathlib import Path

from oddspot.data.image_io import list_images, read_mask
from oddspot.data.mvtec import SampleRef, check_root
from oddspot.errors import OddspotError

CATEGORY = "ksdd2"
GT_SUFFIX = "_GT"
PARTS = ("train", "test")


def is_dataset(root: Path) -> bool:
    """True for a folder laid out as KSDD2 (train/ and test/ holding <id>_GT masks)."""
    return all((root / part).is_dir() for part in PARTS) and any(
        p.stem.endswith(GT_SUFFIX) for p in list_images(root / "train"))


def pairs(folder: Path) -> list[tuple[Path, Path]]:
    """(image, its _GT mask) for every image of a KSDD2 part; an image without a mask, or a mask
    without an image, is an error naming it."""
    if not folder.is_dir():
        raise OddspotError(f"{folder}: folder not found; KSDD2 has train/ and test/ with <id>.png and <id>_GT.png")
    files = list_images(folder)
    masks = {p.stem[:-len(GT_SUFFIX)]: p for p in files if p.stem.endswith(GT_SUFFIX)}
    images = [p for p in files if not p.stem.endswith(GT_SUFFIX)]
    lone = [p for p in images if p.stem not in masks]
    if lone:
        raise OddspotError(f"{lone[0]}: no mask {lone[0].stem}{GT_SUFFIX}.png beside it ({len(lone)} images lack one); "
                           "KSDD2 has a mask for every image")
    stems = {p.stem for p in images}
    orphans = [m for stem, m in masks.items() if stem not in stems]
    if orphans:
        raise OddspotError(f"{orphans[0]}: a mask without its image ({len(orphans)} such masks); restore the images")
    if not images:
        raise OddspotError(f"{folder}: no images found; KSDD2 has <id>.png and <id>_GT.png files there")
    return [(p, masks[p.stem]) for p in images]


def read_ksdd2(root: str | Path, category: str = CATEGORY) -> dict[str, list[SampleRef]]:
    """List KSDD2: {"train": [train images with an empty mask], "test": [every test image]}.

    A test image is defective (defect type "defect", with its mask) when its mask has a non-zero
    pixel, else normal. `category` names the dataset in the listing (it has no category folders).
    """
    root = check_root(root)
    train = [SampleRef(p, 0, "good", category) for p, gt in pairs(root / "train") if not read_mask(gt).any()]
    if not train:
        raise OddspotError(f"{root / 'train'}: no defect-free training images (all masks have defect pixels)")
    test = [SampleRef(p, 1, "defect", category, gt) if read_mask(gt).any() else SampleRef(p, 0, "good", category)
            for p, gt in pairs(root / "test")]
    return {"train": train, "test": test}
