"""Reader for the BTech (BTAD) layout: products `01`, `02`, `03`.

    <product>/train/ok/        normal training images
    <product>/test/ok/, test/ko/   normal and defective test images
    <product>/ground_truth/ko/     one mask per defective image, same stem (extensions may differ,
                                   e.g. a .bmp image with a .png mask)

Masks are binarized with > 0.
"""

from __future__ import annotations

from pathlib import Path

from oddspot.data.image_io import list_images
from oddspot.data.mvtec import SampleRef, category_root, good_refs, images_in, mask_by_stem
from oddspot.data.mvtec import categories as categories_with
from oddspot.errors import OddspotError

MARKER = "train/ok"


def categories(root: str | Path) -> list[str]:
    """The products (folders holding train/ok) under a BTech root."""
    return categories_with(root, MARKER)


def read_btech(root: str | Path, category: str) -> dict[str, list[SampleRef]]:
    """List one BTech product: {"train": [ok...], "test": [ok and ko...]}; a ko image needs its mask."""
    folder = category_root(root, category, MARKER)
    train = [SampleRef(p, 0, "good", category) for p in images_in(folder / "train" / "ok", "normal training images")]
    test = good_refs(folder / "test" / "ok", category)
    ko = folder / "test" / "ko"
    for p in list_images(ko) if ko.is_dir() else []:
        mask = mask_by_stem(p, folder / "ground_truth" / "ko", ("",))
        if mask is None:
            raise OddspotError(f"{p}: no mask {p.stem}.<png|bmp> in {folder / 'ground_truth' / 'ko'}; add it or remove the image")
        test.append(SampleRef(p, 1, "ko", category, mask))
    return {"train": train, "test": test}
