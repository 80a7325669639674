"""Reader for the VisA layout, split by its official CSV.

    <root>/<cat>/Data/Images/Normal/*.JPG, <root>/<cat>/Data/Images/Anomaly/*.JPG
    <root>/<cat>/Data/Masks/Anomaly/*.png        (same stem as the anomalous image)
    <root>/split_csv/1cls.csv                    object,split,label,image,mask

The CSV rows name the files (paths relative to <root>, e.g. `candle/Data/Images/Anomaly/000.JPG`),
the split (train / test) and the label (normal / anomaly; the mask column is empty for normal
images). Raw VisA masks are not 0/255: any non-zero pixel is anomalous. Normal and Anomaly reuse
numbers; keys stay unique because they keep the folder (`Data/Images/Normal/000.JPG`).
"""

from __future__ import annotations

import csv
from pathlib import Path

from oddspot.data.mvtec import SampleRef, check_root
from oddspot.errors import OddspotError

SPLIT_CSV = Path("split_csv") / "1cls.csv"
COLUMNS = ("object", "split", "label", "image", "mask")
LABELS = {"normal": 0, "anomaly": 1}
SPLITS = ("train", "test")


def split_csv(root: str | Path) -> Path:
    """The official split file of a VisA root, with a one-line error when it is missing."""
    path = check_root(root) / SPLIT_CSV
    if not path.is_file():
        raise OddspotError(f"{path}: VisA split file not found; VisA ships split_csv/1cls.csv beside the category folders")
    return path


def read_rows(root: str | Path) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of split_csv/1cls.csv, checked: its columns, a known split and label on every row."""
    path = split_csv(root)
    try:
        with path.open(newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f, restval="")
            header = tuple(reader.fieldnames or ())
            rows = list(reader)
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise OddspotError(f"{path}: cannot read the split file ({exc}); restore it from the VisA archive") from None
    if header[:len(COLUMNS)] != COLUMNS:
        raise OddspotError(f"{path}: columns are {','.join(header)}, expected {','.join(COLUMNS)}")
    for line, row in enumerate(rows, start=2):
        if row["split"] not in SPLITS or row["label"] not in LABELS or not row["image"]:
            raise OddspotError(f"{path}, line {line}: split must be train or test, label normal or anomaly, and image "
                               f"a path; got {row['split']!r:.20}, {row['label']!r:.20}, {row['image']!r:.60}")
    return list(enumerate(rows, start=2))


def categories(root: str | Path) -> list[str]:
    """The objects named in the split file."""
    return sorted({row["object"] for _, row in read_rows(root)})


def read_visa(root: str | Path, category: str) -> dict[str, list[SampleRef]]:
    """List one VisA object under the official split: {"train": [normal...], "test": [normal and anomalous...]}.

    Every file the CSV names must exist inside <root>/<category>; an anomalous image needs a
    mask; an anomalous image in the train split is refused (training is on normal images only).
    """
    root = check_root(root)
    path = split_csv(root)
    rows = [(line, row) for line, row in read_rows(root) if row["object"] == category]
    if not rows:
        raise OddspotError(f"category {category!r} not in {path}; choose from: {', '.join(categories(root))}")
    refs: dict[str, list[SampleRef]] = {"train": [], "test": []}
    seen: set[Path] = set()
    for line, row in rows:
        for name in (row["image"], row["mask"]):
            parts = Path(name).parts
            if name and (parts[0] != category or ".." in parts):
                raise OddspotError(f"{path}, line {line}: {name} is not inside {category}/; fix the split file")
            if name and not (root / name).is_file():
                raise OddspotError(f"{root / name}: listed in {path} but missing; restore it from the VisA archive")
        image = root / row["image"]
        mask = root / row["mask"] if row["mask"] else None
        if image in seen:
            raise OddspotError(f"{path}: {row['image']} is listed twice; a file belongs to one split")
        seen.add(image)
        label = LABELS[row["label"]]
        if label == 1 and row["split"] == "train":
            raise OddspotError(f"{path}: anomalous {row['image']} is in the train split; training uses normal images only")
        if label == 1 and mask is None:
            raise OddspotError(f"{path}: anomalous {row['image']} has no mask; add its Data/Masks/Anomaly file")
        if label == 0 and mask is not None:
            raise OddspotError(f"{path}: normal {row['image']} has a mask; normal images have an empty mask column")
        refs[row["split"]].append(SampleRef(image, label, "good" if label == 0 else "anomaly", category, mask))
    refs["train"].sort(key=lambda r: r.path)
    refs["test"].sort(key=lambda r: r.path)
    return refs
