"""Readers for the MVTec AD layout and for a generic normal / abnormal / masks folder layout, and
`SampleRef`, the listing entry every inspection reader returns.

Readers list samples lazily (paths + labels); pixels are decoded only when a Sample is loaded,
so a dataset of thousands of large images costs nothing until it is used.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from oddspot.data.image_io import list_images, read_image, read_masks
from oddspot.data.sample import Sample
from oddspot.errors import OddspotError

# The generic folder layout holds every FOLDER_HOLDOUT-th normal image (in sorted order) out of
# training, as the normal test images: it has no test folder of normal images of its own.
FOLDER_HOLDOUT = 5


@dataclass(frozen=True)
class SampleRef:
    """Where one sample lives on disk, and what is known about it before decoding.

    `mask_path` is the ground-truth mask; `extra_masks` are further mask files of the same image
    (MVTec LOCO AD keeps one file per defect), OR-ed with it. Any non-zero mask pixel is anomalous.
    """

    path: Path
    label: int
    defect_type: str
    category: str
    mask_path: Path | None = None
    extra_masks: tuple[Path, ...] = ()

    @property
    def mask_paths(self) -> tuple[Path, ...]:
        """Every mask file of the sample (none for a sample without ground truth)."""
        return () if self.mask_path is None else (self.mask_path, *self.extra_masks)

    def key(self, root: Path) -> str:
        """Stable identifier of the sample inside its dataset root (used by split manifests)."""
        return self.path.relative_to(root).as_posix()

    def load(self) -> Sample:
        """Decode the image (and the union of its masks, when it has mask files; otherwise mask is None)."""
        image = read_image(self.path)
        mask = read_masks(self.mask_paths, shape=image.shape[:2]) if self.mask_path is not None else None
        meta = {"path": str(self.path), "category": self.category, "defect_type": self.defect_type}
        return Sample(image=image, mask=mask, label=self.label, meta=meta)


def check_root(root: str | Path) -> Path:
    """`root` as a Path, or a one-line error when it is not a folder."""
    root = Path(root)
    if not root.is_dir():
        raise OddspotError(f"{root}: dataset folder not found; check the path")
    return root


def categories(root: str | Path, marker: str = "train/good") -> list[str]:
    """Names of the categories (sub-folders holding a `marker` folder, e.g. train/good) under `root`."""
    root = check_root(root)
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and (p / marker).is_dir())


def category_root(root: str | Path, category: str, marker: str = "train/good") -> Path:
    """Folder of one category (it must hold `marker`), with a clear error when it does not exist."""
    root = check_root(root)
    folder = root / category
    if not (folder / marker).is_dir():
        known = categories(root, marker)
        hint = f"choose from: {', '.join(known)}" if known else f"expected <root>/<category>/{marker}/<images>"
        raise OddspotError(f"category {category!r} not found under {root}; {hint}")
    return folder


def images_in(folder: Path, what: str) -> list[Path]:
    """The images of a folder that must exist and hold some, else a one-line error naming it and `what`."""
    if not folder.is_dir():
        raise OddspotError(f"{folder}: folder not found; expected {what} there")
    found = list_images(folder)
    if not found:
        raise OddspotError(f"{folder}: no {what} found; add them (png/jpg/bmp)")
    return found


def good_refs(folder: Path, category: str) -> list[SampleRef]:
    """Normal samples from a folder of images (any number, including none when it does not exist)."""
    return [SampleRef(p, 0, "good", category) for p in list_images(folder)] if folder.is_dir() else []


def mask_by_stem(image: Path, mask_dir: Path, suffixes: Iterable[str] = ("", "_mask")) -> Path | None:
    """The one mask file in `mask_dir` named `<image stem><suffix>.<any image extension>`, None when
    there is none; two candidates are a one-line error naming both (never a silent pick)."""
    names = {image.stem + s for s in suffixes}
    found = [p for p in list_images(mask_dir) if p.stem in names] if mask_dir.is_dir() else []
    if len(found) > 1:
        raise OddspotError(f"{image}: two candidate masks, {found[0]} and {found[1]}; keep one")
    return found[0] if found else None


def read_mvtec(root: str | Path, category: str) -> dict[str, list[SampleRef]]:
    """List one MVTec AD category: {"train": [good...], "test": [good and defective...]}.

    Defective test images take their mask from ground_truth/<defect>/<name>_mask.png; a missing
    mask is an error naming the file, since pixel metrics would silently be wrong without it.
    """
    folder = category_root(root, category)
    train = [SampleRef(p, 0, "good", category) for p in list_images(folder / "train" / "good")]
    if not train:
        raise OddspotError(f"{folder / 'train' / 'good'}: no training images; add good images (png/jpg)")
    test: list[SampleRef] = []
    test_dir = folder / "test"
    if test_dir.is_dir():
        for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
            defect = defect_dir.name
            for p in list_images(defect_dir):
                if defect == "good":
                    test.append(SampleRef(p, 0, "good", category))
                    continue
                mask = folder / "ground_truth" / defect / f"{p.stem}_mask.png"
                if not mask.exists():
                    raise OddspotError(f"{p}: its mask {mask} is missing; add it or remove the image")
                test.append(SampleRef(p, 1, defect, category, mask))
    return {"train": train, "test": test}


def folder_root(normal: str | Path, abnormal: str | Path | None = None) -> Path:
    """The folder that split manifests of the generic layout name files relative to: the deepest
    folder holding both the normal and the abnormal folder."""
    if abnormal is None:
        return Path(normal).absolute()
    return Path(os.path.commonpath([Path(normal).absolute(), Path(abnormal).absolute()]))


def read_folder(good: str | Path, bad: str | Path | None = None, masks: str | Path | None = None,
                category: str = "folder") -> dict[str, list[SampleRef]]:
    """Generic layout: a folder of normal images, optionally a folder of abnormal images and of their masks.

    Normal images: every `FOLDER_HOLDOUT`-th one in sorted order (the 5th, 10th, ...) is a normal
    test image, the others are "train". Abnormal images are "test", defect type "bad".
    Masks (when `masks` is given) are matched by stem: the mask of `x.jpg` is `x.<ext>` or
    `x_mask.<ext>` in `masks` (any image extension). Two candidates, an abnormal image without a
    mask, and a mask that belongs to no abnormal image are one-line errors naming the files.
    """
    good = Path(good).absolute()  # absolute like `folder_root`, which the manifest keys are relative to
    if not good.is_dir():
        raise OddspotError(f"{good}: normal-images folder not found; check the path")
    normals = list_images(good)
    if not normals:
        raise OddspotError(f"{good}: no images found; add normal images (png/jpg)")
    train = [SampleRef(p, 0, "good", category) for i, p in enumerate(normals) if (i + 1) % FOLDER_HOLDOUT]
    test = [SampleRef(p, 0, "good", category) for i, p in enumerate(normals) if not (i + 1) % FOLDER_HOLDOUT]
    if bad is None:
        if masks is not None:
            raise OddspotError(f"{masks}: masks given without a folder of abnormal images; pass --abnormal too")
        return {"train": train, "test": test}
    bad = Path(bad).absolute()
    if not bad.is_dir():
        raise OddspotError(f"{bad}: abnormal-images folder not found; check the path")
    if bad.resolve() == good.resolve():
        raise OddspotError(f"{bad}: the abnormal folder is the normal folder; pass two different folders")
    abnormal = list_images(bad)
    if masks is None:
        return {"train": train, "test": test + [SampleRef(p, 1, "bad", category) for p in abnormal]}
    mask_dir = Path(masks)
    if not mask_dir.is_dir():
        raise OddspotError(f"{mask_dir}: mask folder not found; check the path")
    matched = [(p, mask_by_stem(p, mask_dir)) for p in abnormal]
    missing = [p for p, m in matched if m is None]
    if missing:
        raise OddspotError(f"{len(missing)} abnormal images have no mask in {mask_dir} (first: {missing[0].name}; expected "
                           f"{missing[0].stem}.png or {missing[0].stem}_mask.png); add the masks or leave out --masks")
    used = {m for _, m in matched}
    orphans = [p for p in list_images(mask_dir) if p not in used]
    if orphans:
        raise OddspotError(f"{len(orphans)} masks in {mask_dir} belong to no image in {bad} (first: {orphans[0].name}); "
                           "remove them or add their images")
    return {"train": train, "test": test + [SampleRef(p, 1, "bad", category, m) for p, m in matched]}

