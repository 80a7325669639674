"""Gallery material of an evaluation: the images a report shows, chosen and drawn at evaluate time.

`evaluate` keeps one score per image (scores.csv), not every anomaly map. So that `oddspot report`
never has to load a model or a dataset again, `write_gallery` picks the worst misses, worst false
alarms and best detections from the score rows, asks the task (once) for those images, their
anomaly maps and ground-truth masks, and stores small PNG thumbnails of each card under
`out/gallery/` with a `gallery.json` that describes them. `read_gallery` reads it back, checked.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from oddspot.errors import OddspotError
from oddspot.files import read_json, write_json, write_png
from oddspot.visualize import heatmap_overlay

GALLERY_DIR = "gallery"
GALLERY_FILE = "gallery.json"
GALLERY_VERSION = 1
THUMB = 176
THUMB_RANGE = (16, 1024)
PER_GROUP_MAX = 100
OUTLINE = np.array([255, 0, 255], np.uint8)
PANELS = ("image", "truth", "heatmap", "mask")  # what a card shows, in order ("mask" only with a pixel threshold)
_CARD_FILE = re.compile(r"card-\d{3,}-(image|truth|heatmap|mask)\.png")

Warn = Callable[[str], None]
Rendered = tuple[np.ndarray, np.ndarray, np.ndarray | None]
Render = Callable[[Sequence[str]], Sequence[Rendered | None]]


@dataclass(frozen=True)
class ScoreRow:
    """One line of evaluate's scores.csv; `anomalous` is the calibrated decision when the file has it."""

    path: str
    label: int
    defect_type: str
    score: float
    anomalous: bool | None = None


@dataclass(frozen=True)
class Group:
    """One gallery section: its key ("fn", "fp" or "tp"), title, explanation and the rows chosen for it."""

    key: str
    title: str
    note: str
    rows: tuple[ScoreRow, ...]


@dataclass(frozen=True)
class Card:
    """One stored card: the scored image and its thumbnail files (panel name -> path)."""

    path: str
    label: int
    defect_type: str
    score: float
    anomalous: bool
    ground_truth: bool
    files: dict[str, Path]


@dataclass(frozen=True)
class GalleryGroup:
    """One stored gallery section with its cards."""

    key: str
    title: str
    note: str
    cards: tuple[Card, ...]


@dataclass(frozen=True)
class Gallery:
    """What `gallery.json` holds: the thresholds and colour scale the cards were drawn with, and the groups."""

    folder: Path
    image_threshold: float | None
    pixel_threshold: float | None
    display_max: float | None
    per_group: int
    thumb: int
    groups: tuple[GalleryGroup, ...]
    skipped: tuple[str, ...] = ()


def decided(row: ScoreRow, threshold: float | None) -> bool:
    """The image's decision: the stored calibrated one, else score >= threshold."""
    if row.anomalous is not None:
        return row.anomalous
    if threshold is None:
        raise OddspotError(f"gallery: {row.path} has no stored decision and there is no image threshold; pass "
                           "image_threshold (the test F1-max threshold when the model is not calibrated)")
    return row.score >= threshold


def choose(rows: Sequence[ScoreRow], threshold: float | None, k: int) -> list[Group]:
    """Worst false negatives, worst false positives and best detections, at most `k` each.

    When a kind of error does not occur, the closest calls are shown instead (and said so).
    """
    defects = sorted((r for r in rows if r.label == 1), key=lambda r: (r.score, r.path))
    goods = sorted((r for r in rows if r.label == 0), key=lambda r: (-r.score, r.path))
    fn = [r for r in defects if not decided(r, threshold)]
    fp = [r for r in goods if decided(r, threshold)]
    fn_note = ("defective images scored below the threshold, lowest score first" if fn else
               "no defective image is missed at this threshold; the lowest-scoring defects are shown")
    fp_note = ("good images scored at or above the threshold, highest score first" if fp else
               "no good image raises an alarm at this threshold; the highest-scoring good images are shown")
    fn_rows = tuple((fn or defects)[:k])
    fp_rows = tuple((fp or goods)[:k])
    best = tuple([r for r in reversed(defects) if decided(r, threshold)][:k])
    fn_title = "Worst false negatives (missed defects)" if fn else "False negatives: none (lowest-scoring defects)"
    fp_title = "Worst false positives (false alarms)" if fp else "False positives: none (highest-scoring good images)"
    return [
        Group("fn", fn_title, fn_note, fn_rows),
        Group("fp", fp_title, fp_note, fp_rows),
        Group("tp", "Best detections", "detected defective images, highest score first", best),
    ]


def thumb_size(shape: tuple[int, ...], longest: int) -> tuple[int, int]:
    """(width, height) of a thumbnail of an image of `shape` whose longest side is `longest`."""
    h, w = shape[:2]
    scale = longest / max(h, w)
    return max(1, round(w * scale)), max(1, round(h * scale))


def _fit(array: np.ndarray, wh: tuple[int, int], resample: int) -> np.ndarray:
    return np.asarray(Image.fromarray(array).resize(wh, resample))


def _outline(mask: np.ndarray) -> np.ndarray:
    edge = mask & ~ndimage.binary_erosion(mask, border_value=0)
    return ndimage.binary_dilation(edge) if mask.shape[0] >= 96 else edge


def card_panels(image: np.ndarray, amap: np.ndarray, mask: np.ndarray | None, display_max: float | None,
                pixel_threshold: float | None, longest: int = THUMB) -> dict[str, np.ndarray]:
    """The thumbnails of one card (uint8 RGB, longest side `longest`), by panel name.

    "image" is the plain image; "truth" the dimmed image with the ground-truth outline; "heatmap"
    the anomaly map over the image on the fixed colour scale 0..`display_max`; "mask" the pixels
    with map >= `pixel_threshold` (only with a pixel threshold). The outline is drawn on every
    panel but the plain image. The map and the mask may have any resolution: they are resized to
    the image's thumbnail.
    """
    wh = thumb_size(image.shape, longest)
    small = _fit(image, wh, Image.BILINEAR if max(image.shape[:2]) < 2 * longest else Image.LANCZOS)
    small_map = _fit(np.asarray(amap, np.float32), wh, Image.BILINEAR)
    gt = None
    if mask is not None and mask.any():
        gt = _outline(_fit(mask.astype(np.uint8) * 255, wh, Image.BOX) > 0)
    out = {"image": small, "truth": (small.astype(np.float32) * 0.6 + 40).astype(np.uint8),
           "heatmap": heatmap_overlay(small, small_map, display_max)}
    if pixel_threshold is not None:
        predicted = _fit((amap >= pixel_threshold).astype(np.uint8) * 255, wh, Image.BOX) >= 128
        out["mask"] = np.where(predicted[..., None], np.uint8(245), np.uint8(35)).repeat(3, axis=2).astype(np.uint8)
    if gt is not None:
        for name in ("truth", "heatmap", "mask"):
            if name in out:
                out[name][gt] = OUTLINE
    return out


def _checked(path: str, item: Any) -> Rendered:
    """One entry of render's answer, with its shapes checked."""
    if not isinstance(item, tuple) or len(item) != 3:
        raise OddspotError(f"gallery: render returned {type(item).__name__} for {path}; expected (image, map, mask)")
    image, amap, mask = item
    image, amap = np.asarray(image), np.asarray(amap)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise OddspotError(f"gallery: image of {path} is {image.dtype} {image.shape}; expected uint8 H x W x 3")
    if amap.ndim != 2 or not np.issubdtype(amap.dtype, np.floating):
        raise OddspotError(f"gallery: anomaly map of {path} is {amap.dtype} {amap.shape}; expected float H x W")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.ndim != 2:
            raise OddspotError(f"gallery: mask of {path} has shape {mask.shape}; expected H x W")
        mask = mask.astype(bool)
    return image, amap, mask


def _number(value: float | None, name: str) -> float | None:
    if value is None:
        return None
    value = float(value)
    if not math.isfinite(value):
        raise OddspotError(f"gallery: {name} is {value}; expected a finite number or None")
    return value


def write_gallery(out: Path, rows: Sequence[ScoreRow], render: Render, *, image_threshold: float | None,
                  pixel_threshold: float | None, display_max: float | None, per_group: int = 12,
                  thumb: int = THUMB, warn: Warn = print) -> int:
    """Choose the gallery's images from `rows`, draw their cards and write them under `out/gallery/`.

    `render(paths)` is called once with the chosen paths and returns, per path in order, the image
    (H x W x 3 uint8), its anomaly map (float, any resolution) and its ground-truth mask (H x W
    bool) or None; an entry of None means the image could not be read (it is skipped, with a
    warning). Writes one PNG per panel (see `card_panels`) and then `gallery.json`; PNGs of an
    earlier gallery in the same folder are removed. Returns the number of cards written.
    """
    if isinstance(per_group, bool) or not isinstance(per_group, int) or not 0 <= per_group <= PER_GROUP_MAX:
        raise OddspotError(f"gallery: per_group must be an integer in 0..{PER_GROUP_MAX}, got {per_group!r}")
    if isinstance(thumb, bool) or not isinstance(thumb, int) or not THUMB_RANGE[0] <= thumb <= THUMB_RANGE[1]:
        raise OddspotError(f"gallery: thumb must be an integer in {THUMB_RANGE[0]}..{THUMB_RANGE[1]}, got {thumb!r}")
    image_threshold = _number(image_threshold, "image_threshold")
    pixel_threshold = _number(pixel_threshold, "pixel_threshold")
    display_max = _number(display_max, "display_max") or None
    folder = Path(out) / GALLERY_DIR
    groups = choose(rows, image_threshold, per_group) if per_group else []
    paths = list(dict.fromkeys(r.path for g in groups for r in g.rows))
    rendered = list(render(paths)) if paths else []
    if len(rendered) != len(paths):
        raise OddspotError(f"gallery: render returned {len(rendered)} entries for {len(paths)} paths")
    files: dict[str, dict[str, str]] = {}
    truth: dict[str, bool] = {}
    skipped: list[str] = []
    for i, (path, item) in enumerate(zip(paths, rendered)):
        if item is None:
            warn(f"gallery: skipped {path} (could not be read)")
            skipped.append(path)
            continue
        image, amap, mask = _checked(path, item)
        names = {}
        for panel, array in card_panels(image, amap, mask, display_max, pixel_threshold, thumb).items():
            names[panel] = f"card-{i:03d}-{panel}.png"
            write_png(folder / names[panel], array)
        files[path] = names
        truth[path] = mask is not None and bool(mask.any())
    body = {
        "format_version": GALLERY_VERSION,
        "image_threshold": image_threshold,
        "pixel_threshold": pixel_threshold,
        "display_max": display_max,
        "per_group": per_group,
        "thumb": thumb,
        "groups": [{"key": g.key, "title": g.title, "note": g.note,
                    "cards": [{"path": r.path, "label": r.label, "defect_type": r.defect_type, "score": float(r.score),
                               "anomalous": decided(r, image_threshold), "ground_truth": truth[r.path],
                               "files": files[r.path]} for r in g.rows if r.path in files]} for g in groups],
        "skipped": skipped,
    }
    folder.mkdir(parents=True, exist_ok=True)
    write_json(folder / GALLERY_FILE, body)
    kept = {name for names in files.values() for name in names.values()}
    for stale in folder.iterdir():
        if _CARD_FILE.fullmatch(stale.name) and stale.name not in kept:
            stale.unlink(missing_ok=True)
    return sum(len(g["cards"]) for g in body["groups"])


def _fail(path: Path, what: str) -> OddspotError:
    return OddspotError(f"{path}: {what}; re-run `oddspot <task> evaluate`")


def _get(obj: dict[str, Any], key: str, types: type | tuple[type, ...], path: Path, where: str,
         optional: bool = False) -> Any:
    value = obj.get(key)
    if value is None and optional:
        return None
    if isinstance(value, bool) and bool not in (types if isinstance(types, tuple) else (types,)):
        raise _fail(path, f"{where}{key} must not be true/false")
    if not isinstance(value, types):
        expected = "a number" if types == (int, float) else types.__name__  # type: ignore[union-attr]
        raise _fail(path, f"{where}{key} is {type(value).__name__}, expected {expected}")
    if isinstance(value, float) and not math.isfinite(value):
        raise _fail(path, f"{where}{key} is {value}")
    return value


def gallery_file(folder: str | Path) -> Path:
    """Where the gallery.json of an evaluation folder (or of its gallery/ folder) lives."""
    folder = Path(folder)
    return folder / GALLERY_FILE if (folder / GALLERY_FILE).is_file() else folder / GALLERY_DIR / GALLERY_FILE


def read_gallery(folder: str | Path) -> Gallery:
    """The gallery of an evaluation folder (or its gallery/ folder), checked: types, version and files."""
    path = gallery_file(folder)
    obj = read_json(path, "re-run `oddspot <task> evaluate` to write the gallery")
    if obj.get("format_version") != GALLERY_VERSION:
        raise _fail(path, f"format_version {obj.get('format_version')!r} unsupported (this oddspot reads {GALLERY_VERSION})")
    num = (int, float)
    thresholds = [_get(obj, k, num, path, "", optional=True) for k in ("image_threshold", "pixel_threshold", "display_max")]
    per_group = _get(obj, "per_group", int, path, "")
    thumb = _get(obj, "thumb", int, path, "")
    if not THUMB_RANGE[0] <= thumb <= THUMB_RANGE[1] or not 0 <= per_group <= PER_GROUP_MAX:
        raise _fail(path, f"thumb {thumb} or per_group {per_group} out of range")
    skipped = obj.get("skipped", [])
    if not isinstance(skipped, list) or not all(isinstance(s, str) for s in skipped):
        raise _fail(path, "skipped must be a list of paths")
    groups = []
    for gi, g in enumerate(_get(obj, "groups", list, path, "")):
        where = f"groups[{gi}]."
        if not isinstance(g, dict):
            raise _fail(path, f"groups[{gi}] is not an object")
        cards = []
        for ci, c in enumerate(_get(g, "cards", list, path, where)):
            at = f"{where}cards[{ci}]."
            if not isinstance(c, dict):
                raise _fail(path, f"{at[:-1]} is not an object")
            label = _get(c, "label", int, path, at)
            if label not in (0, 1):
                raise _fail(path, f"{at}label is {label}, expected 0 or 1")
            names = _get(c, "files", dict, path, at)
            unknown = set(names) - set(PANELS)
            if unknown or "image" not in names:
                raise _fail(path, f"{at}files must name an image and only panels {', '.join(PANELS)}")
            found = {}
            for panel, name in names.items():
                if not isinstance(name, str) or not _CARD_FILE.fullmatch(name):
                    raise _fail(path, f"{at}files.{panel} is not a card file name")
                file = path.parent / name
                if not file.is_file():
                    raise _fail(path, f"{at}files.{panel}: {name} is missing")
                found[panel] = file
            cards.append(Card(_get(c, "path", str, path, at), label, _get(c, "defect_type", str, path, at),
                              float(_get(c, "score", num, path, at)), _get(c, "anomalous", bool, path, at),
                              _get(c, "ground_truth", bool, path, at), found))
        groups.append(GalleryGroup(_get(g, "key", str, path, where), _get(g, "title", str, path, where),
                                   _get(g, "note", str, path, where), tuple(cards)))
    return Gallery(path.parent, *(None if t is None else float(t) for t in thresholds), per_group, thumb,
                   tuple(groups), tuple(skipped))
