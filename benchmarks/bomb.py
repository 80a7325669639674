"""A decompression bomb among normal images: `oddspot predict` must skip it, score the rest, stay small.

    .venv/bin/python benchmarks/bomb.py [--side 20000] [--normal 20] [--within] [--keep DIR]

Builds, in a temporary folder, a --side x --side PNG bomb (8-bit grey, constant: about 400 KB for
20000 px, written row by row through a streaming zlib so the builder holds one row) and --normal
texture tiles of the demo dataset, fits a tiny PatchCore in this process, then runs `oddspot
predict` on the folder in a subprocess. It prints the exit code, the rows of scores.csv, the
bomb's errors.csv line, the wall time and the subprocess's peak RSS (from `os.wait4`).
Acceptance: exit 0, the bomb listed, every normal image scored, peak RSS under 2 GB.

With --within it also predicts, each alone, an 8000 x 8000 PNG and JPEG (64 Mpx, the default
budget): the memory one image at the budget takes (the JPEG is decoded at a reduced DCT scale).
"""

from __future__ import annotations

import argparse
import csv
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

GB = 1024**3


def write_constant_png(path: Path, width: int, height: int, channels: int = 1, value: int = 0) -> None:
    """A constant 8-bit grey (1 channel) or RGB (3) PNG, compressed row by row: memory of one row."""

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    row = b"\0" + bytes([value]) * (width * channels)  # filter byte "none", then the pixels
    packer = zlib.compressobj(9)
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0 if channels == 1 else 2, 0, 0, 0)))
        pending = bytearray()
        for _ in range(height):
            pending += packer.compress(row)
            if len(pending) >= 1 << 20:
                fh.write(chunk(b"IDAT", bytes(pending)))
                pending.clear()
        pending += packer.flush()
        fh.write(chunk(b"IDAT", bytes(pending)))
        fh.write(chunk(b"IEND", b""))


def run_predict(run: Path, inputs: Path, out: Path) -> tuple[int, float, float, str]:
    """`oddspot predict` in a subprocess: (exit code, wall seconds, peak RSS in bytes, stderr)."""
    cmd = [sys.executable, "-m", "oddspot", "predict", str(run), str(inputs), "-o", str(out), "--threads", "2"]
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
    return proc.returncode, wall, usage.ru_maxrss * 1024.0, err


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--side", type=int, default=20000, help="Width and height of the bomb.")
    parser.add_argument("--normal", type=int, default=20, help="Normal images beside it.")
    parser.add_argument("--within", action="store_true", help="Also predict a 64 Mpx PNG and JPEG, each alone.")
    parser.add_argument("--keep", type=Path, default=None, help="Work here and keep the files (default: a temp folder).")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(2)
    from oddspot import inspect
    from oddspot.data.demo_dataset import build_demo_dataset

    root = args.keep or Path(tempfile.mkdtemp(prefix="oddspot-bomb-"))
    try:
        t0 = time.perf_counter()
        folder = root / "inputs"
        folder.mkdir(parents=True, exist_ok=True)
        write_constant_png(folder / "bomb.png", args.side, args.side)
        size_kb = (folder / "bomb.png").stat().st_size / 1024
        data = build_demo_dataset(root / "data", ("brick",), n_train=max(args.normal, 10), n_test_good=4,
                                  n_test_bad=6, tile=160, seed=0)
        for tile in sorted((data / "brick" / "train" / "good").glob("*.png"))[: args.normal]:
            shutil.copy(tile, folder / tile.name)
        print(f"bomb: {args.side}x{args.side} PNG, {size_kb:.0f} KB; {args.normal} normal 160 px tiles "
              f"(built in {time.perf_counter() - t0:.1f} s)")
        run = root / "run"
        shutil.rmtree(run, ignore_errors=True)
        inspect.fit(data, "brick", run, "patchcore", {"image_size": 224, "coreset_ratio": 0.1}, "validation", 0)

        out = root / "pred"
        shutil.rmtree(out, ignore_errors=True)
        code, wall, rss, err = run_predict(run, folder, out)
        scored = 0
        if (out / "scores.csv").exists():
            with open(out / "scores.csv", newline="", encoding="utf-8") as fh:
                scored = len(list(csv.DictReader(fh)))
        bomb_line = next((ln.strip() for ln in (out / "errors.csv").read_text(encoding="utf-8").splitlines()
                          if "bomb.png" in ln), "(not listed)") if (out / "errors.csv").exists() else "(no errors.csv)"
        print(f"exit code {code}; scores.csv rows {scored}; wall {wall:.1f} s; peak RSS {rss / GB:.2f} GB")
        print(f"errors.csv: {bomb_line}")
        ok = code == 0 and scored == args.normal and "bomb.png" in bomb_line and rss < 2 * GB
        print(f"acceptance (exit 0, bomb listed, {args.normal} scored, peak RSS < 2 GB): {'ok' if ok else 'FAILED'}")
        if code != 0:
            print(err.strip().splitlines()[-1] if err.strip() else "(no stderr)")

        if args.within:
            from PIL import Image

            for name in ("within.png", "within.jpg"):
                alone = root / f"alone-{name}"
                shutil.rmtree(alone, ignore_errors=True)
                alone.mkdir()
                if name.endswith(".png"):
                    write_constant_png(alone / name, 8000, 8000, channels=3, value=128)
                else:
                    Image.new("RGB", (8000, 8000), (128, 96, 64)).save(alone / name, quality=90)
                pred = root / f"pred-{name}"
                shutil.rmtree(pred, ignore_errors=True)
                code, wall, rss, err = run_predict(run, alone, pred)
                print(f"{name} (8000x8000, 64 Mpx) alone: exit code {code}; wall {wall:.1f} s; peak RSS {rss / GB:.2f} GB")
        return 0 if ok else 1
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
