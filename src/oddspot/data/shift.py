"""Domain-shift generator: a seeded, transformed copy of an MVTec-layout dataset.

Three transform families, applied in this order to every image (masks get the geometric part
only, with the same matrix, nearest-neighbour, so they stay binary and aligned):

- geometric: rotation, random resized crop, translation, composed into one affine warp
  (`scipy.ndimage.affine_transform`, order 1 for images, 0 for masks, reflected borders);
- photometric: brightness / contrast / saturation factors, Gaussian blur, Gaussian noise
  (sigma on [0, 1] intensities);
- illumination (on about half of the images, a coin flip per image): a smooth linear or radial
  gradient that darkens the image by up to `strength`.

The ranges below are the "moderate" level; `mild` and `severe` scale them (SEVERITY_SCALE), and
every random draw is a uniform number in [0, 1] mapped onto the scaled range, so for a given seed
a severe shift is the same shift as a mild one, only stronger. Image i (in sorted order of its
path relative to the dataset root) is drawn with seed `seed + i`. The manifest (`shift.json`)
records every parameter drawn per image; `apply_shift(image, mask, params)` reproduces a shifted
file from it exactly.
"""

from __future__ import annotations

import io
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from oddspot import __version__
from oddspot.data.image_io import is_image_file, read_image, read_mask
from oddspot.data.mvtec import categories as list_categories
from oddspot.choices import SEVERITY_SCALE, SHIFT_FAMILIES, SHIFT_ONLY, SHIFT_TRANSFORMS
from oddspot.errors import OddspotError
from oddspot.files import atomic_write_bytes, read_json, write_json
from oddspot.progress import track

MANIFEST_FILE = "shift.json"
MANIFEST_VERSION = 1
FAMILIES, TRANSFORMS, ONLY_CHOICES = SHIFT_FAMILIES, SHIFT_TRANSFORMS, SHIFT_ONLY

# Moderate ranges (the figures); `severity_ranges` scales them.
BASE_RANGES: dict[str, Any] = {
    "rotation_degrees": 10.0,          # angle in [-r, r]
    "crop_scale": (0.9, 1.0),          # area fraction kept by the random resized crop
    "translation_fraction": 0.05,      # shift in [-t, t] of the image side
    "color_factor": (0.7, 1.3),        # brightness, contrast, saturation factors
    "blur_kernel": (3, 5),             # odd Gaussian kernel sizes
    "noise_sigma": (0.01, 0.05),       # on [0, 1] intensities
    "illumination_strength": (0.4, 0.7),
    "illumination_probability": 0.5,
}


def severity_ranges(severity: str) -> dict[str, Any]:
    """Parameter ranges of a severity level (moderate = BASE_RANGES; mild / severe scale them)."""
    if severity not in SEVERITY_SCALE:
        raise OddspotError(f"--severity {severity!r} unknown; use one of {', '.join(SEVERITY_SCALE)}")
    s = SEVERITY_SCALE[severity]
    lo_f, hi_f = BASE_RANGES["color_factor"]
    lo_c = BASE_RANGES["crop_scale"][0]
    lo_n, hi_n = BASE_RANGES["noise_sigma"]
    lo_i, hi_i = BASE_RANGES["illumination_strength"]
    kernels = {"mild": (3, 3), "moderate": (3, 5), "severe": (5, 7)}[severity]
    return {
        "rotation_degrees": BASE_RANGES["rotation_degrees"] * s,
        "crop_scale": (max(0.5, 1.0 - (1.0 - lo_c) * s), 1.0),
        "translation_fraction": BASE_RANGES["translation_fraction"] * s,
        "color_factor": (max(0.1, 1.0 - (1.0 - lo_f) * s), 1.0 + (hi_f - 1.0) * s),
        "blur_kernel": kernels,
        "noise_sigma": (lo_n * s, hi_n * s),
        "illumination_strength": (min(0.95, lo_i * s), min(0.95, hi_i * s)),
        "illumination_probability": BASE_RANGES["illumination_probability"],
    }


def _enabled(only: str | None) -> set[str]:
    if only is None:
        return set(TRANSFORMS)
    if only in FAMILIES:
        return set(FAMILIES[only])
    if only in TRANSFORMS:
        return {only}
    raise OddspotError(f"--only {only!r} unknown; use one of {', '.join(ONLY_CHOICES)}")


def _between(u: float, lo: float, hi: float) -> float:
    return float(lo + u * (hi - lo))


def _symmetric(u: float, limit: float) -> float:
    return float((2.0 * u - 1.0) * limit)


def draw_params(seed: int, severity: str = "moderate", only: str | None = None) -> dict[str, Any]:
    """All parameters of one image's shift, drawn from `np.random.default_rng(seed)`.

    The same number of uniforms is drawn whatever `severity` and `only` are, so the
    parameters of one image differ between severities only by their scale.
    """
    r = severity_ranges(severity)
    on = _enabled(only)
    u = np.random.default_rng(seed).random(16)
    params: dict[str, Any] = {"seed": int(seed)}
    if "rotation" in on:
        params["rotation"] = {"degrees": _symmetric(u[0], r["rotation_degrees"])}
    if "crop" in on:
        area = _between(u[1], *r["crop_scale"])
        side = math.sqrt(area)
        # the crop's centre, as a fraction of the free margin (-1 .. 1 of (1 - side) / 2)
        params["crop"] = {"area": area, "side": side, "center_y": _symmetric(u[2], 1.0), "center_x": _symmetric(u[3], 1.0)}
    if "translation" in on:
        t = r["translation_fraction"]
        params["translation"] = {"dy": _symmetric(u[4], t), "dx": _symmetric(u[5], t)}
    if "color" in on:
        params["color"] = {"brightness": _between(u[6], *r["color_factor"]),
                           "contrast": _between(u[7], *r["color_factor"]),
                           "saturation": _between(u[8], *r["color_factor"])}
    if "blur" in on:
        lo, hi = r["blur_kernel"]
        choices = list(range(lo, hi + 1, 2))
        kernel = choices[min(int(u[9] * len(choices)), len(choices) - 1)]
        params["blur"] = {"kernel": kernel, "sigma": 0.3 * ((kernel - 1) * 0.5 - 1) + 0.8}
    if "noise" in on:
        params["noise"] = {"sigma": _between(u[10], *r["noise_sigma"]), "seed": int(seed)}
    if "illumination" in on and u[11] < r["illumination_probability"]:
        kind = "linear" if u[12] < 0.5 else "radial"
        params["illumination"] = {"kind": kind, "strength": _between(u[13], *r["illumination_strength"]),
                                  "angle_degrees": float(360.0 * u[14]), "center": float(u[15])}
    return params


def geometric_matrix(params: dict[str, Any], shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """(A, b) mapping output pixel (row, col) to input pixel: input = A @ output + b.

    The output is the input rotated by `rotation.degrees` (counter-clockwise on screen), cropped
    to `crop.side` of its side around the drawn centre and resized back, then translated by
    (`translation.dy`, `translation.dx`) image sides.
    """
    h, w = shape
    c = np.array([(h - 1) / 2.0, (w - 1) / 2.0])
    theta = math.radians(params.get("rotation", {}).get("degrees", 0.0))
    crop = params.get("crop", {"side": 1.0, "center_y": 0.0, "center_x": 0.0})
    move = params.get("translation", {"dy": 0.0, "dx": 0.0})
    side = float(crop["side"])
    cos, sin = math.cos(theta), math.sin(theta)
    rot = np.array([[cos, sin], [-sin, cos]])  # (row, col) frame: rows grow downwards
    a = side * rot
    crop_center = np.array([crop["center_y"] * (1 - side) / 2 * h, crop["center_x"] * (1 - side) / 2 * w])
    shift = np.array([move["dy"] * h, move["dx"] * w])
    # output q -> untranslated q - shift -> crop-window point c + crop_center + side (q - shift - c)
    # -> source point under the rotation about the centre c
    b = c + rot @ crop_center - a @ (c + shift)
    return a, b


def _warp(array: np.ndarray, a: np.ndarray, b: np.ndarray, order: int) -> np.ndarray:
    from scipy import ndimage  # here, not at the top: the CLI imports this module's choices for --help

    if array.ndim == 3:  # channels untouched: a block-diagonal 3-D affine map
        a3 = np.eye(3)
        a3[:2, :2] = a
        return ndimage.affine_transform(array, a3, offset=np.append(b, 0.0), order=order, mode="reflect")
    return ndimage.affine_transform(array, a, offset=b, order=order, mode="reflect")


def _has_geometry(params: dict[str, Any]) -> bool:
    return any(k in params for k in FAMILIES["geometric"])


def _gray(x: np.ndarray) -> np.ndarray:
    return x @ np.array([0.299, 0.587, 0.114])


def _illumination_field(p: dict[str, Any], shape: tuple[int, int]) -> np.ndarray:
    h, w = shape
    yy, xx = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    phi = math.radians(p["angle_degrees"])
    if p["kind"] == "linear":
        g = xx * math.cos(phi) + yy * math.sin(phi)
    else:  # radial: bright spot at a point on a circle of radius `center`, darker away from it
        cy, cx = p["center"] * math.sin(phi), p["center"] * math.cos(phi)
        g = np.hypot(yy - cy, xx - cx)
    g = (g - g.min()) / max(float(g.max() - g.min()), 1e-12)
    return 1.0 - p["strength"] * g


def apply_shift(image: np.ndarray, mask: np.ndarray | None, params: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    """Shift one H x W x 3 uint8 image (and its H x W bool mask) with drawn `params`."""
    x = image.astype(np.float64) / 255.0
    out_mask = mask
    if _has_geometry(params):
        a, b = geometric_matrix(params, image.shape[:2])
        x = _warp(x, a, b, order=1)
        if mask is not None:
            out_mask = _warp(mask.astype(np.uint8), a, b, order=0).astype(bool)
    if "color" in params:
        p = params["color"]
        x = x * p["brightness"]
        mean = _gray(x).mean()
        x = (x - mean) * p["contrast"] + mean
        g = _gray(x)[..., None]
        x = g + (x - g) * p["saturation"]
    if "blur" in params:
        sigma = params["blur"]["sigma"]
        radius = (params["blur"]["kernel"] - 1) // 2
        from scipy import ndimage

        x = ndimage.gaussian_filter(x, sigma=(sigma, sigma, 0), truncate=radius / sigma, mode="reflect")
    if "noise" in params:
        noise = np.random.default_rng(params["noise"]["seed"]).standard_normal(x.shape)
        x = x + params["noise"]["sigma"] * noise
    if "illumination" in params:
        x = x * _illumination_field(params["illumination"], x.shape[:2])[..., None]
    out = np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)
    return out, out_mask


def _encode(array: np.ndarray, suffix: str) -> bytes:
    fmt = {".jpg": "JPEG", ".jpeg": "JPEG", ".bmp": "BMP", ".tif": "TIFF", ".tiff": "TIFF", ".webp": "WEBP"}.get(suffix.lower(), "PNG")
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format=fmt, **({"quality": 95} if fmt == "JPEG" else {}))
    return buf.getvalue()


def _mask_for(rel: Path) -> Path | None:
    """ground_truth/<defect>/<stem>_mask.png for test/<defect>/<file> (MVTec layout), else None."""
    parts = rel.parts
    if len(parts) == 4 and parts[1] == "test" and parts[2] != "good":
        return Path(parts[0], "ground_truth", parts[2], f"{Path(parts[3]).stem}_mask.png")
    return None


def shift_dataset(data: str | Path, out: str | Path, severity: str = "moderate", only: str | None = None,
                  seed: int = 0, warn=print) -> dict[str, Any]:
    """Write a shifted copy of the MVTec-layout dataset `data` to `out`; return the manifest.

    Every image under <category>/{train,test} is shifted; each ground-truth mask is warped with
    its image's geometry. Other files are copied unchanged. A file that cannot be decoded is
    reported through `warn`, listed under "errors" in the manifest, and skipped.
    """
    data, out = Path(data), Path(out)
    cats = list_categories(data)
    if not cats:
        raise OddspotError(f"{data}: no MVTec-layout categories (<category>/train/good) found; check DATA")
    if out.resolve() == data.resolve() or data.resolve() in out.resolve().parents:
        raise OddspotError(f"--out {out}: must not be DATA or inside it; choose another folder")
    ranges = severity_ranges(severity)
    _enabled(only)
    out.mkdir(parents=True, exist_ok=True)
    files = sorted(p.relative_to(data) for c in cats for p in (data / c).rglob("*") if p.is_file())
    masks = {m for rel in files if (m := _mask_for(rel)) is not None}
    images = [rel for rel in files if is_image_file(rel) and rel.parts[1] in ("train", "test")]
    entries: list[dict[str, Any]] = []
    errors: list[dict[str, str]] = []
    for i, rel in enumerate(track(images, f"shifting ({severity})")):
        params = draw_params(seed + i, severity, only)
        mask_rel = _mask_for(rel)
        try:
            image = read_image(data / rel)
            mask = read_mask(data / mask_rel, image.shape[:2]) if mask_rel is not None and (data / mask_rel).exists() else None
        except OddspotError as exc:
            warn(f"skipped: {exc}")
            errors.append({"path": rel.as_posix(), "error": str(exc)})
            continue
        shifted, shifted_mask = apply_shift(image, mask, params)
        atomic_write_bytes(out / rel, _encode(shifted, rel.suffix))
        entry = {"index": i, "path": rel.as_posix(), "mask": None, "params": params}
        if shifted_mask is not None:
            atomic_write_bytes(out / mask_rel, _encode(shifted_mask.astype(np.uint8) * 255, ".png"))
            entry["mask"] = mask_rel.as_posix()
        entries.append(entry)
    shifted_files = set(images) | masks
    copied = [rel for rel in files if rel not in shifted_files]
    for rel in copied:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(data / rel, out / rel)
    for extra in sorted(p for p in data.iterdir() if p.is_file() and p.name != MANIFEST_FILE):
        shutil.copyfile(extra, out / extra.name)
    manifest = {
        "format_version": MANIFEST_VERSION,
        "oddspot_version": __version__,
        "generator": "oddspot.data.shift",
        "source": str(data),
        "severity": severity,
        "only": only,
        "seed": seed,
        "seed_rule": "image i (sorted relative paths) uses seed + i",
        "ranges": {k: list(v) if isinstance(v, tuple) else v for k, v in ranges.items()},
        "categories": cats,
        "images": entries,
        "copied": [rel.as_posix() for rel in copied],
        "errors": errors,
    }
    write_json(out / MANIFEST_FILE, manifest)
    return manifest


def read_shift_manifest(folder: str | Path) -> dict[str, Any]:
    """The manifest of a shifted dataset (checking its format version)."""
    path = Path(folder) / MANIFEST_FILE
    return read_json(path, "re-run `oddspot shift`", "format_version", (MANIFEST_VERSION,),
                     missing=f"not found; {folder} was not written by `oddspot shift`")
