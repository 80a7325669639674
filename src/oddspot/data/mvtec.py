"""Readers for the MVTec AD layout and for a generic good / bad / masks folder layout.

Readers list samples lazily (paths + labels); pixels are decoded only when a Sample is loaded,
so a dataset of thousands of large images costs nothing until it is used.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from oddspot.data.image_io import list_images, read_image, read_mask
from oddspot.data.sample import Sample
from oddspot.errors import OddspotError


@dataclass(frozen=True)
class SampleRef:
    """Where one sample lives on disk, and what is known about it before decoding."""

    path: Path
    label: int
    defect_type: str
    category: str
    mask_path: Path | None = None

    def key(self, root: Path) -> str:
        """Stable identifier of the sample inside its dataset root (used by split manifests)."""
        return self.path.relative_to(root).as_posix()

    def load(self) -> Sample:
        """Decode the image (and mask, when the sample has a mask file; otherwise mask is None)."""
        image = read_image(self.path)
        mask = read_mask(self.mask_path, shape=image.shape[:2]) if self.mask_path is not None else None
        meta = {"path": str(self.path), "category": self.category, "defect_type": self.defect_type}
        return Sample(image=image, mask=mask, label=self.label, meta=meta)


def categories(root: str | Path) -> list[str]:
    """Names of the categories (sub-folders with a train/good folder) under an MVTec AD root."""
    root = Path(root)
    if not root.is_dir():
        raise OddspotError(f"{root}: dataset folder not found; check the path")
    return sorted(p.name for p in root.iterdir() if (p / "train" / "good").is_dir())


def category_root(root: str | Path, category: str) -> Path:
    """Folder of one category, with a clear error when it does not exist."""
    root = Path(root)
    if not root.is_dir():
        raise OddspotError(f"{root}: dataset folder not found; check the path")
    folder = root / category
    if not (folder / "train" / "good").is_dir():
        known = categories(root)
        hint = f"choose from: {', '.join(known)}" if known else "expected <root>/<category>/train/good/*.png"
        raise OddspotError(f"category {category!r} not found under {root}; {hint}")
    return folder


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
        for defect_dir in sorted(p for p in test_dir.iterdir() if p.is_dir()):
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


def read_folder(good: str | Path, bad: str | Path | None = None, masks: str | Path | None = None,
                category: str = "folder") -> dict[str, list[SampleRef]]:
    """Generic layout: a folder of good images, optionally a folder of bad images and of their masks.

    Masks are matched by file stem (`name.png` or `name_mask.png`). All good images are "train";
    bad images are "test" (callers split further with a manifest).
    """
    good = Path(good)
    if not good.is_dir():
        raise OddspotError(f"{good}: good-images folder not found; check the path")
    train = [SampleRef(p, 0, "good", category) for p in list_images(good)]
    if not train:
        raise OddspotError(f"{good}: no images found; add good images (png/jpg)")
    test: list[SampleRef] = []
    if bad is not None:
        bad = Path(bad)
        if not bad.is_dir():
            raise OddspotError(f"{bad}: bad-images folder not found; check the path")
        mask_dir = Path(masks) if masks is not None else None
        if mask_dir is not None and not mask_dir.is_dir():
            raise OddspotError(f"{mask_dir}: mask folder not found; check the path")
        for p in list_images(bad):
            mask = None
            if mask_dir is not None:
                for cand in (mask_dir / f"{p.stem}.png", mask_dir / f"{p.stem}_mask.png"):
                    if cand.exists():
                        mask = cand
                        break
            test.append(SampleRef(p, 1, "bad", category, mask))
    return {"train": train, "test": test}
