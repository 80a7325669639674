"""Open video datasets: labelled layouts (Avenue .avi, ShanghaiTech Campus, UCSD Ped1 and Ped2, frame folders)
and unlabeled inputs."""

from __future__ import annotations

from pathlib import Path

from oddspot.data.avenue import (
    AviVideo,
    FrameFolderVideo,
    Video,
    is_video_file,
    list_frame_files,
    natural_key,
    read_avenue,
    read_frame_folders,
)
from oddspot.choices import VIDEO_LAYOUTS
from oddspot.data.ped2 import read_ucsd, which_ucsd
from oddspot.data.shanghaitech import is_shanghaitech, read_shanghaitech
from oddspot.errors import OddspotError

LAYOUTS = VIDEO_LAYOUTS
SPLITS = ("train", "test")


def detect_layout(root: str | Path) -> str:
    """'avenue' (training_videos/), 'shanghaitech' (training/videos/ or testing/test_frame_mask/),
    'ped1' / 'ped2' (Train/ + Test/, see `data.ped2.which_ucsd`) or 'frames' (training/frames/)."""
    root = Path(root)
    if not root.is_dir():
        raise OddspotError(f"{root}: not a folder; pass the dataset root")
    if (root / "training_videos").is_dir() or (root / "testing_videos").is_dir():
        return "avenue"
    if is_shanghaitech(root):
        return "shanghaitech"
    ucsd = which_ucsd(root)
    if ucsd is not None:
        return ucsd
    if (root / "training" / "frames").is_dir() or (root / "testing" / "frames").is_dir():
        return "frames"
    raise OddspotError(
        f"{root}: layout not recognised; expected Avenue (training_videos/), ShanghaiTech (training/videos/), "
        "UCSD Ped1/Ped2 (Train/, Test/) or frame folders (training/frames/<video>/)"
    )


def open_video_dataset(
    root: str | Path, split: str, layout: str = "auto", labels: str | Path | None = None, cache_dir: Path | None = None
) -> list[Video]:
    """The videos of `split` ('train' or 'test'); test videos carry per-frame labels."""
    if split not in SPLITS:
        raise OddspotError(f"split {split!r} unknown; use 'train' or 'test'")
    if layout not in LAYOUTS:
        raise OddspotError(f"layout {layout!r} unknown; use one of {', '.join(LAYOUTS)}")
    kind = detect_layout(root) if layout == "auto" else layout
    if labels is not None and kind != "frames":
        raise OddspotError(f"--labels applies to frame-folder datasets only; {root} is {kind}")
    if kind == "avenue":
        return read_avenue(root, split, cache_dir=cache_dir)
    if kind == "shanghaitech":
        return read_shanghaitech(root, split, cache_dir=cache_dir)
    if kind in ("ped1", "ped2"):
        return read_ucsd(root, split, kind, cache_dir=cache_dir)
    return read_frame_folders(root, split, labels_file=labels, cache_dir=cache_dir)


def decode_videos(videos: list[Video], size: tuple[int, int]) -> tuple[list[Video], list[dict]]:
    """Decode every video at `size` (cached in the Video); a video that fails is reported, not dropped silently.

    Returns the videos that decoded and, for the others, {'video': id, 'path': ..., 'error': message}.
    """
    good, skipped = [], []
    for v in videos:
        try:
            v.frames(size)
            _ = v.labels
        except OddspotError as exc:
            skipped.append({"video": v.video_id, "path": str(v.path), "error": str(exc)})
            continue
        good.append(v)
    return good, skipped


def open_videos(path: str | Path, cache_dir: Path | None = None) -> tuple[list[Video], list[dict]]:
    """Unlabeled videos to score: `path` is a video file, a folder of frame images (one video), or a
    folder of frame folders and/or video files (several videos, ids from their names).

    Returns the videos and, for entries that cannot be a video (a folder without frame images),
    {'video': id, 'path': ..., 'error': message}; decoding errors surface later, per video.
    """
    path = Path(path)
    if path.is_file():
        if not is_video_file(path):
            raise OddspotError(f"{path}: not a video file (.avi, .mp4, .mov, .mkv); pass a video or a folder of frames")
        return [AviVideo(path.stem, path, cache_dir=cache_dir)], []
    if not path.is_dir():
        raise OddspotError(f"{path}: no such file or folder; pass a video, a folder of frames or a folder of videos")
    frames = list_frame_files(path)
    if frames:
        return [FrameFolderVideo(path.name, path, files=frames, cache_dir=cache_dir)], []
    videos: list[Video] = []
    errors: list[dict] = []
    for entry in sorted((p for p in path.iterdir() if not p.name.startswith(".")), key=natural_key):
        if entry.is_dir():
            try:
                videos.append(FrameFolderVideo(entry.name, entry, cache_dir=cache_dir))
            except OddspotError as exc:
                errors.append({"video": entry.name, "path": str(entry), "error": str(exc)})
        elif is_video_file(entry):
            videos.append(AviVideo(entry.stem, entry, cache_dir=cache_dir))
    ids = [v.video_id for v in videos]
    clash = sorted({i for i in ids if ids.count(i) > 1})
    if clash:
        raise OddspotError(f"{path}: several entries are named {clash[0]!r} (a folder and a video file?); rename one")
    if not videos and not errors:
        raise OddspotError(f"{path}: no frame images, frame folders or video files found")
    return videos, errors
