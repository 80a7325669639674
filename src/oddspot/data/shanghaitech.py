"""ShanghaiTech Campus: training videos as .avi files, test clips as frame folders with .npy ground truth.

- `training/videos/SS_VVV.avi` (scene, video: `01_001.avi`), normal only (or, repackaged,
  `training/frames/SS_VVV/` frame folders);
- `testing/frames/SS_VVVV/NNN.jpg` (`01_0014/000.jpg`), one folder per test clip;
- `testing/test_frame_mask/SS_VVVV.npy`: 1-D 0/1 per frame, in sorted-frame order;
- `testing/test_pixel_mask/SS_VVVV.npy`: T x H x W masks, frame on axis 0 (a frame is anomalous
  when any pixel is set); used for a clip's labels only when its frame mask is missing.

Some decoders misread the training .avi files (a wrong frame count in the header, frames dropped):
a video's length is the count of frames decoded (`AviVideo.declared_frames` is the header's, which
`video.pipeline.fit` reports when it differs). A test clip whose frame count differs from its label
length is a one-line error naming the clip and the label file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from oddspot.data.avenue import AviVideo, FrameFolderVideo, Video, is_video_file, natural_key
from oddspot.errors import OddspotError

TRAIN_VIDEOS = Path("training") / "videos"
TRAIN_FRAMES = Path("training") / "frames"
TEST_FRAMES = Path("testing") / "frames"
FRAME_MASKS = Path("testing") / "test_frame_mask"
PIXEL_MASKS = Path("testing") / "test_pixel_mask"


def is_shanghaitech(root: str | Path) -> bool:
    """True when `root` holds training/videos/ or testing/test_frame_mask/ (the ShanghaiTech layout)."""
    root = Path(root)
    return (root / TRAIN_VIDEOS).is_dir() or (root / FRAME_MASKS).is_dir()


def _load_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise OddspotError(f"{path}: cannot read .npy file ({exc}); replace the file") from None


def read_frame_mask(path: str | Path) -> np.ndarray:
    """`test_frame_mask/SS_VVVV.npy` -> per-frame 0/1 int8 labels (checked: 1-D, values 0 or 1)."""
    path = Path(path)
    arr = _load_npy(path)
    if arr.ndim != 1 or arr.dtype.kind not in "biuf":
        raise OddspotError(f"{path}: expected a 1-D array of 0/1 per frame, got {arr.dtype} of shape {list(arr.shape)}")
    if not np.isin(arr, (0, 1)).all():
        raise OddspotError(f"{path}: frame labels must be 0 or 1; found {sorted(set(np.unique(arr).tolist()) - {0, 1})[:3]}")
    return arr.astype(np.int8)


def read_pixel_mask_labels(path: str | Path) -> np.ndarray:
    """`test_pixel_mask/SS_VVVV.npy` (T x H x W) -> per-frame 0/1 labels (1 when any pixel of the frame is set)."""
    path = Path(path)
    arr = _load_npy(path)
    if arr.ndim != 3 or arr.dtype.kind not in "biuf":
        raise OddspotError(f"{path}: expected T x H x W masks (frame on axis 0), got {arr.dtype} of shape {list(arr.shape)}")
    return arr.reshape(arr.shape[0], -1).any(axis=1).astype(np.int8)


def _checked(load, path: Path, video: Video) -> np.ndarray:
    """Labels from `load(path)`, checked against the clip's frame count (one-line error naming both)."""
    labels = load(path)
    n = len(video)
    if labels.shape[0] != n:
        raise OddspotError(f"{video.path}: {n} frames but {path} labels {labels.shape[0]}; "
                           "check that the clip and its ground truth belong together")
    return labels


def read_shanghaitech(root: str | Path, split: str, cache_dir: Path | None = None) -> list[Video]:
    """ShanghaiTech Campus videos of a split ('train': the .avi files; 'test': the frame folders with labels)."""
    root = Path(root)
    if split == "train":
        folder = root / TRAIN_VIDEOS
        if not folder.is_dir() and (root / TRAIN_FRAMES).is_dir():  # repackaged: training videos as frame folders
            dirs = sorted((d for d in (root / TRAIN_FRAMES).iterdir() if d.is_dir() and not d.name.startswith(".")),
                          key=natural_key)
            return [FrameFolderVideo(d.name, d, cache_dir=cache_dir) for d in dirs]
        if not folder.is_dir():
            raise OddspotError(f"{folder}: not found; a ShanghaiTech root holds training/videos/*.avi")
        files = sorted((p for p in folder.iterdir() if is_video_file(p)), key=natural_key)
        if not files:
            raise OddspotError(f"{folder}: no .avi videos found")
        return [AviVideo(f.stem, f, cache_dir=cache_dir) for f in files]
    folder = root / TEST_FRAMES
    if not folder.is_dir():
        raise OddspotError(f"{folder}: not found; a ShanghaiTech root holds testing/frames/<clip>/")
    dirs = sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")), key=natural_key)
    if not dirs:
        raise OddspotError(f"{folder}: no clip folders found")
    videos: list[Video] = []
    for d in dirs:
        video = FrameFolderVideo(d.name, d, cache_dir=cache_dir)
        frame_mask, pixel_mask = root / FRAME_MASKS / f"{d.name}.npy", root / PIXEL_MASKS / f"{d.name}.npy"
        if frame_mask.is_file():
            video.set_ground_truth(lambda p=frame_mask, v=video: _checked(read_frame_mask, p, v))
        elif pixel_mask.is_file():
            video.set_ground_truth(lambda p=pixel_mask, v=video: _checked(read_pixel_mask_labels, p, v))
        else:
            raise OddspotError(f"{frame_mask}: ground truth for clip {d.name} missing; every test clip needs "
                               "testing/test_frame_mask/<clip>.npy")
        videos.append(video)
    return videos

