"""The code that runs on Ray workers for `predict`: decode tasks, and one scoring class per task.

Batches are dicts of numpy arrays (Ray Data's "numpy" format). A decode task turns each input
path into its pixels (`image` bytes with `height`, `width`), or an `error` message that travels
with the row. A scoring class loads the model once, in `__init__`, through
`oddspot.export.load_for_inference(run, task, runtime, device)`: every actor reads the run folder
itself (a path on storage all nodes share), so no model bytes go through the object store. It
then scores the decoded rows of each batch exactly as the single-process `predict` does, writes the
maps asked for under the output folder, and returns one result row per input (or per frame,
for videos): rows that failed keep their error, so a bad file is listed, not lost.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from oddspot.data.image_io import DECODE_PIXELS, pixel_budget, read_image
from oddspot.errors import OddspotError
from oddspot.files import safe_text, write_npy, write_png
from oddspot.paths import inside
from oddspot.scale.engine import FaultInjector
from oddspot.scale.inputs import local_copy

BATCH_PIXELS = 4 * DECODE_PIXELS
"""Decoded pixels one model call may hold: about one huge image at its reduced size (as `oddspot predict`)."""


def _text(values: Any) -> list[str]:
    return [str(v) for v in values]


def decode_images(batch: dict[str, np.ndarray], max_pixels: int | None = None,
                  reduce_to: int | None = DECODE_PIXELS) -> dict[str, np.ndarray]:
    """Decode every `path` of a batch (a local path or a URI) to RGB pixels, or keep its error."""
    images, heights, widths, errors = [], [], [], []
    with pixel_budget(max_pixels):
        for path in _text(batch["path"]):
            try:
                with local_copy(path) as local:
                    try:
                        image = read_image(local, reduce_to=reduce_to)
                    except OddspotError as exc:
                        raise OddspotError(str(exc).replace(str(local), path)) from None
                images.append(image.tobytes())
                heights.append(image.shape[0])
                widths.append(image.shape[1])
                errors.append("")
            except OddspotError as exc:
                images.append(b"")
                heights.append(0)
                widths.append(0)
                errors.append(str(exc))
    return {**batch, "image": np.array(images, dtype=object), "height": np.array(heights, np.int64),
            "width": np.array(widths, np.int64), "error": np.array(errors, dtype=object)}


def set_threads(threads: int) -> None:
    """Hold torch, faiss, OpenMP and the exported runtimes of this worker to `threads` threads, idle ones asleep."""
    import sys

    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    os.environ["OMP_NUM_THREADS"] = str(threads)
    from oddspot.runtime.engine import set_threads as set_runtime_threads

    set_runtime_threads(threads)
    try:
        import torch
    except ImportError:
        pass
    else:
        torch.set_num_threads(threads)
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(threads)


def pixels(batch: dict[str, np.ndarray], i: int) -> np.ndarray:
    """Row i's decoded image as H x W x 3 uint8."""
    h, w = int(batch["height"][i]), int(batch["width"][i])
    return np.frombuffer(batch["image"][i], np.uint8).reshape(h, w, 3)


def pixel_chunks(batch: dict[str, np.ndarray], rows: list[int]) -> list[list[int]]:
    """`rows` cut so that no model call holds more than `BATCH_PIXELS` decoded pixels (as `oddspot predict` does);
    scores never depend on the cut."""
    chunks: list[list[int]] = []
    total = 0
    for i in rows:
        if not chunks or total >= BATCH_PIXELS:
            chunks.append([])
            total = 0
        chunks[-1].append(i)
        total += int(batch["height"][i]) * int(batch["width"][i])
    return chunks


def _local_copy(files: Any) -> Path:
    """The broadcast model's files (an object-store reference or the dict itself) in a temporary folder."""
    import tempfile

    import ray

    if isinstance(files, ray.ObjectRef):
        files = ray.get(files)
    folder = Path(tempfile.mkdtemp(prefix="oddspot-model-"))
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return folder


class ModelWorker:
    """Loads the model of `run` once per actor, with the thread count, pixel budget and (in tests) fault hook."""

    task = ""
    columns: tuple[str, ...] = ()

    def __init__(self, run: str, out: str, device: str | None = None, runtime: str = "auto", precision: str = "fp32",
                 threads: int = 1, max_pixels: int | None = None, hook: dict[str, Any] | None = None,
                 model: Any = None, **options: Any) -> None:
        set_threads(threads)
        from oddspot.export import load_for_inference

        self.out = Path(out)
        self.max_pixels = max_pixels
        self.options = options
        self.faults = FaultInjector(hook)
        with pixel_budget(max_pixels):
            if model is None:
                self.model = load_for_inference(run, self.task, runtime, precision, device=device)
            else:  # the model broadcast through the object store: its files, written to a local folder once
                self.model = load_for_inference(_local_copy(model["files"]), self.task, model["runtime"], precision,
                                                device=device)
        self.setup()

    def setup(self) -> None:
        """Task-specific state derived from the loaded model."""

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.faults.tick()
        with pixel_budget(self.max_pixels):
            rows = self.score(batch)
        return {name: np.array([r[name] for r in rows], dtype=object) for name in self.columns}

    def score(self, batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        """One result row (a dict of `columns`) per input of the batch."""
        raise NotImplementedError


class InspectWorker(ModelWorker):
    """inspect: image score, normalized score and decision (calibrated runs), maps as .npy when asked."""

    task = "inspect"
    columns = ("path", "score", "normalized", "decision", "error")

    def score(self, batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        paths, rels, errors = _text(batch["path"]), _text(batch["rel"]), _text(batch["error"])
        rows: list[dict[str, Any]] = [{"path": p, "score": None, "normalized": None, "decision": None, "error": e or None}
                                      for p, e in zip(paths, errors)]
        for chunk in pixel_chunks(batch, [i for i, e in enumerate(errors) if not e]):
            pred = self.model.predict([pixels(batch, i) for i in chunk], maps=True)
            for j, i in enumerate(chunk):
                rows[i]["score"] = float(pred.scores[j])
                if pred.normalized is not None:
                    rows[i]["normalized"] = float(pred.normalized[j])
                if pred.decisions is not None:
                    rows[i]["decision"] = int(pred.decisions[j])
                if self.options.get("save_maps"):
                    write_npy(inside(self.out, f"maps/{rels[i]}.npy"), np.asarray(pred.maps[j], np.float32))
        return rows


class RoadWorker(ModelWorker):
    """road: image score, normalized, decision and flagged pixels; the score maps and panels of `road predict`."""

    task = "road"
    columns = ("path", "score", "normalized", "decision", "flagged_pixels", "error")

    def setup(self) -> None:
        self.decision = self.model.config.score
        self.saved = tuple(dict.fromkeys((self.decision, *self.options.get("save_scores", ()))))
        self.names = tuple(dict.fromkeys((*self.saved, "msp")))
        self.threshold = self.model.pixel_threshold

    def score(self, batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        from oddspot.road.panels import make_panel

        rows = []
        for i, (path, stem, error) in enumerate(zip(_text(batch["path"]), _text(batch["stem"]), _text(batch["error"]))):
            row: dict[str, Any] = {"path": path, "score": None, "normalized": None, "decision": None,
                                   "flagged_pixels": None, "error": error or None}
            rows.append(row)
            if error:
                continue
            image = pixels(batch, i)
            try:
                result = self.model.analyze(image, self.names, path)  # a too-small image is refused here
            except OddspotError as exc:
                row["error"] = str(exc)
                continue
            dmap = result.maps[self.decision]
            for name in self.saved:
                write_npy(inside(self.out, f"{stem}_{name}.npy"), result.maps[name].astype(np.float32))
            if self.options.get("panels"):
                th = self.threshold
                write_png(inside(self.out, f"{stem}_panel.png"),
                          make_panel(image, result.classes, 1.0 - result.maps["msp"], dmap, th["threshold"], th["spread"]))
            value = self.model.image_score(dmap)
            normalized, decided = self.model.decide(np.array([value]))
            row.update(score=value, flagged_pixels=int((dmap >= self.threshold["threshold"]).sum()),
                       normalized=None if normalized is None else float(normalized[0]),
                       decision=None if decided is None else int(decided[0]))
        return rows


class VideoWorker(ModelWorker):
    """video: one row per frame of each video (the actor decodes the video itself); a video that fails is one error row."""

    task = "video"
    columns = ("source", "video", "frame", "path", "score", "normalized", "decision", "error")

    def score(self, batch: dict[str, np.ndarray]) -> list[dict[str, Any]]:
        from oddspot.video.datasets import open_videos
        from oddspot.video.pipeline import _frame_paths

        cache = self.options.get("cache_dir")
        rows: list[dict[str, Any]] = []
        for source, vid in zip(_text(batch["source"]), _text(batch["video"])):
            video = None
            try:
                found, _ = open_videos(source, cache_dir=None if cache is None else Path(cache))
                video = found[0]
                pred = self.model.predict([video], protocol=self.options.get("protocol", "trained"))[0]
                paths = _frame_paths(video, len(pred.scores))
            except OddspotError as exc:
                rows.append({"source": source, "video": vid, "frame": None, "path": source, "score": None,
                             "normalized": None, "decision": None, "error": str(exc)})
                continue
            finally:
                if video is not None:
                    video.release()
            for t in range(len(pred.scores)):
                rows.append({"source": source, "video": pred.name, "frame": t, "path": paths[t],
                             "score": float(pred.scores[t]), "normalized": float(pred.normalized[t]),
                             "decision": None if pred.decisions is None else int(bool(pred.decisions[t])), "error": None})
        return rows


WORKERS: dict[str, type[ModelWorker]] = {"inspect": InspectWorker, "road": RoadWorker, "video": VideoWorker}


def warning_line(path: str, error: str) -> str:
    """The line printed for an input that was listed with its error."""
    return f"skipped: {safe_text(error)}" if path in error else f"skipped: {safe_text(path)}: {safe_text(error)}"
