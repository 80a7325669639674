"""Open a video dataset folder of any supported layout (Avenue .avi, UCSD Ped2, frame folders)."""

from __future__ import annotations

from pathlib import Path

from oddspot.data.avenue import Video, read_avenue, read_frame_folders
from oddspot.data.ped2 import is_ped2, read_ped2
from oddspot.errors import OddspotError

LAYOUTS = ("auto", "avenue", "ped2", "frames")
SPLITS = ("train", "test")


def detect_layout(root: str | Path) -> str:
    """'avenue' (training_videos/), 'ped2' (Train/ + Test/) or 'frames' (training/frames/)."""
    root = Path(root)
    if not root.is_dir():
        raise OddspotError(f"{root}: not a folder; pass the dataset root")
    if (root / "training_videos").is_dir() or (root / "testing_videos").is_dir():
        return "avenue"
    if is_ped2(root):
        return "ped2"
    if (root / "training" / "frames").is_dir() or (root / "testing" / "frames").is_dir():
        return "frames"
    raise OddspotError(
        f"{root}: layout not recognised; expected Avenue (training_videos/), UCSD Ped2 (Train/, Test/) "
        "or frame folders (training/frames/<video>/)"
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
    if kind == "ped2":
        return read_ped2(root, split, cache_dir=cache_dir)
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
