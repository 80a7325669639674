"""Generators of tiny datasets in the official layouts of the public inspection benchmarks.

Each writes the exact folder and file names, mask encodings and split files of its dataset
(MVTec AD 2, VisA, MVTec LOCO AD, BTech, Kolektor SDD2, and the generic folder layout), with
small noise images whose defects are bright squares where the mask says. Each returns the
dataset root. `write_avi` writes the video files of the video layouts' fixtures.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
from PIL import Image

AD2_TAGS = ("regular", "overexposed", "underexposed", "shift_1", "shift_2", "shift_3")
LOCO_DEFECTS = [
    {"defect_name": "missing_almonds", "pixel_value": 255, "saturation_threshold": 1, "relative_saturation": True},
    {"defect_name": "too_many_oranges", "pixel_value": 254, "saturation_threshold": 20, "relative_saturation": False},
    {"defect_name": "box_damaged", "pixel_value": 243, "saturation_threshold": 1.0, "relative_saturation": True},
]


def _image(rng: np.random.Generator, size: int, box: tuple[int, int, int, int] | None = None) -> np.ndarray:
    img = (96 + 32 * rng.random((size, size, 3))).astype(np.uint8)
    if box is not None:
        y0, x0, y1, x1 = box
        img[y0:y1, x0:x1] = 250
    return img


def _box(rng: np.random.Generator, size: int) -> tuple[int, int, int, int]:
    side = max(2, size // 4)
    y0, x0 = (int(v) for v in rng.integers(0, size - side, 2))
    return y0, x0, y0 + side, x0 + side


def _mask(size: int, box: tuple[int, int, int, int], value: int = 255) -> np.ndarray:
    m = np.zeros((size, size), np.uint8)
    y0, x0, y1, x1 = box
    m[y0:y1, x0:x1] = value
    return m


def _save(path: Path, arr: np.ndarray, **kwargs) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path, **kwargs)
    return path


def make_mvtec_ad2(root: Path, category: str = "can", n_train: int = 6, n_val: int = 3, n_good: int = 2,
                   n_bad: int = 4, n_private: int = 3, size: int = 32, seed: int = 0) -> Path:
    """<cat>/train/good, validation/good, test_public/{good,bad}, test_public/ground_truth/bad/<stem>_mask.png
    (0/255), test_private and test_private_mixed (flat); names `NNN_<lighting tag>.png`."""
    rng = np.random.default_rng(seed)
    folder = root / category

    def name(i: int) -> str:
        return f"{i:03d}_{AD2_TAGS[i % len(AD2_TAGS)]}.png"

    for i in range(n_train):
        _save(folder / "train" / "good" / name(i), _image(rng, size))
    for i in range(n_val):
        _save(folder / "validation" / "good" / name(i), _image(rng, size))
    for i in range(n_good):
        _save(folder / "test_public" / "good" / name(i), _image(rng, size))
    for i in range(n_bad):
        box = _box(rng, size)
        _save(folder / "test_public" / "bad" / name(i), _image(rng, size, box))
        _save(folder / "test_public" / "ground_truth" / "bad" / f"{Path(name(i)).stem}_mask.png", _mask(size, box))
    for part in ("test_private", "test_private_mixed"):
        for i in range(n_private):
            _save(folder / part / name(i), _image(rng, size, _box(rng, size) if i % 2 else None))
    return root


def make_visa(root: Path, categories: tuple[str, ...] = ("candle", "pcb1"), n_train: int = 6, n_test_normal: int = 3,
              n_anomaly: int = 4, size: int = 32, normal_digits: int = 4, seed: int = 0) -> Path:
    """<cat>/Data/Images/{Normal,Anomaly}/*.JPG, <cat>/Data/Masks/Anomaly/*.png (raw values, not 0/255),
    split_csv/1cls.csv (object,split,label,image,mask; paths relative to root). With `normal_digits`
    3, normal and anomalous images share their file names, as numbers do in VisA."""
    rng = np.random.default_rng(seed)
    rows = []
    for cat in categories:
        data = root / cat / "Data"
        for i in range(n_train + n_test_normal):
            rel = f"{cat}/Data/Images/Normal/{i:0{normal_digits}d}.JPG"
            _save(root / rel, _image(rng, size), quality=95)
            rows.append([cat, "train" if i < n_train else "test", "normal", rel, ""])
        for i in range(n_anomaly):
            box = _box(rng, size)
            rel = f"{cat}/Data/Images/Anomaly/{i:03d}.JPG"
            _save(root / rel, _image(rng, size, box), quality=95)
            _save(data / "Masks" / "Anomaly" / f"{i:03d}.png", _mask(size, box, value=1 + i % 2))
            rows.append([cat, "test", "anomaly", rel, f"{cat}/Data/Masks/Anomaly/{i:03d}.png"])
        (data / "Images" / "Anomaly" / "._000.JPG").write_bytes(b"AppleDouble")  # archive debris, never listed
    (root / "split_csv").mkdir(parents=True, exist_ok=True)
    with (root / "split_csv" / "1cls.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["object", "split", "label", "image", "mask"])
        writer.writerows(rows)
    return root


def make_loco(root: Path, category: str = "breakfast_box", n_train: int = 6, n_val: int = 3, n_good: int = 3,
              n_logical: int = 3, n_structural: int = 3, size: int = 32, seed: int = 0) -> Path:
    """<cat>/train/good, validation/good, test/{good,logical_anomalies,structural_anomalies},
    ground_truth/<family>/<stem>/000.png, 001.png (one file per defect, holding its pixel_value),
    defects_config.json. Every second anomalous image has two mask files (disjoint squares)."""
    rng = np.random.default_rng(seed)
    folder = root / category
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "defects_config.json").write_text(json.dumps(LOCO_DEFECTS, indent=2))
    for part, n in (("train", n_train), ("validation", n_val), ("test", n_good)):
        for i in range(n):
            _save(folder / part / "good" / f"{i:03d}.png", _image(rng, size))
    for family, n in (("logical_anomalies", n_logical), ("structural_anomalies", n_structural)):
        for i in range(n):
            boxes = [(0, 0, size // 4, size // 4)] + ([(size // 2, size // 2, size - 2, size - 2)] if i % 2 else [])
            img = _image(rng, size)
            for j, (y0, x0, y1, x1) in enumerate(boxes):
                img[y0:y1, x0:x1] = 250
                value = LOCO_DEFECTS[j]["pixel_value"]
                _save(folder / "ground_truth" / family / f"{i:03d}" / f"{j:03d}.png", _mask(size, (y0, x0, y1, x1), value))
            _save(folder / "test" / family / f"{i:03d}.png", img)
    return root


def make_btech(root: Path, product: str = "01", image_ext: str = ".bmp", mask_ext: str = ".png", n_train: int = 6,
               n_ok: int = 2, n_ko: int = 3, size: int = 32, seed: int = 0) -> Path:
    """<product>/train/ok, test/{ok,ko}, ground_truth/ko/<stem><mask_ext> (0/255)."""
    rng = np.random.default_rng(seed)
    folder = root / product
    for i in range(n_train):
        _save(folder / "train" / "ok" / f"{i:04d}{image_ext}", _image(rng, size))
    for i in range(n_ok):
        _save(folder / "test" / "ok" / f"{i:04d}{image_ext}", _image(rng, size))
    for i in range(n_ko):
        box = _box(rng, size)
        _save(folder / "test" / "ko" / f"{i:04d}{image_ext}", _image(rng, size, box))
        _save(folder / "ground_truth" / "ko" / f"{i:04d}{mask_ext}", _mask(size, box))
    return root


def make_ksdd2(root: Path, n_train_neg: int = 6, n_train_pos: int = 2, n_test_neg: int = 3, n_test_pos: int = 3,
               size: int = 32, seed: int = 0) -> Path:
    """train/ and test/ with `<id>.png` beside `<id>_GT.png`; negatives have an all-zero GT."""
    rng = np.random.default_rng(seed)
    ident = 10000
    for part, n_neg, n_pos in (("train", n_train_neg, n_train_pos), ("test", n_test_neg, n_test_pos)):
        for i in range(n_neg + n_pos):
            box = _box(rng, size) if i >= n_neg else None
            _save(root / part / f"{ident}.png", _image(rng, size, box))
            _save(root / part / f"{ident}_GT.png", _mask(size, box) if box else np.zeros((size, size), np.uint8))
            ident += 1
    return root


def make_folder(root: Path, n_normal: int = 10, n_abnormal: int = 3, size: int = 32, seed: int = 0) -> Path:
    """normal/*.png, abnormal/*.jpg and masks/<stem>_mask.png (the first one as <stem>.png)."""
    rng = np.random.default_rng(seed)
    for i in range(n_normal):
        _save(root / "normal" / f"n{i:02d}.png", _image(rng, size))
    for i in range(n_abnormal):
        box = _box(rng, size)
        _save(root / "abnormal" / f"a{i:02d}.jpg", _image(rng, size, box), quality=95)
        _save(root / "masks" / (f"a{i:02d}.png" if i == 0 else f"a{i:02d}_mask.png"), _mask(size, box))
    return root


def write_avi(path: Path, frames: list[np.ndarray], rate: int = 25) -> None:
    """An MJPEG .avi of RGB uint8 frames (skips the test when PyAV is missing)."""
    import pytest

    av = pytest.importorskip("av")
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("mjpeg", rate=rate)
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuvj420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
