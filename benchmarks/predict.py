"""Inference speed and accuracy per runtime: backbone-only, end-to-end `oddspot predict`, demo accuracy.

Usage: python benchmarks/predict.py [--images 1000] [--train 200] [--threads 2] [--skip-accuracy] [--skip-road]

Prints, in one run and on the same machine state:
1. backbone-only img/s at 224 px: torch eager (batch 16) and each exported runtime / precision (batch 1);
2. end-to-end `oddspot predict` (a fresh process: imports, decode, scoring, scores.csv; no heatmaps)
   on N JPEGs of 224 px with a 1% and a 10% bank, per runtime, with each process's peak RSS;
3. mean image AUROC / AUPRO on the demo (three textures) for torch, OpenVINO fp32, bf16 and int8;
4. the road network's figures (benchmarks/road_export.py), when that benchmark is present.
Asserts nothing (the tests do that).
"""

from __future__ import annotations

import argparse
import json
import os
import runpy
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
from PIL import Image

from oddspot.data.demo_dataset import texture_photo

ODDSPOT = [str(Path(sys.executable).with_name("oddspot"))]


def tiles(n: int, size: int, seed: int) -> list[np.ndarray]:
    photos = [texture_photo(t) for t in ("brick", "grass", "gravel")]
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        photo = photos[i % 3]
        y, x = rng.integers(0, photo.shape[0] - size), rng.integers(0, photo.shape[1] - size)
        out.append(np.ascontiguousarray(photo[y:y + size, x:x + size]))
    return out


def run_cli(args: list[str]) -> tuple[float, float, str]:
    """Wall seconds and peak RSS (MB) of one `oddspot ...` process."""
    # GNU time forks the process from a small parent: a child forked from this (large) benchmark
    # process would report this process's peak as its own.
    with tempfile.NamedTemporaryFile("r", suffix=".rss") as rss:
        t = time.perf_counter()
        proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", rss.name, *ODDSPOT, *args], capture_output=True, text=True)
        seconds = time.perf_counter() - t
        if proc.returncode != 0:
            raise SystemExit(f"oddspot {' '.join(args)} failed:\n{proc.stdout}{proc.stderr}")
        return seconds, float(rss.read().split()[-1]) / 1024.0, proc.stdout + proc.stderr


def backbone_rates(run: Path, threads: int, n: int) -> None:
    import torch

    from oddspot.export.folder import export_run
    from oddspot.runs.registry import load_model
    from oddspot.runtime.engine import bf16_supported, set_threads

    torch.set_num_threads(threads)
    set_threads(threads)
    images = tiles(n, 224, 5)
    model = load_model(run)
    x = model._preprocess(images[:16])
    with torch.no_grad():
        model.trunk_features(x)
        t = time.perf_counter()
        for lo in range(0, n, 16):
            model.trunk_features(model._preprocess(images[lo:lo + 16]))
        torch_rate = n / (time.perf_counter() - t)
    print(f"\n## Backbone only (EfficientNet-Lite0 to stage5, 224 px, {threads} threads; bf16 on this CPU: "
          f"{'yes' if bf16_supported() else 'no (runs as fp32)'})")
    print("| runtime | precision | img/s | x torch |")
    print("|---|---|---|---|")
    print(f"| torch eager (batch 16) | fp32 | {torch_rate:.0f} | 1.0 |")
    with tempfile.TemporaryDirectory() as tmp:
        for fmt, precision in (("openvino", "fp32"), ("openvino", "bf16"), ("openvino", "int8"), ("onnx", "fp32"),
                               ("onnx", "int8")):
            out = Path(tmp) / f"{fmt}-{precision}"
            export_run(run, fmt, precision, out, calibration=None, samples=32)
            engine = load_model(out).graphs["trunk"].engine
            from oddspot.imaging import resize_image

            inputs = [resize_image(img, 224)[None] for img in images]
            engine(inputs[0])
            t = time.perf_counter()
            for lo in range(0, n, 16):  # as predict calls it: 16 images side by side (one per stream on OpenVINO)
                engine.run_many(inputs[lo:lo + 16])
            rate = n / (time.perf_counter() - t)
            print(f"| {engine.runtime} (one image per graph call) | {engine.describe().split(' ', 1)[1]} | {rate:.0f} | "
                  f"{rate / torch_rate:.1f} |")


def end_to_end(data: Path, runs: dict[str, Path], images: Path, n: int, threads: int) -> None:
    print(f"\n## End-to-end `oddspot predict` on {n} JPEGs of 224 px (fresh process; decode -> scores.csv; no heatmaps)")
    print("| bank | runtime | seconds | img/s | peak RSS MB |")
    print("|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for bank, run in runs.items():
            for runtime, search in (("openvino", "exact"), ("openvino", "ivf"), ("openvino", "hnsw"), ("onnxruntime", "exact"),
                                    ("torch", "exact")):
                run_cli(["predict", str(run), str(images), "-o", f"{tmp}/warm", "--runtime", runtime, "--no-heatmaps",
                         "--threads", str(threads)])  # exports and caches the graph once
                seconds, rss, _ = run_cli(["predict", str(run), str(images), "-o", f"{tmp}/{bank}-{runtime}-{search}",
                                           "--runtime", runtime, "--search", search, "--no-heatmaps", "--threads", str(threads)])
                label = runtime if search == "exact" else f"{runtime} + {search} search"
                print(f"| {bank} | {label} | {seconds:.1f} | {n / seconds:.0f} | {rss:.0f} |")


def search_recall(run: Path, n: int) -> None:
    """Recall of HNSW against the exact search on the patches of `n` new images, and the score change."""
    from oddspot.neighbors import KNNIndex
    from oddspot.runs.registry import load_model

    model = load_model(run)
    queries = np.concatenate([model.patch_features(tiles(8, 224, 7 + i))[:8] for i in range(0, n, 8)])
    queries = queries.reshape(-1, queries.shape[-1])
    exact = KNNIndex(model.memory_bank)
    t = time.perf_counter()
    d0, i0 = exact.search(queries)
    t_exact = time.perf_counter() - t
    print(f"\n## Search on the 10% bank ({model.memory_bank.shape[0]} entries), {queries.shape[0]} patches of {n} images")
    print(f"exact: {queries.shape[0] / t_exact:,.0f} patches/s")
    for search in ("ivf", "hnsw"):
        t = time.perf_counter()
        approx = KNNIndex(model.memory_bank, search)
        t_build = time.perf_counter() - t
        t = time.perf_counter()
        d1, i1 = approx.search(queries)
        t_search = time.perf_counter() - t
        print(f"{search}: built in {t_build:.1f} s, {queries.shape[0] / t_search:,.0f} patches/s ({t_exact / t_search:.1f}x); "
              f"recall@1 {np.mean(i0[:, 0] == i1[:, 0]):.4f}; patch score change: mean {np.mean(d1 - d0):.2e}, "
              f"max {np.max(d1 - d0):.2e} (never negative: {bool((d1 >= d0).all())})")


def accuracy(tmp: Path, threads: int) -> None:
    print("\n## Demo accuracy per runtime (mean over brick, grass, gravel; validation split)")
    data = tmp / "demo-data"
    run_cli(["inspect", "data", "-o", str(data)])
    table: dict[str, list[tuple[float, float]]] = {}
    for category in ("brick", "grass", "gravel"):
        run = tmp / f"demo-{category}"
        run_cli(["fit", str(data), "-c", category, "-o", str(run), "--threads", str(threads)])
        for label, args in (("torch fp32", ["--runtime", "torch"]), ("openvino fp32", ["--runtime", "openvino"]),
                            ("openvino fp32 + ivf", ["--runtime", "openvino", "--search", "ivf"]),
                            ("openvino fp32 + hnsw", ["--runtime", "openvino", "--search", "hnsw"]),
                            ("openvino bf16", ["--runtime", "openvino", "--precision", "bf16"]),
                            ("openvino int8", ["--runtime", "openvino", "--precision", "int8"]),
                            ("onnxruntime int8", ["--runtime", "onnxruntime", "--precision", "int8"])):
            out = tmp / f"eval-{category}-{label.replace(' ', '-')}"
            run_cli(["evaluate", str(run), str(data), "-c", category, "-o", str(out), "--bootstrap", "0", "--gallery", "0",
                     "--threads", str(threads), *args])
            m = json.loads((out / "metrics.json").read_text())
            m = m.get("metrics", m)
            table.setdefault(label, []).append((m["image"]["auroc"], m["pixel"]["aupro"]))
    base = np.mean(table["torch fp32"], axis=0)
    print("| runtime | image AUROC | AUPRO | delta AUROC | delta AUPRO |")
    print("|---|---|---|---|---|")
    for label, rows in table.items():
        auroc, aupro = np.mean(rows, axis=0)
        print(f"| {label} | {auroc:.4f} | {aupro:.4f} | {auroc - base[0]:+.4f} | {aupro - base[1]:+.4f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=1000)
    parser.add_argument("--train", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-accuracy", action="store_true")
    parser.add_argument("--skip-road", action="store_true")
    args = parser.parse_args()
    t_help = min(run_cli(["--help"])[0] for _ in range(3))
    print(f"`oddspot --help`: {t_help:.2f} s (best of 3)")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = tmp / "data"
        good = data / "bench" / "train" / "good"
        good.mkdir(parents=True)
        (data / "bench" / "test" / "good").mkdir(parents=True)
        for i, img in enumerate(tiles(args.train, 224, 0)):
            Image.fromarray(img).save(good / f"{i:04d}.png")
        for i, img in enumerate(tiles(4, 224, 9)):
            Image.fromarray(img).save(data / "bench" / "test" / "good" / f"{i:04d}.png")
        images = tmp / "images"
        images.mkdir()
        for i, img in enumerate(tiles(args.images, 224, 1)):
            Image.fromarray(img).save(images / f"{i:05d}.jpg", quality=90)
        runs = {}
        for ratio in (0.01, 0.1):
            config = tmp / f"r{ratio}.yaml"
            config.write_text(f"coreset_ratio: {ratio}\n")
            runs[f"{ratio:.0%}"] = tmp / f"run-{ratio}"
            run_cli(["fit", str(data), "-c", "bench", "--split", "standard", "-o", str(runs[f"{ratio:.0%}"]), "--config",
                     str(config), "--threads", str(args.threads)])
        bank = json.loads((runs["10%"] / "model.json").read_text())["state"]["memory_bank_size"]
        print(f"banks: 1% and 10% of {args.train} training images' patches (10% = {bank} entries)")
        backbone_rates(runs["1%"], args.threads, 64)
        search_recall(runs["10%"], 48)
        end_to_end(data, runs, images, args.images, args.threads)
        if not args.skip_accuracy:
            accuracy(tmp, args.threads)
    road = Path(__file__).with_name("road_export.py")
    if not args.skip_road and road.exists():
        print("\n## Road network (benchmarks/road_export.py)")
        sys.argv = [str(road)]
        runpy.run_path(str(road), run_name="__main__")


if __name__ == "__main__":
    main()
