"""Reader for the MVTec AD 2 layout (one category folder per product).

    <cat>/train/good/000_regular.png             normal training images
    <cat>/validation/good/...                    normal validation images (the official validation split)
    <cat>/test_public/good/, test_public/bad/    labelled test images
    <cat>/test_public/ground_truth/bad/<stem>_mask.png   masks of the bad images (255 anomalous)
    <cat>/test_private/, test_private_mixed/     flat, unlabelled: they can be scored, never evaluated

File names are a 3-digit id plus a lighting tag (`_regular`, `_overexposed`, `_underexposed`,
`_shift_1` .. `_shift_3`); files are matched by stem, never by their number.
"""

from __future__ import annotations

from pathlib import Path

from oddspot.data.image_io import list_images
from oddspot.data.mvtec import SampleRef, category_root, good_refs, images_in
from oddspot.errors import OddspotError

CATEGORIES = ("can", "fabric", "fruit_jelly", "rice", "sheet_metal", "vial", "wallplugs", "walnuts")
PUBLIC_TEST = "test_public"
PRIVATE_TESTS = ("test_private", "test_private_mixed")


def is_category(folder: Path) -> bool:
    """True for a folder laid out as one MVTec AD 2 category."""
    return (folder / "train" / "good").is_dir() and any((folder / t).is_dir() for t in (PUBLIC_TEST, *PRIVATE_TESTS))


def private_hint(folder: Path) -> str:
    """How to use the unlabelled test sets of a category instead of evaluating them."""
    sets = [folder / t for t in PRIVATE_TESTS if (folder / t).is_dir()]
    if not sets:
        return ""
    return (f"; {' and '.join(s.name for s in sets)} hold unlabelled images: score them with "
            f"`oddspot inspect predict RUN {sets[0]} -o OUT`, they cannot be evaluated")


def read_mvtec_ad2(root: str | Path, category: str) -> dict[str, list[SampleRef]]:
    """List one MVTec AD 2 category: {"train", "validation" (official, normal), "test" (test_public)}.

    The private test sets are never listed: they carry no labels. A missing test_public gives an
    empty "test" (a fit needs none); a bad image without its mask is an error naming both.
    """
    folder = category_root(root, category)
    train = [SampleRef(p, 0, "good", category) for p in images_in(folder / "train" / "good", "normal training images")]
    validation = good_refs(folder / "validation" / "good", category)
    test = good_refs(folder / PUBLIC_TEST / "good", category)
    bad = folder / PUBLIC_TEST / "bad"
    if bad.is_dir():
        gt = folder / PUBLIC_TEST / "ground_truth" / "bad"
        for p in list_images(bad):
            mask = gt / f"{p.stem}_mask.png"
            if not mask.is_file():
                raise OddspotError(f"{p}: its mask {mask} is missing; add it or remove the image")
            test.append(SampleRef(p, 1, "bad", category, mask))
    return {"train": train, "validation": validation, "test": test}
