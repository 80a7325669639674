"""Videos of a fixed camera: the lazy `Video` type, CUHK Avenue (.avi + volLabel .mat) and frame folders.

A `Video` decodes its frames only when asked, resizes them to the requested size and keeps the
result in memory (and, with `cache_dir`, as a .npy file reused by later runs). Ground truth is a
per-frame 0/1 label array, optionally with named events (type, first frame, last frame).

Layouts read here:
- CUHK Avenue: `training_videos/NN.avi`, `testing_videos/NN.avi`, `testing_label_mask/N_label.mat`
  (`volLabel`: one pixel mask per frame; a frame is anomalous when any pixel is set).
- Frame folders (the common repackaging of Avenue and Ped2, and the synthetic generator's output):
  `training/frames/<video>/*.jpg|png`, `testing/frames/<video>/*`, with labels from a `.mat`
  holding `gt` (per video a 2 x K array of 1-indexed inclusive [start; end] intervals) or from a
  `labels.json` (per video `labels` per frame and optional `events`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
from PIL import Image

from oddspot.data.image_io import list_images, max_pixels, read_image
from oddspot.data.sample import Sample
from oddspot.errors import OddspotError
from oddspot.files import read_json, write_npy

Size = tuple[int, int]
VIDEO_SUFFIXES = frozenset({".avi", ".mp4", ".mov", ".mkv"})


@dataclass(frozen=True)
class Event:
    """An anomalous event: its type and its first and last frame (0-indexed, inclusive)."""

    type: str
    start: int
    end: int


def parse_size(text: str | Sequence[int] | None) -> Size | None:
    """'96x128' or (96, 128) -> (height, width); None stays None."""
    if text is None:
        return None
    if isinstance(text, str):
        m = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", text)
        if not m:
            raise OddspotError(f"size {text!r} not understood; write HEIGHTxWIDTH, e.g. 96x128")
        h, w = int(m.group(1)), int(m.group(2))
    else:
        h, w = (int(v) for v in text)
    if h < 8 or w < 8:
        raise OddspotError(f"size {h}x{w} too small; frames need at least 8x8 pixels")
    return h, w


def resize_frame(frame: np.ndarray, size: Size | None) -> np.ndarray:
    """Resize an H x W x 3 uint8 frame to (height, width) with antialiased bilinear filtering."""
    if size is None or frame.shape[:2] == tuple(size):
        return frame
    img = Image.fromarray(frame).resize((size[1], size[0]), Image.BILINEAR, reducing_gap=None)
    return np.asarray(img, dtype=np.uint8)


class Video:
    """One video: frames decoded lazily, resized on request and cached; per-frame ground truth.

    Subclasses provide `_iter_native()` (frames at the stored size, in order) and `_count()`.
    `labels` is an int8 array (1 = anomalous frame) or None when the video has no ground truth;
    it is checked against the decoded frame count (decoding to count when `_count` trusts a header).
    """

    count_from_header = False

    def __init__(
        self,
        video_id: str,
        path: Path,
        labels: np.ndarray | Callable[[], np.ndarray | None] | None = None,
        events: Sequence[Event] = (),
        cache_dir: Path | None = None,
    ) -> None:
        self.video_id = video_id
        self.path = Path(path)
        self._labels = labels
        self.events = list(events)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._frames: dict[Size | None, np.ndarray] = {}
        self._length: int | None = None
        self._decoded = False  # True once `_length` is the count of decoded frames (not a header's)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.video_id!r}, {str(self.path)!r})"

    def _iter_native(self) -> Iterator[np.ndarray]:
        raise NotImplementedError

    def _count(self) -> int:
        return sum(1 for _ in self._iter_native())

    def __len__(self) -> int:
        if self._length is None:
            self._length = next(iter(self._frames.values())).shape[0] if self._frames else self._count()
        return self._length

    @property
    def labels(self) -> np.ndarray | None:
        """Per-frame labels (int8, 1 = anomalous), loaded on first use; None when unknown."""
        if callable(self._labels):
            self._labels = self._labels()
        if self._labels is None:
            return None
        labels = np.asarray(self._labels).astype(np.int8).reshape(-1)
        n = len(self)
        if not self._decoded and (self.count_from_header or labels.shape[0] != n):
            self._length = n = sum(1 for _ in self._iter_native())  # a container header can be wrong: count
            self._decoded = True
        if labels.shape[0] != n:
            raise OddspotError(
                f"{self.path}: ground truth has {labels.shape[0]} frames but the video has {n}; "
                "check that labels and frames belong together"
            )
        self._labels = labels
        return labels

    def set_ground_truth(
        self, labels: np.ndarray | Callable[[], np.ndarray | None] | None, events: Sequence[Event] | None = None
    ) -> None:
        """Attach per-frame labels (or a function that loads them on first use) and optional events."""
        self._labels = labels
        if events is not None:
            self.events = list(events)

    def event_types(self) -> np.ndarray:
        """Per-frame event type ('' for frames outside every event), from `events`."""
        out = np.full(len(self), "", dtype=object)
        for ev in self.events:
            out[ev.start : ev.end + 1] = ev.type
        return out

    def iter_frames(self, size: Size | None = None) -> Iterator[np.ndarray]:
        """Yield frames in order, resized to (height, width), without keeping them."""
        if size in self._frames:
            yield from self._frames[size]
            return
        for frame in self._iter_native():
            yield resize_frame(frame, size)

    def frames(self, size: Size | None = None) -> np.ndarray:
        """All frames as T x H x W x 3 uint8 at `size`, decoded once and cached (memory, then disk)."""
        if size in self._frames:
            return self._frames[size]
        cache = self._cache_path(size)
        if cache is not None and cache.exists():
            arr = np.load(cache, mmap_mode="r", allow_pickle=False)
        else:
            frames = list(self.iter_frames(size))
            if not frames:
                raise OddspotError(f"{self.path}: no frames could be decoded; check the video")
            shapes = {f.shape for f in frames}
            if len(shapes) > 1:
                raise OddspotError(f"{self.path}: frames differ in size ({sorted(shapes)[:2]}); pass a frame size to resize them")
            arr = np.stack(frames)
            if cache is not None:
                write_npy(cache, arr)
        self._frames[size] = arr
        self._length, self._decoded = arr.shape[0], True
        return arr

    def release(self) -> None:
        """Drop the frames kept in memory."""
        self._frames.clear()

    def samples(self, size: Size | None = None) -> Iterator[Sample]:
        """Frames as `Sample`s with label, video id and frame index in `meta`."""
        labels = self.labels
        for i, frame in enumerate(self.iter_frames(size)):
            label = None if labels is None else int(labels[i])
            yield Sample(frame, label=label, meta={"path": str(self.path), "video_id": self.video_id, "frame_index": i})

    def _cache_path(self, size: Size | None) -> Path | None:
        if self.cache_dir is None:
            return None
        stat = self.path.stat()
        key = f"{self.path.resolve()}|{stat.st_mtime_ns}|{stat.st_size}|{size}"
        digest = hashlib.sha1(key.encode()).hexdigest()[:16]
        return self.cache_dir / f"{self.video_id}-{digest}.npy"


class FrameFolderVideo(Video):
    """A video stored as one image file per frame in a folder, ordered by the numbers in the names."""

    def __init__(self, video_id: str, folder: Path, files: Sequence[Path] | None = None, **kwargs) -> None:
        super().__init__(video_id, folder, **kwargs)
        self.files = list(files) if files is not None else list_frame_files(folder)
        if not self.files:
            raise OddspotError(f"{folder}: no frame images found; expected *.jpg, *.png, *.tif or *.bmp files")

    def _count(self) -> int:
        return len(self.files)

    def _iter_native(self) -> Iterator[np.ndarray]:
        for f in self.files:
            yield read_image(f)


class AviVideo(Video):
    """A video file (.avi, .mp4, ...) decoded with PyAV, whose wheels ship FFmpeg's codecs."""

    count_from_header = True

    def _iter_native(self) -> Iterator[np.ndarray]:
        import av

        try:
            with av.open(str(self.path)) as container:
                stream = container.streams.video[0]
                width, height, budget = stream.codec_context.width, stream.codec_context.height, max_pixels()
                if width * height > budget:
                    raise OddspotError(f"{self.path}: frames are {width}x{height} ({width * height / 1e6:.1f} Mpx), over "
                                       f"the pixel budget of {budget / 1e6:g} Mpx; shrink the video or raise --max-pixels")
                for frame in container.decode(stream):
                    yield frame.to_ndarray(format="rgb24")
        except (av.error.FFmpegError, IndexError) as exc:
            raise OddspotError(f"{self.path}: cannot decode video ({exc}); replace or remove the file") from None

    def declared_frames(self) -> int | None:
        """The frame count the container header declares (None when it declares none). Some files
        declare a count their frames do not match: `len` after decoding is the decoded count."""
        import av

        if not self.path.exists():
            raise OddspotError(f"{self.path}: no such file; check the path")
        try:
            with av.open(str(self.path)) as container:
                declared = int(container.streams.video[0].frames)
        except (av.error.FFmpegError, IndexError):
            declared = 0
        return declared if declared > 0 else None

    def _count(self) -> int:
        """Frame count from the container header when it has one, else by decoding."""
        declared = self.declared_frames()
        return declared if declared is not None else sum(1 for _ in self._iter_native())


def natural_key(path: Path) -> tuple:
    """Sort key that orders 'frame2' before 'frame10'."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", path.name))


def list_frame_files(folder: Path) -> list[Path]:
    """Image files of a frame folder in natural order, hidden files (e.g. '._0001.tif') skipped."""
    return sorted(list_images(Path(folder)), key=natural_key)


def is_video_file(path: Path) -> bool:
    """True for a visible file with a video container suffix (.avi, .mp4, .mov, .mkv)."""
    return path.is_file() and path.suffix.lower() in VIDEO_SUFFIXES and not path.name.startswith(".")


def labels_from_intervals(intervals: np.ndarray | Sequence[Sequence[int]], num_frames: int, index_base: int = 1) -> np.ndarray:
    """Inclusive [start, end] intervals (K x 2) -> per-frame 0/1 int8 labels of length `num_frames`."""
    arr = np.asarray(intervals, dtype=np.int64).reshape(-1, 2) - index_base
    labels = np.zeros(num_frames, dtype=np.int8)
    for start, end in arr:
        labels[max(int(start), 0) : min(int(end), num_frames - 1) + 1] = 1
    return labels


def _loadmat(path: Path) -> dict:
    from scipy.io import loadmat

    try:
        return loadmat(str(path), squeeze_me=False)
    except NotImplementedError:
        return _load_mat_v73(path)
    except (ValueError, OSError, TypeError) as exc:
        raise OddspotError(f"{path}: cannot read .mat file ({exc}); replace the file") from None


def _load_mat_v73(path: Path) -> dict:
    """MATLAB v7.3 files are HDF5; read them with h5py when it is installed."""
    try:
        import h5py
    except ImportError:
        raise OddspotError(f"{path}: MATLAB v7.3 (HDF5) file; install h5py or re-save it with `save -v7`") from None
    out: dict = {}
    with h5py.File(path, "r") as fh:
        for key, ds in fh.items():
            if key.startswith("#"):
                continue
            if ds.dtype == h5py.ref_dtype:
                out[key] = np.array([[np.asarray(fh[ref]).T for ref in np.asarray(ds).reshape(-1)]], dtype=object)
            else:
                out[key] = np.asarray(ds).T
    return out


def read_vol_label(path: str | Path) -> np.ndarray:
    """Avenue `N_label.mat` -> per-frame labels (1 when any pixel of that frame's mask is set)."""
    path = Path(path)
    data = _loadmat(path)
    if "volLabel" not in data:
        raise OddspotError(f"{path}: no 'volLabel' variable; expected Avenue's testing_label_mask/N_label.mat")
    cells = np.asarray(data["volLabel"], dtype=object).reshape(-1)
    return np.array([int(np.any(np.asarray(c))) for c in cells], dtype=np.int8)


def read_interval_mat(path: str | Path, key: str | None = None) -> list[np.ndarray]:
    """A `.mat` of per-video anomalous intervals (`gt`, 1 x V cells of 2 x K arrays) -> list of K x 2 arrays."""
    path = Path(path)
    data = _loadmat(path)
    names = [k for k in data if not k.startswith("__")]
    key = key or ("gt" if "gt" in names else (names[0] if len(names) == 1 else None))
    if key is None or key not in data:
        raise OddspotError(f"{path}: no 'gt' variable (found {names}); expected per-video [start; end] intervals")
    cells = np.asarray(data[key], dtype=object).reshape(-1)
    out = []
    for c in cells:
        arr = np.asarray(c, dtype=np.int64)
        if arr.size == 0:
            out.append(np.zeros((0, 2), dtype=np.int64))
        elif arr.ndim == 2 and arr.shape[0] == 2:
            out.append(arr.T)
        else:
            out.append(arr.reshape(-1, 2))
    return out


def read_avenue(root: str | Path, split: str, cache_dir: Path | None = None) -> list[Video]:
    """CUHK Avenue: `training_videos/NN.avi` or `testing_videos/NN.avi` with `testing_label_mask/N_label.mat`."""
    root = Path(root)
    folder = root / ("training_videos" if split == "train" else "testing_videos")
    if not folder.is_dir():
        raise OddspotError(f"{folder}: not found; an Avenue root holds training_videos/ and testing_videos/")
    files = sorted((p for p in folder.iterdir() if is_video_file(p)), key=natural_key)
    if not files:
        raise OddspotError(f"{folder}: no .avi videos found")
    videos: list[Video] = []
    for f in files:
        labels: Callable[[], np.ndarray] | None = None
        if split == "test":
            mat = root / "testing_label_mask" / f"{int(f.stem) if f.stem.isdigit() else f.stem}_label.mat"
            if not mat.exists():
                raise OddspotError(f"{mat}: ground truth for {f.name} missing; Avenue test videos need testing_label_mask/N_label.mat")
            labels = partial(read_vol_label, mat)
        videos.append(AviVideo(f.stem, f, labels=labels, cache_dir=cache_dir))
    return videos


def _read_labels_json(path: Path) -> dict[str, dict]:
    data = read_json(path, "expected {'videos': {id: {'labels': [...]}}}")
    if not isinstance(data.get("videos"), dict):
        raise OddspotError(f"{path}: not a labels file (no 'videos' mapping); expected {{'videos': {{id: {{'labels': [...]}}}}}}")
    return dict(data["videos"])


def find_label_file(root: Path) -> Path | None:
    """The ground-truth file of a frame-folder dataset: labels.json, else a single .mat at the root."""
    if (root / "labels.json").exists():
        return root / "labels.json"
    mats = sorted(root.glob("*.mat"))
    if len(mats) > 1:
        raise OddspotError(f"{root}: several .mat files ({', '.join(m.name for m in mats)}); pass the ground truth with --labels")
    return mats[0] if mats else None


def read_frame_folders(
    root: str | Path, split: str, labels_file: str | Path | None = None, cache_dir: Path | None = None
) -> list[Video]:
    """Frame-folder layout: `{training,testing}/frames/<video>/*` plus interval (.mat) or JSON labels."""
    root = Path(root)
    folder = root / ("training" if split == "train" else "testing") / "frames"
    if not folder.is_dir():
        raise OddspotError(f"{folder}: not found; a frame-folder dataset holds training/frames/<video>/ and testing/frames/<video>/")
    dirs = sorted((d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")), key=natural_key)
    if not dirs:
        raise OddspotError(f"{folder}: no video folders found")
    videos: list[Video] = [FrameFolderVideo(d.name, d, cache_dir=cache_dir) for d in dirs]
    if split == "train":
        return videos
    path = Path(labels_file) if labels_file is not None else find_label_file(root)
    if path is None:
        raise OddspotError(f"{root}: no ground truth found; put labels.json or the intervals .mat at the root or pass --labels")
    if path.suffix.lower() == ".json":
        table = _read_labels_json(path)
        for v in videos:
            if v.video_id not in table:
                raise OddspotError(f"{path}: no entry for video {v.video_id!r}; every test video needs labels")
            entry = table[v.video_id]
            events = [Event(str(e["type"]), int(e["start"]), int(e["end"])) for e in entry.get("events", [])]
            v.set_ground_truth(np.asarray(entry["labels"], dtype=np.int8), events)
    else:
        intervals = read_interval_mat(path)
        if len(intervals) != len(videos):
            raise OddspotError(f"{path}: intervals for {len(intervals)} videos but {folder} has {len(videos)}; check the pairing")
        for v, iv in zip(videos, intervals):
            v.set_ground_truth(labels_from_intervals(iv, len(v), index_base=1))
    return videos
