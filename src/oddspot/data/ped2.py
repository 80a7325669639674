"""UCSD Ped2: `UCSDped2/Train/TrainNNN/*.tif`, `UCSDped2/Test/TestNNN/*.tif`, masks in `Test/TestNNN_gt/*.bmp`.

A test frame is anomalous when any pixel of its mask is set. Test videos without a `_gt` folder
take their frame intervals from the `UCSDped2.m` file of the original archive
(`TestVideoFile{end+1}.gt_frame = [61:180];`), when it is there.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from oddspot.data.avenue import FrameFolderVideo, Video, labels_from_intervals, list_frame_files, natural_key
from oddspot.data.image_io import read_mask
from oddspot.errors import OddspotError


def find_ped2_root(root: str | Path) -> Path:
    """The folder that holds Train/ and Test/ (either `root` itself or `root/UCSDped2`)."""
    root = Path(root)
    for cand in (root, root / "UCSDped2"):
        if (cand / "Train").is_dir() and (cand / "Test").is_dir():
            return cand
    raise OddspotError(f"{root}: not a UCSD Ped2 folder; expected Train/ and Test/ (or UCSDped2/Train, UCSDped2/Test)")


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


def read_ped2(root: str | Path, split: str, cache_dir: Path | None = None) -> list[Video]:
    """UCSD Ped2 videos of a split ('train' or 'test'); test videos carry per-frame labels."""
    base = find_ped2_root(root)
    folder = base / ("Train" if split == "train" else "Test")
    prefix = "Train" if split == "train" else "Test"
    dirs = sorted(
        (d for d in folder.iterdir() if d.is_dir() and re.fullmatch(rf"{prefix}\d+", d.name)),
        key=natural_key,
    )
    if not dirs:
        raise OddspotError(f"{folder}: no {prefix}NNN folders found")
    videos: list[Video] = [FrameFolderVideo(d.name, d, cache_dir=cache_dir) for d in dirs]
    if split == "train":
        return videos
    m_files = sorted(folder.glob("*.m"))
    m_intervals = read_m_file_intervals(m_files[0]) if m_files else []
    for i, v in enumerate(videos):
        gt_dir = folder / f"{v.video_id}_gt"
        if gt_dir.is_dir():
            v.set_ground_truth(lambda g=gt_dir, vid=v: _mask_labels(g, len(vid)))
        elif i < len(m_intervals):
            v.set_ground_truth(lambda iv=m_intervals[i], vid=v: labels_from_intervals(iv, len(vid), index_base=1))
        else:
            raise OddspotError(f"{gt_dir}: ground truth missing and no UCSDped2.m intervals; every test video needs labels")
    return videos
