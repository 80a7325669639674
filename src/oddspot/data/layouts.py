"""The inspection dataset layouts by name, and which one a folder holds.

Every reader returns the same listing, `{"train": [...], "test": [...]}` plus `"validation"` where
the dataset ships an official one (MVTec AD 2, MVTec LOCO AD), which `data.splits` turns into a
split manifest. `open_dataset` picks the reader (named, or detected from the folder contents),
resolves the category and says which folder the manifest's file names are relative to.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oddspot.choices import INSPECT_LAYOUTS
from oddspot.data import btech, ksdd2, loco, mvtec_ad2, visa
from oddspot.data.mvtec import SampleRef, categories, category_root, check_root, folder_root, read_folder, read_mvtec
from oddspot.errors import OddspotError

Refs = dict[str, list[SampleRef]]


@dataclass(frozen=True)
class Layout:
    """One dataset layout: how to list its categories, read one, and where its manifest keys start."""

    name: str
    title: str
    expected: str
    categories: Callable[[Path], list[str]]
    read: Callable[[Path, str], Refs]
    key_root: Callable[[Path, str], Path]


def _categories_where(root: Path, is_category: Callable[[Path], bool]) -> list[str]:
    """The sub-folders of `root` that `is_category` accepts, sorted."""
    return sorted(p.name for p in check_root(root).iterdir() if p.is_dir() and not p.name.startswith(".") and is_category(p))


LAYOUTS: dict[str, Layout] = {
    "mvtec": Layout("mvtec", "MVTec AD", "<root>/<category>/train/good, test/<defect>, ground_truth/<defect>/<stem>_mask.png",
                    categories, read_mvtec, category_root),
    "mvtec_ad2": Layout("mvtec_ad2", "MVTec AD 2", "<root>/<category>/train/good, validation/good, test_public/{good,bad}, "
                        "test_public/ground_truth/bad/<stem>_mask.png", lambda root: _categories_where(root, mvtec_ad2.is_category),
                        mvtec_ad2.read_mvtec_ad2, category_root),
    "visa": Layout("visa", "VisA", "<root>/<category>/Data/Images/{Normal,Anomaly}, Data/Masks/Anomaly, "
                   "<root>/split_csv/1cls.csv", visa.categories, visa.read_visa, lambda root, cat: Path(root) / cat),
    "loco": Layout("loco", "MVTec LOCO AD", "<root>/<category>/train/good, validation/good, test/{good,logical_anomalies,"
                   "structural_anomalies}, ground_truth/<family>/<stem>/000.png", lambda root: _categories_where(root, loco.is_category),
                   loco.read_loco, category_root),
    "btech": Layout("btech", "BTech (BTAD)", "<root>/<product>/train/ok, test/{ok,ko}, ground_truth/ko/<stem>.<ext>",
                    btech.categories, btech.read_btech, lambda root, cat: category_root(root, cat, btech.MARKER)),
    "ksdd2": Layout("ksdd2", "Kolektor SDD2", "<root>/{train,test}/<id>.png beside <id>_GT.png",
                    lambda root: [ksdd2.CATEGORY], ksdd2.read_ksdd2, lambda root, cat: check_root(root)),
}


@dataclass(frozen=True)
class InspectData:
    """One category of a dataset, listed: its layout, its samples, and the folder manifest keys are relative to.

    `source` holds the facts a run records to find the same data again (layout, data, category,
    and for the folder layout its abnormal and masks folders)."""

    layout: str
    category: str
    root: Path
    refs: Refs
    source: dict[str, Any] = field(default_factory=dict)


def detect(data: str | Path) -> str:
    """The layout of the folder `data`, from its contents; a one-line error when none or several match."""
    root = check_root(data)
    found: set[str] = set()
    if (root / visa.SPLIT_CSV).is_file():
        found.add("visa")
    if ksdd2.is_dataset(root):
        found.add("ksdd2")
    for child in (p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if mvtec_ad2.is_category(child):
            found.add("mvtec_ad2")
        elif loco.is_category(child):
            found.add("loco")
        elif (child / "train" / "good").is_dir():
            found.add("mvtec")
        if (child / btech.MARKER).is_dir():
            found.add("btech")
    if len(found) == 1:
        return found.pop()
    if found:
        raise OddspotError(f"{root}: holds several layouts ({', '.join(sorted(found))}); pick one with --layout")
    if root.name in mvtec_ad2.PRIVATE_TESTS:
        raise OddspotError(f"{root}: an unlabelled MVTec AD 2 test set; score it with `oddspot inspect predict RUN {root} "
                           "-o OUT`, it cannot be fitted on or evaluated")
    if (root / "train" / "good").is_dir() or (root / btech.MARKER).is_dir():
        raise OddspotError(f"{root}: looks like one category folder; pass its parent folder with --category {root.name}")
    raise OddspotError(f"{root}: no known dataset layout found ({', '.join(INSPECT_LAYOUTS)}); pass --layout, or --normal "
                       "and --abnormal for plain folders of images (see docs/datasets.md)")


def choose_category(layout: Layout, root: Path, category: str | None) -> str:
    """`category`, or the only category of the dataset when it is None (else a one-line error listing them)."""
    known = layout.categories(root)
    if layout.name == "ksdd2" and category not in (None, ksdd2.CATEGORY):
        raise OddspotError(f"--category {category!r}: Kolektor SDD2 has no categories; leave out --category")
    if category is not None:
        return category
    if len(known) == 1:
        return known[0]
    hint = f"choose from: {', '.join(known)}" if known else f"expected {layout.expected}"
    raise OddspotError(f"{root}: pass --category ({layout.title} layout); {hint}")


def _refuse_private(folder: Path) -> None:
    if folder.name in mvtec_ad2.PRIVATE_TESTS and mvtec_ad2.is_category(folder.parent):
        raise OddspotError(f"{folder}: an unlabelled MVTec AD 2 test set; score it with `oddspot inspect predict RUN "
                           f"{folder} -o OUT`, it cannot be fitted on or evaluated")


def open_dataset(data: str | Path, category: str | None = None, layout: str | None = None,
                 abnormal: str | Path | None = None, masks: str | Path | None = None) -> InspectData:
    """List one category of the dataset at `data`, in `layout` (None: detected from the folder).

    With layout "folder" (or `abnormal`/`masks` given), `data` is the folder of normal images and
    `abnormal`/`masks` the optional folders of abnormal images and their masks (`mvtec.read_folder`).
    """
    if layout is not None and layout not in INSPECT_LAYOUTS:
        raise OddspotError(f"--layout {layout!r:.40} unknown; use one of {', '.join(INSPECT_LAYOUTS)}")
    if layout is None and (abnormal is not None or masks is not None):
        layout = "folder"
    if layout == "folder":
        for folder in (data, abnormal, masks):
            if folder is not None:
                _refuse_private(Path(folder))
        name = category or "folder"
        refs = read_folder(data, abnormal, masks, name)
        source = {"layout": "folder", "data": str(data), "category": name,
                  "abnormal": None if abnormal is None else str(abnormal), "masks": None if masks is None else str(masks)}
        return InspectData("folder", name, folder_root(data, abnormal), refs, source)
    if abnormal is not None or masks is not None:
        raise OddspotError(f"--abnormal and --masks belong to the folder layout, not --layout {layout}; leave them out")
    root = check_root(data)
    _refuse_private(root)
    spec = LAYOUTS[layout or detect(root)]
    name = choose_category(spec, root, category)
    refs = spec.read(root, name)
    source = {"layout": spec.name, "data": str(data), "category": name}
    return InspectData(spec.name, name, spec.key_root(root, name), refs, source)
