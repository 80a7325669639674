"""Road-anomaly benchmarks with binary pixel labels: Fishyscapes, Road Anomaly, SegmentMeIfYouCan.

Every reader yields `BinaryScene`s whose `labels` hold 0 (in-distribution), 1 (anomaly) and
VOID (255, excluded from every metric). The layouts, as each dataset's own code reads them:

- `fishyscapes_laf` (Fishyscapes Lost & Found, validation). Official form: the label files of
  `fishyscapes_lostandfound.zip`, `<fs id>_<laf id>_labels.png` (e.g.
  `0000_04_Maurener_Weg_8_000000_000030_labels.png`), beside the LostAndFound images
  `leftImg8bit/{train,test}/<scene>/<laf id>_leftImg8bit.png` anywhere under DATA (matched by the
  LostAndFound id). Labels: 0 in-distribution, 1 anomaly, 255 void.
- `fishyscapes_static` (Fishyscapes Static, validation). Official form: `<fs id>_<cityscapes
  id>_labels.png` with `<fs id>_..._rgb.npz` (array `rgb`, H x W x 3, added to the Cityscapes
  image and clipped to 0..255) and the Cityscapes images `leftImg8bit/val/<city>/<cityscapes
  id>_leftImg8bit.png` under DATA. Labels as Lost & Found.
- Both Fishyscapes sets also in the common repackaged form: `original/<name>.png` (ready images)
  and `labels/<name>.png` (0 / 1 / 255) in one folder.
- `road_anomaly` (Lis et al. 2019): `frame_list.json` (the image file names), `frames/<name>.jpg`
  (or `.webp`), `frames/<name>.labels/labels_semantic.png` with 0 background, 1 road,
  2 anomaly: values >= 2 are anomalous, every pixel is evaluated (no void).
- `smiyc_anomaly`, `smiyc_obstacle` (SegmentMeIfYouCan RoadAnomaly21 / RoadObstacle21):
  `dataset_AnomalyTrack/images/<id>.jpg`, `dataset_ObstacleTrack/images/<id>.webp`, labels
  `labels_masks/<id>_labels_semantic.png` with 0 normal, 1 anomaly / obstacle, anything else
  void. Only the validation frames have public labels: the other images are listed as
  `unlabeled` (they can be scored with `oddspot road predict`, not evaluated).

Files are matched by name (stem or id), in sorted order; hidden files (`._x`, `.DS_Store`) are
left out. A listed frame whose image or label file is missing is a one-line error naming it;
a file that cannot be decoded is reported by `iter_samples` and skipped.
"""

from __future__ import annotations

import json
import os
import re
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from oddspot.choices import ROAD_LAYOUTS
from oddspot.data.image_io import is_image_file, list_images, max_pixels, open_image, read_image
from oddspot.data.sample import iter_readable
from oddspot.errors import OddspotError

VOID = 255
BENCHMARK_LAYOUTS = tuple(name for name in ROAD_LAYOUTS if name not in ("auto", "streethazards"))
SPLITS = {"fishyscapes_laf": "validation", "fishyscapes_static": "validation", "road_anomaly": "test",
          "smiyc_anomaly": "validation", "smiyc_obstacle": "validation"}
LABEL_RULES = {
    "fishyscapes_laf": "0 in-distribution, 1 anomaly, other values (255) void",
    "fishyscapes_static": "0 in-distribution, 1 anomaly, other values (255) void",
    "road_anomaly": "0 background, 1 road (both normal), >= 2 anomaly; no void",
    "smiyc_anomaly": "0 not anomaly, 1 anomaly, other values (255) void",
    "smiyc_obstacle": "0 road, 1 obstacle, other values (255) void",
}
SMIYC_FOLDERS = {"smiyc_anomaly": "dataset_AnomalyTrack", "smiyc_obstacle": "dataset_ObstacleTrack"}
FS_LABELS = re.compile(r"^(\d+)_(.+)_labels\.png$")
LEFT_IMAGE = re.compile(r"^(.+)_leftImg8bit$")
OVERLAY_KEY = "rgb"


@dataclass
class BinaryScene:
    """One frame: `image` H x W x 3 uint8 RGB, `labels` H x W uint8 (0 normal, 1 anomaly, VOID), `meta`."""

    image: np.ndarray
    labels: np.ndarray
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def anomaly_mask(self) -> np.ndarray:
        """H x W bool, True on anomalous pixels."""
        return self.labels == 1

    @property
    def valid(self) -> np.ndarray:
        """H x W bool, False on void pixels."""
        return self.labels != VOID


@dataclass(frozen=True)
class Frame:
    """Where one frame's files are: its image (the base image for an overlay), label file and overlay."""

    name: str
    image: Path
    labels: Path
    overlay: Path | None = None


def _visible(path: Path) -> bool:
    return path.is_file() and not path.name.startswith(".")


def _files(root: Path) -> list[Path]:
    """Every visible file below `root`, sorted; linked folders are followed (each real folder once)."""
    found: list[Path] = []
    seen: set[str] = set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:
            subfolders[:] = []
            continue
        seen.add(real)
        subfolders[:] = [d for d in subfolders if not d.startswith(".")]
        found += [Path(folder) / n for n in names if not n.startswith(".")]
    return sorted(p for p in found if p.is_file())


def label_values(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """A label PNG's stored values as H x W int64 (8 or 16 bit, grey or palette indices); `shape` is its image's."""
    img = open_image(path, "label file")
    try:
        if img.mode not in ("L", "P", "I", "I;16", "RGB"):
            raise OddspotError(f"{path}: label mode {img.mode} is not a label image; expected 8-bit label values")
        arr = np.asarray(img)
    finally:
        img.close()
    if arr.ndim == 3:
        if not ((arr[..., 0] == arr[..., 1]).all() and (arr[..., 0] == arr[..., 2]).all()):
            raise OddspotError(f"{path}: label file is colour, not label values; use the dataset's label PNGs")
        arr = arr[..., 0]
    if arr.shape != tuple(shape):
        raise OddspotError(f"{path}: labels are {arr.shape[1]}x{arr.shape[0]} but the image is "
                           f"{shape[1]}x{shape[0]}; labels must have the size of their image")
    return arr.astype(np.int64)


def binary_labels(stored: np.ndarray, layout: str) -> np.ndarray:
    """Stored label values -> 0 normal, 1 anomaly, VOID, by the layout's rule (`LABEL_RULES`)."""
    stored = np.asarray(stored)
    if layout == "road_anomaly":
        return (stored >= 2).astype(np.uint8)
    out = np.full(stored.shape, VOID, np.uint8)
    out[stored == 0] = 0
    out[stored == 1] = 1
    return out


def read_overlay(path: Path, shape: tuple[int, ...]) -> np.ndarray:
    """The `rgb` array of a Fishyscapes Static `..._rgb.npz` (no pickles), checked against the image's shape."""
    limit = max_pixels() * 3 * 8 + 4096  # int64 values of an image at the pixel budget, plus the .npy header
    try:
        with zipfile.ZipFile(path) as archive:
            member = archive.getinfo(f"{OVERLAY_KEY}.npy")
            if member.file_size > limit:
                raise OddspotError(f"{path}: overlay of {member.file_size / 1e6:.0f} MB is over the pixel budget; "
                                   "shrink it or raise --max-pixels")
        with np.load(path, allow_pickle=False) as npz:
            overlay = npz[OVERLAY_KEY]
    except KeyError:
        raise OddspotError(f"{path}: no array {OVERLAY_KEY!r}; expected a Fishyscapes Static overlay") from None
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise OddspotError(f"{path}: cannot read the overlay ({exc}); replace or remove the file") from None
    if overlay.shape != tuple(shape) or not np.issubdtype(overlay.dtype, np.number):
        raise OddspotError(f"{path}: overlay is {overlay.dtype} {overlay.shape}, expected numbers of the image's "
                           f"shape {tuple(shape)}")
    if not np.isfinite(overlay).all():
        raise OddspotError(f"{path}: overlay holds NaN or infinite values; replace the file")
    return overlay


class RoadBenchmark:
    """One labelled road-anomaly set (see the module docstring), read lazily.

    `frames` are the labelled frames in sorted order; `unlabeled` the images without a label file
    (SegmentMeIfYouCan's test frames). `split` names the set, `label_rule` how labels were read.
    """

    def __init__(self, root: Path, layout: str, frames: list[Frame], unlabeled: list[Path]) -> None:
        self.root = root
        self.layout = layout
        self.frames = frames
        self.unlabeled = unlabeled
        self.split = SPLITS[layout]
        self.label_rule = LABEL_RULES[layout]

    def __len__(self) -> int:
        return len(self.frames)

    def __getitem__(self, index: int) -> BinaryScene:
        frame = self.frames[index]
        image = read_image(frame.image)
        if frame.overlay is not None:
            overlay = read_overlay(frame.overlay, image.shape)
            # as the official builder: integer overlay added to the image, clipped to 0..255
            shift = np.clip(overlay, -512, 512).astype(np.int64)
            image = np.clip(image.astype(np.int64) + shift, 0, 255).astype(np.uint8)
        labels = binary_labels(label_values(frame.labels, image.shape[:2]), self.layout)
        path = frame.overlay if frame.overlay is not None else frame.image
        meta = {"path": str(path), "annotation": str(frame.labels), "name": frame.name, "split": self.split,
                "layout": self.layout}
        if frame.overlay is not None:
            meta["base_image"] = str(frame.image)
        return BinaryScene(image, labels, meta)

    def iter_samples(self, on_error: Callable[[OddspotError], None] | None = None) -> Iterator[BinaryScene]:
        """Yield every readable frame; a bad file is passed to `on_error` (default: raise) and skipped."""
        return iter_readable(self, on_error)


# layout detection -------------------------------------------------------------------------------
def _is_streethazards(root: Path) -> bool:
    return (root / "train" / "images" / "training").is_dir() or (root / "test" / "images" / "test").is_dir()


def _road_anomaly_root(root: Path) -> Path | None:
    """`root`, or its one child (e.g. `RoadAnomaly_jpg/`), that holds `frame_list.json` and `frames/`."""
    def holds(p: Path) -> bool:
        return (p / "frame_list.json").is_file() and (p / "frames").is_dir()

    if holds(root):
        return root
    found = [c for c in sorted(root.iterdir()) if c.is_dir() and holds(c)]
    return found[0] if len(found) == 1 else None


def _smiyc_root(root: Path, layout: str) -> Path | None:
    """The track folder (with `images/` and `labels_masks/`) of `layout` at or directly under `root`."""
    for candidate in (root / SMIYC_FOLDERS[layout], root):
        if (candidate / "images").is_dir() and (candidate / "labels_masks").is_dir():
            return candidate
    return None


def _smiyc_track(root: Path) -> str | None:
    """Which SegmentMeIfYouCan track `root` is: by its folder names, else by its images' type (jpg / webp)."""
    inside = [layout for layout, name in SMIYC_FOLDERS.items() if (root / name / "images").is_dir()]
    if len(inside) > 1:
        raise OddspotError(f"{root}: holds both SegmentMeIfYouCan tracks; give --layout smiyc_anomaly or "
                           "smiyc_obstacle (or the track's folder)")
    if inside:
        return inside[0]
    if not ((root / "images").is_dir() and (root / "labels_masks").is_dir()):
        return None
    for layout, name in SMIYC_FOLDERS.items():
        if name.lower().removeprefix("dataset_") in root.name.lower():
            return layout
    suffixes = {p.suffix.lower() for p in list_images(root / "images")}
    if suffixes == {".jpg"}:
        return "smiyc_anomaly"
    if suffixes == {".webp"}:
        return "smiyc_obstacle"
    raise OddspotError(f"{root}: a SegmentMeIfYouCan layout, but neither its name nor its images say which track; "
                       "give --layout smiyc_anomaly or smiyc_obstacle")


def _repackaged_set(root: Path) -> str:
    """fishyscapes_laf or fishyscapes_static for an `original/` + `labels/` folder, from its name."""
    name = root.resolve().name.lower()
    if "static" in name:
        return "fishyscapes_static"
    if "lost" in name or "laf" in name:  # LostAndFound, lost_and_found, fs_lost_found, FishyLAF
        return "fishyscapes_laf"
    raise OddspotError(f"{root}: Fishyscapes folders original/ and labels/, but the folder name does not say which "
                       "set; give --layout fishyscapes_laf or fishyscapes_static")


def detect_road_layout(root: str | os.PathLike[str]) -> str:
    """The layout of a road dataset folder: 'streethazards' or one of BENCHMARK_LAYOUTS (see the module docstring)."""
    root = Path(root)
    if not root.is_dir():
        raise OddspotError(f"{root}: not a folder; DATA must be a road dataset folder")
    if _is_streethazards(root):
        return "streethazards"
    if _road_anomaly_root(root) is not None:
        return "road_anomaly"
    track = _smiyc_track(root)
    if track is not None:
        return track
    if (root / "original").is_dir() and (root / "labels").is_dir():
        return _repackaged_set(root)
    files = _files(root)
    if any(FS_LABELS.match(p.name) for p in files):
        return "fishyscapes_static" if any(p.name.endswith(f"{OVERLAY_KEY}.npz") for p in files) else "fishyscapes_laf"
    raise OddspotError(
        f"{root}: road layout not recognised; expected the StreetHazards layout (train/images/training/), Road Anomaly "
        "(frame_list.json, frames/), SegmentMeIfYouCan (images/, labels_masks/), Fishyscapes (original/ + labels/, "
        "or <id>_labels.png with leftImg8bit/ or _rgb.npz overlays); or give --layout")


# listing per layout -----------------------------------------------------------------------------
def _need(path: Path, what: str, fix: str) -> Path:
    if not path.is_file():
        raise OddspotError(f"{path}: {what} missing; {fix}")
    return path


def _repackaged(root: Path) -> list[Frame]:
    images = list_images(root / "original")
    if not images:
        raise OddspotError(f"{root / 'original'}: no images found; check DATA")
    return [Frame(p.stem, p, _need(root / "labels" / f"{p.stem}.png", "label file",
                                   "every image in original/ needs labels/<same name>.png")) for p in images]


def _fishyscapes(root: Path, layout: str) -> list[Frame]:
    if (root / "original").is_dir() and (root / "labels").is_dir():
        return _repackaged(root)
    files = _files(root)
    labels = [p for p in files if FS_LABELS.match(p.name)]
    if not labels:
        raise OddspotError(f"{root}: no Fishyscapes label files (<id>_<image id>_labels.png) and no original/ + "
                           "labels/ folders; check DATA")
    bases: dict[str, Path] = {}
    for p in files:
        m = LEFT_IMAGE.match(p.stem)
        if m and is_image_file(p):
            bases.setdefault(m.group(1), p)
    frames = []
    for label in labels:
        fs_id, base_id = FS_LABELS.match(label.name).groups()  # type: ignore[union-attr]
        source = "Cityscapes (leftImg8bit/val/...)" if layout == "fishyscapes_static" else "LostAndFound (leftImg8bit/...)"
        if base_id not in bases:
            raise OddspotError(f"{label}: its image {base_id}_leftImg8bit.png is not under {root}; put the {source} "
                               "images under DATA")
        overlay = None
        if layout == "fishyscapes_static":
            found = sorted(p for p in label.parent.iterdir()
                           if _visible(p) and p.name.startswith(f"{fs_id}_") and p.name.endswith(f"{OVERLAY_KEY}.npz"))
            if not found:
                raise OddspotError(f"{label}: its overlay {fs_id}_..._{OVERLAY_KEY}.npz is missing beside it; "
                                   "every Fishyscapes Static label needs its overlay")
            overlay = found[0]
        frames.append(Frame(f"{fs_id}_{base_id}", bases[base_id], label, overlay))
    return frames


def _road_anomaly(root: Path) -> list[Frame]:
    base = _road_anomaly_root(root)
    if base is None:
        raise OddspotError(f"{root}: no frame_list.json with frames/ here; DATA must be the Road Anomaly folder")
    listing = base / "frame_list.json"
    try:
        names = json.loads(listing.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise OddspotError(f"{listing}: cannot read it as JSON ({exc}); restore the dataset's frame_list.json") from None
    if not isinstance(names, list) or not names or not all(isinstance(n, str) and n for n in names):
        raise OddspotError(f"{listing}: expected a non-empty JSON list of image file names")
    frames = []
    for name in sorted(Path(n).name for n in names):
        stem = Path(name).stem
        image = _need(base / "frames" / name, "image", f"it is listed in {listing}")
        labels = _need(base / "frames" / f"{stem}.labels" / "labels_semantic.png", "label file",
                       "every frame needs frames/<name>.labels/labels_semantic.png")
        frames.append(Frame(stem, image, labels))
    return frames


def _smiyc(root: Path, layout: str) -> tuple[list[Frame], list[Path]]:
    track = _smiyc_root(root, layout)
    if track is None:
        raise OddspotError(f"{root}: no images/ and labels_masks/ here or in {SMIYC_FOLDERS[layout]}/; "
                           "DATA must be the SegmentMeIfYouCan track folder")
    images = list_images(track / "images")
    if not images:
        raise OddspotError(f"{track / 'images'}: no images found; check DATA")
    frames, unlabeled = [], []
    for p in images:
        label = track / "labels_masks" / f"{p.stem}_labels_semantic.png"
        if label.is_file():
            frames.append(Frame(p.stem, p, label))
        else:
            unlabeled.append(p)
    if not frames:
        raise OddspotError(f"{track / 'labels_masks'}: no <id>_labels_semantic.png for any image; only the validation "
                           "frames have public labels (score the others with `oddspot road predict`)")
    return frames, unlabeled


def open_benchmark(root: str | os.PathLike[str], layout: str = "auto") -> RoadBenchmark:
    """Open a labelled road-anomaly set in one of BENCHMARK_LAYOUTS ('auto': detect it)."""
    root = Path(root)
    if layout not in ROAD_LAYOUTS:
        raise OddspotError(f"--layout {layout!r} unknown; use one of {', '.join(ROAD_LAYOUTS)}")
    kind = detect_road_layout(root) if layout == "auto" else layout
    if kind == "streethazards":
        raise OddspotError(f"{root}: a StreetHazards folder has classes; read it with oddspot.data.streethazards")
    if not root.is_dir():
        raise OddspotError(f"{root}: not a folder; DATA must be a road dataset folder")
    unlabeled: list[Path] = []
    if kind == "road_anomaly":
        frames = _road_anomaly(root)
    elif kind in SMIYC_FOLDERS:
        frames, unlabeled = _smiyc(root, kind)
    else:
        frames = _fishyscapes(root, kind)
    return RoadBenchmark(root, kind, frames, unlabeled)


def benchmark_images(root: str | os.PathLike[str]) -> list[Path] | None:
    """The images of a labelled road-anomaly folder, without its label files (for `road predict`);
    None when `root` is not such a folder or its images exist only once built (Fishyscapes Static
    overlays, which `road evaluate` builds)."""
    try:
        kind = detect_road_layout(root)
        if kind == "streethazards":
            return None
        bench = open_benchmark(root, kind)
    except OddspotError:
        return None
    if any(f.overlay is not None for f in bench.frames):
        return None
    return sorted({f.image for f in bench.frames} | set(bench.unlabeled))
