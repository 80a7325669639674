"""The models a service holds: loaded once from run folders, named, versioned, described and scored.

`load_served("RUN")` or `load_served("NAME=RUN")` loads an inspect or road run through
`export.load_for_inference`; the name (the folder's name by default) is the only way a request
refers to a model, and the version is the first 12 hex digits of the sha256 of its model.json,
so it changes with every refit or recalibration. Video runs are refused: they score whole videos,
not images.
"""

from __future__ import annotations

import base64
import hashlib
import io
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from oddspot.errors import OddspotError
from oddspot.runs.contract import MODEL_FILE, read_model_json
from oddspot.visualize import heatmap_overlay

SERVED_TASKS = ("inspect", "road")
OUTPUTS = ("heatmap", "mask", "map")
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
ROAD_WARMUP = (64, 64)


@dataclass
class ImageResult:
    """One image's scores: raw score, normalized score and decision (None without a calibration), map and mask."""

    score: float
    normalized: float | None
    decision: int | None
    map: np.ndarray | None
    mask: np.ndarray | None


def png_base64(array: np.ndarray) -> str:
    """A uint8 H x W or H x W x 3 array as base64 PNG text (fast compression: the service sends many)."""
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def npy_base64(array: np.ndarray) -> str:
    """A float32 array as base64 .npy bytes (`np.load(io.BytesIO(base64.b64decode(text)))` reads it back)."""
    buf = io.BytesIO()
    np.save(buf, np.ascontiguousarray(array, dtype=np.float32), allow_pickle=False)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def parse_spec(spec: str) -> tuple[str, Path]:
    """`RUN` (named after its folder) or `NAME=RUN` -> (name, folder); a name the service cannot use is an error."""
    name, sep, rest = spec.partition("=")
    if sep and NAME.fullmatch(name) and not Path(spec).exists():
        return name, Path(rest)
    path = Path(spec)
    name = path.resolve().name
    if not NAME.fullmatch(name):
        raise OddspotError(f"{spec}: {name!r} cannot name a model (letters, digits, '.', '_', '-'; up to 64); "
                           "pass NAME=RUN")
    return name, path


class ServedModel:
    """A loaded model with its name and version, scoring lists of images for the micro-batcher."""

    def __init__(self, name: str, run: Path, model: Any, version: str, oddspot_version: str) -> None:
        self.name, self.run, self.model = name, run, model
        self.task: str = model.task
        self.kind: str = model.kind
        self.runtime: str = str(getattr(model, "runtime", "torch"))
        self.version, self.oddspot_version = version, oddspot_version
        if self.task not in SERVED_TASKS:
            raise OddspotError(f"{run}: a {self.task} model; `oddspot serve` serves {' and '.join(SERVED_TASKS)} models")

    # what the model is ---------------------------------------------------------------------------
    @property
    def input_size(self) -> list[int] | None:
        """[height, width] the model resizes images to, or None when it scores images at their own size."""
        config = self.model.config
        if self.task == "road":
            size = getattr(self.model, "input_size", None) or config.train.eval_size  # an exported road graph's fixed size
            return None if size is None else [int(size[0]), int(size[1])]
        size = getattr(config, "image_size", None)
        if size is None:  # a cascade: its localizer makes the maps
            size = getattr(getattr(getattr(self.model, "localizer", None), "config", None), "image_size", None)
        return None if size is None else [int(size), int(size)]

    @property
    def thresholds(self) -> dict[str, Any]:
        """Raw image and pixel thresholds (None where the model has none); a normalized score decides at 0.5."""
        if self.task == "road":
            rule = self.model.image_rule
            return {"image": None if rule is None else float(rule.scale.threshold),
                    "pixel": float(self.model.pixel_threshold["threshold"]), "normalized": 0.5,
                    "score": self.model.config.score}
        cal = self.model.postprocess
        if cal is None:
            return {"image": None, "pixel": None, "normalized": None}
        pixel = cal.pixel_threshold
        return {"image": float(cal.image_threshold), "pixel": None if pixel is None else float(pixel), "normalized": 0.5}

    def describe(self) -> dict[str, Any]:
        """What `GET /v1/models` lists for this model."""
        return {"name": self.name, "task": self.task, "kind": self.kind, "version": self.version,
                "oddspot_version": self.oddspot_version, "runtime": self.runtime, "input_size": self.input_size,
                "thresholds": self.thresholds, "calibrated": self.thresholds["image"] is not None,
                "outputs": list(OUTPUTS)}

    # scoring --------------------------------------------------------------------------------------
    def check_image(self, image: np.ndarray, what: str) -> None:
        """Refuse, before it is queued, an image the model cannot score (so it never fails a shared batch)."""
        if self.task == "road" and min(image.shape[:2]) < 8:
            raise OddspotError(f"{what}: {image.shape[1]}x{image.shape[0]} is too small; road models need at least 8 x 8 pixels")

    def infer(self, images: list[np.ndarray], maps: bool) -> list[ImageResult]:
        """Score a batch; maps (and masks) only when `maps` (road models always make them)."""
        pred = self.model.predict(images) if self.task == "road" else self.model.predict(images, maps=maps)
        out = []
        for i in range(len(images)):
            out.append(ImageResult(
                float(pred.scores[i]),
                None if pred.normalized is None else float(pred.normalized[i]),
                None if pred.decisions is None else int(pred.decisions[i]),
                None if pred.maps is None else pred.maps[i],
                None if pred.masks is None else pred.masks[i],
            ))
        return out

    def warmup(self) -> None:
        """One grey image through every code path, so the first request does not pay for lazy set-up."""
        size = self.input_size or list(ROAD_WARMUP)
        self.infer([np.full((size[0], size[1], 3), 128, np.uint8)], maps=True)

    def render(self, image: np.ndarray, result: ImageResult, outputs: tuple[str, ...]) -> dict[str, Any]:
        """The requested pictures (base64 PNG heatmap and mask, base64 .npy map) and, for road, the summary."""
        out: dict[str, Any] = {}
        amap = result.map
        if "heatmap" in outputs:
            out["heatmap"] = None if amap is None else png_base64(self._overlay(image, amap))
        if "mask" in outputs:
            out["mask"] = None if result.mask is None else png_base64(result.mask.astype(np.uint8) * 255)
        if "map" in outputs:
            out["map"] = None if amap is None else npy_base64(amap)
        if self.task == "road" and amap is not None:
            th = self.model.pixel_threshold["threshold"]
            flagged = int((amap >= th).sum())
            out["summary"] = {"score_name": self.model.config.score, "pixel_threshold": float(th),
                              "flagged_pixels": flagged, "flagged_fraction": flagged / amap.size,
                              "max": float(amap.max()), "image_quantile": float(self.model.config.image_quantile)}
        return out

    def _overlay(self, image: np.ndarray, amap: np.ndarray) -> np.ndarray:
        if self.task == "road":  # the panels' scale: the validation threshold +- 3 spreads, threshold in the middle
            th = self.model.pixel_threshold
            width = 3 * th["spread"] if th["spread"] > 0 else max(abs(th["threshold"]), 1.0)
            return heatmap_overlay(image, amap - np.float32(th["threshold"] - width), 2 * width)
        top = float(self.model.state.get("map_display_max") or 0.0) or None
        return heatmap_overlay(image, amap, top)


def load_served(spec: str, runtime: str = "auto", precision: str = "fp32", device: str | None = None,
                search: str = "exact") -> ServedModel:
    """Load `RUN` or `NAME=RUN` on `runtime` for serving; a video run or a broken folder is a one-line error."""
    from oddspot.export import load_for_inference

    name, run = parse_spec(spec)
    meta = read_model_json(run)
    if meta["task"] not in SERVED_TASKS:
        raise OddspotError(f"{run}: a {meta['task']} model; `oddspot serve` serves {' and '.join(SERVED_TASKS)} "
                           f"models (score videos with `oddspot {meta['task']} predict`)")
    version = hashlib.sha256((run / MODEL_FILE).read_bytes()).hexdigest()[:12]
    model = load_for_inference(run, meta["task"], runtime, precision, device=device, search=search)
    return ServedModel(name, run, model, version, meta["oddspot_version"])
