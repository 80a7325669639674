"""UCSD Ped1 and Ped2: `UCSDpedN/Train/TrainNNN/NNN.tif`, `UCSDpedN/Test/TestNNN/NNN.tif` (1-based frame
names), pixel masks in `Test/TestNNN_gt/*.bmp` and frame intervals in `Test/UCSDpedN.m`.

The `.m` file of the original archive lists, per test clip in order, 1-based inclusive anomalous
frame ranges, possibly several (`TestVideoFile{end+1}.gt_frame = [5:90, 140:200];`).

- Ped2: every test clip has a `_gt` folder; a frame is anomalous when any pixel of its mask is set.
  A clip without one takes its intervals from `UCSDped2.m`, when it is there.
- Ped1: only 10 of the 36 test clips have `_gt` masks, so the frame labels of every clip come from
  `UCSDped1.m` (the dataset's frame-level ground truth); the masks label a clip only when the
  `.m` file is absent.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from oddspot.data.avenue import FrameFolderVideo, Video, labels_from_intervals, list_frame_files, natural_key
from oddspot.data.image_io import read_mask
from oddspot.errors import OddspotError

UCSD_SETS = ("ped1", "ped2")


def _folder_name(dataset: str) -> str:
    if dataset not in UCSD_SETS:
        raise OddspotError(f"UCSD set {dataset!r} unknown; use one of {', '.join(UCSD_SETS)}")
    return f"UCSDped{dataset[-1]}"


def find_ucsd_root(root: str | Path, dataset: str = "ped2") -> Path:
    """The folder that holds Train/ and Test/ of `dataset` ('ped1' or 'ped2'): `root` or `root/UCSDpedN`."""
    root, name = Path(root), _folder_name(dataset)
    for cand in (root, root / name):
        if (cand / "Train").is_dir() and (cand / "Test").is_dir():
            return cand
    raise OddspotError(f"{root}: not a UCSD {dataset.capitalize()} folder; expected Train/ and Test/ "
                       f"(or {name}/Train, {name}/Test)")


def find_ped2_root(root: str | Path) -> Path:
    """The folder that holds Train/ and Test/ of Ped2 (either `root` itself or `root/UCSDped2`)."""
    return find_ucsd_root(root, "ped2")


def which_ucsd(root: str | Path) -> str | None:
    """'ped1' or 'ped2' when `root` looks like that UCSD set, None when it is neither.

    A root holding Train/ and Test/ directly is Ped1 when it is named UCSDped1 or its Test/ holds
    UCSDped1.m, else Ped2. A root holding both UCSDped1/ and UCSDped2/ is ambiguous: an error.
    """
    root = Path(root)
    if (root / "Train").is_dir() and (root / "Test").is_dir():
        return "ped1" if root.name == "UCSDped1" or (root / "Test" / "UCSDped1.m").is_file() else "ped2"
    found = [d for d in UCSD_SETS if (root / _folder_name(d) / "Train").is_dir() and (root / _folder_name(d) / "Test").is_dir()]
    if len(found) > 1:
        raise OddspotError(f"{root}: holds both UCSDped1/ and UCSDped2/; pass --layout ped1 or --layout ped2")
    return found[0] if found else None


def is_ped2(root: str | Path) -> bool:
    """True when `root` looks like a UCSD Ped2 folder."""
    try:
        find_ped2_root(root)
    except OddspotError:
        return False
    return True


def read_m_file_intervals(path: Path) -> list[list[tuple[int, int]]]:
    """Parse `TestVideoFile{end+1}.gt_frame = [61:180, 200:220];` lines -> per video 1-indexed intervals."""
    out: list[list[tuple[int, int]]] = []
    for m in re.finditer(r"gt_frame\s*=\s*\[([^\]]*)\]", path.read_text(errors="replace")):
        out.append([(int(a), int(b)) for a, b in re.findall(r"(\d+)\s*:\s*(\d+)", m.group(1))])
    return out


def _mask_labels(gt_dir: Path, num_frames: int) -> np.ndarray:
    files = list_frame_files(gt_dir)
    if len(files) != num_frames:
        raise OddspotError(f"{gt_dir}: {len(files)} masks for {num_frames} frames; every frame needs a mask")
    return np.array([int(read_mask(f).any()) for f in files], dtype=np.int8)


def read_ucsd(root: str | Path, split: str, dataset: str = "ped2", cache_dir: Path | None = None) -> list[Video]:
    """UCSD Ped1 or Ped2 clips of a split ('train' or 'test'); test clips carry per-frame labels
    (see the module docstring for where they come from)."""
    base = find_ucsd_root(root, dataset)
    prefix = "Train" if split == "train" else "Test"
    folder = base / prefix
    dirs = sorted((d for d in folder.iterdir() if d.is_dir() and re.fullmatch(rf"{prefix}\d+", d.name)), key=natural_key)
    if not dirs:
        raise OddspotError(f"{folder}: no {prefix}NNN folders found")
    videos: list[Video] = [FrameFolderVideo(d.name, d, cache_dir=cache_dir) for d in dirs]
    if split == "train":
        return videos
    m_file = folder / f"{_folder_name(dataset)}.m"
    if not m_file.is_file():
        m_files = sorted(p for p in folder.glob("*.m") if not p.name.startswith("."))
        m_file = m_files[0] if m_files else m_file
    m_intervals = read_m_file_intervals(m_file) if m_file.is_file() else []
    masks_first = dataset == "ped2"
    if not masks_first and m_intervals and len(m_intervals) != len(videos):
        raise OddspotError(f"{m_file}: intervals for {len(m_intervals)} clips but {folder} has {len(videos)} Test folders; "
                           "check that the .m file belongs to these clips")
    for i, v in enumerate(videos):
        gt_dir = folder / f"{v.video_id}_gt"
        from_masks = gt_dir.is_dir() and (masks_first or not m_intervals)
        if from_masks:
            v.set_ground_truth(lambda g=gt_dir, vid=v: _mask_labels(g, len(vid)))
        elif i < len(m_intervals):
            v.set_ground_truth(lambda iv=m_intervals[i], vid=v: labels_from_intervals(iv, len(vid), index_base=1))
        else:
            raise OddspotError(f"{gt_dir}: ground truth missing and no {m_file.name} intervals; every test clip needs labels")
    return videos


def read_ped2(root: str | Path, split: str, cache_dir: Path | None = None) -> list[Video]:
    """UCSD Ped2 videos of a split ('train' or 'test'); test videos carry per-frame labels."""
    return read_ucsd(root, split, "ped2", cache_dir=cache_dir)


def read_ped1(root: str | Path, split: str, cache_dir: Path | None = None) -> list[Video]:
    """UCSD Ped1 videos of a split ('train' or 'test'); test labels from UCSDped1.m."""
    return read_ucsd(root, split, "ped1", cache_dir=cache_dir)
