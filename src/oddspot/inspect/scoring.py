"""Score image files with a saved inspect model: scores.csv, heatmaps, predicted masks, raw maps."""

from __future__ import annotations

import contextvars
from collections import Counter, deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from oddspot.data.image_io import DECODE_PIXELS, IMAGE_SUFFIXES, is_image_file, read_image, visible_files
from oddspot.errors import OddspotError
from oddspot.files import safe_text, staged_output, write_npy, write_png
from oddspot.records.evaluation import SCORES_FILE, write_csv
from oddspot.paths import inside
from oddspot.runs.registry import load_model
from oddspot.visualize import heatmap_overlay

ERRORS_FILE = "errors.csv"
T = TypeVar("T")
R = TypeVar("R")
# Decoded pixels a batch may hold before it is scored: about one huge image at its reduced size.
BATCH_PIXELS = 4 * DECODE_PIXELS


def collect_inputs(inputs: Sequence[str | Path], warn: Callable[[str], Any] | None = None) -> list[tuple[Path, Path]]:
    """(path as found, relative output path) for every image in `inputs` (files or folders, recursive);
    the other files found in a folder are named to `warn` (nothing is left out silently)."""
    found: list[tuple[Path, Path]] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            files = visible_files(p, recursive=True)  # one walk: the images, and the rest to name
            found += [(f, f.relative_to(p)) for f in sorted(f for f in files if is_image_file(f))]
            others = [f for f in files if not is_image_file(f)]
            if others and warn is not None:
                kinds = Counter(f.suffix.lower() or "(no suffix)" for f in others)
                listed = ", ".join(f"{n} {s}" for s, n in sorted(kinds.items()))
                warn(f"{p}: skipped {len(others)} files that are not images oddspot reads ({listed}); "
                     f"it reads {', '.join(sorted(IMAGE_SUFFIXES))}")
        elif p.is_file():
            found.append((p, Path(p.name)))
        else:
            raise OddspotError(f"{p}: no such file or folder; check the INPUT paths")
    seen: dict[Path, Path] = {}
    for path, rel in found:
        if rel in seen and seen[rel] != path:
            raise OddspotError(f"{path} and {seen[rel]} would both be written as {rel}; pass their common parent folder instead")
        seen[rel] = path
    if not found:
        raise OddspotError(f"no images found in {', '.join(map(str, inputs))}; pass image files or folders")
    return found


@staged_output("out", inputs=("run", "inputs"))
def predict(run: str | Path, inputs: Sequence[str | Path], out: str | Path, save_maps: bool = False,
            batch: int = 16, warn: Callable[[str], Any] = print, device: str | None = None, model: Any | None = None,
            heatmaps: bool = True, fast_decode: bool = False, workers: int = 2) -> dict[str, Any]:
    """Score images; write scores.csv, heatmaps/<rel>.png, masks/<rel>.png and (optionally) maps/<rel>.npy.

    With a calibrated model, scores.csv holds `path,score,normalized,anomalous` and masks/ the
    predicted defect pixels (pixel threshold); without one, `path,score` only.
    A file that cannot be decoded or is over the pixel budget (`data.image_io.max_pixels`) is
    reported through `warn` and in errors.csv, and skipped (`scored` 0 when none could be read).
    A JPEG over `DECODE_PIXELS` is decoded at a reduced scale (its heatmap and map are at that size).

    `model`: an already loaded model (any runtime, `oddspot.export.load_for_inference`), else the
    torch model of `run`. Decoding (`workers` threads) and writing (one thread) overlap scoring;
    `heatmaps=False` writes no heatmap PNGs; `fast_decode` decodes a JPEG at a reduced scale that
    keeps at least twice the model's input size per side (faster; maps are then at that size).
    """
    out = Path(out)
    if model is None:
        model = load_model(run, "inspect", device=device)
    items = collect_inputs(inputs, warn)
    top = float(model.state.get("map_display_max") or 0.0) or None
    calibrated = model.postprocess is not None
    need_maps = heatmaps or save_maps or calibrated
    reduce_to = DECODE_PIXELS
    if fast_decode:
        side = 2 * int(getattr(model.config, "image_size", 0) or 0)
        reduce_to = min(DECODE_PIXELS, side * side) if side else DECODE_PIXELS
    rows: list[tuple[Any, ...]] = []
    errors: list[tuple[str, str]] = []

    def decode(item: tuple[Path, Path]) -> tuple[Path, Path, np.ndarray | OddspotError]:
        try:
            return item[0], item[1], read_image(item[0], reduce_to=reduce_to)
        except OddspotError as exc:
            return item[0], item[1], exc

    def write(rel: Path, image: np.ndarray, amap: np.ndarray | None, mask: np.ndarray | None) -> None:
        if mask is not None:
            write_png(inside(out, f"masks/{rel}.png"), mask.astype(np.uint8) * 255)
        if heatmaps:
            write_png(inside(out, f"heatmaps/{rel}.png"), heatmap_overlay(image, amap, top))
        if save_maps:
            write_npy(inside(out, f"maps/{rel}.npy"), amap.astype(np.float32))

    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="decode") as decoder, \
            ThreadPoolExecutor(1, thread_name_prefix="write") as writer:
        pending: list[Future] = []

        def score(good: list[tuple[Path, Path, np.ndarray]]) -> None:
            pred = model.predict([g[2] for g in good], maps=need_maps)
            for i, (path, rel, image) in enumerate(good):
                if calibrated:
                    rows.append((str(path), float(pred.scores[i]), float(pred.normalized[i]), int(pred.decisions[i])))
                else:
                    rows.append((str(path), float(pred.scores[i])))
                if heatmaps or save_maps or pred.masks is not None:
                    pending.append(writer.submit(write, rel, image, pred.maps[i] if pred.maps is not None else None,
                                                 pred.masks[i] if pred.masks is not None else None))
            while len(pending) > 4 * batch:  # bounded: writing never falls far behind scoring
                pending.pop(0).result()

        # A batch is scored when it holds `batch` images or BATCH_PIXELS decoded pixels, so a folder
        # of huge images holds about one reduced image's worth at a time (scores never depend on the batch).
        good: list[tuple[Path, Path, np.ndarray]] = []
        for path, rel, image in _prefetched(decoder, decode, items, 2 * batch):
            if isinstance(image, OddspotError):
                warn(f"skipped: {safe_text(str(image))}")
                errors.append((str(path), str(image)))
                continue
            good.append((path, rel, image))
            if len(good) == batch or sum(g[2].shape[0] * g[2].shape[1] for g in good) >= BATCH_PIXELS:
                score(good)
                good = []
        if good:
            score(good)
        for f in pending:
            f.result()
    write_csv(out / SCORES_FILE, ["path", "score"] + (["normalized", "anomalous"] if calibrated else []), rows)
    if errors:
        write_csv(out / ERRORS_FILE, ["path", "error"], errors)
    return {"scored": len(rows), "skipped": len(errors), "calibrated": calibrated,
            "runtime": getattr(model, "runtime", "torch")}


def _prefetched(pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Sequence[T], ahead: int) -> Iterator[R]:
    """`fn(item)` for each item, in order, computed by `pool` at most `ahead` items in advance.

    Each call runs in a copy of the caller's context, so context settings (the pixel budget of
    `data.image_io.pixel_budget`) hold in the worker threads too.
    """
    window: deque[Future] = deque()
    it = iter(items)

    def submit(item: T) -> Future:
        return pool.submit(contextvars.copy_context().run, fn, item)

    for item in it:
        window.append(submit(item))
        if len(window) >= ahead:
            break
    while window:
        result = window.popleft().result()
        nxt = next(it, None)
        if nxt is not None:
            window.append(submit(nxt))
        yield result
