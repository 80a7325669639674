"""Scale-out on Ray: single-process `inspect predict` against `--engine ray` with 1 and 2 actors.

Usage: python benchmarks/ray_scale.py [--images 5000] [--size 224] [--train 40] [--runtime auto]
       [--batch 16] [--out FOLDER]
Prints single-process img/s (all cores); Ray img/s with 1 actor (all cores) and 2 actors (a core each),
wall and after start-up (the start-up is measured by a run of two batches per actor); Ray's overhead
per image against the single process on the same cores; and each actor's peak RSS.
The same PNG tiles and model serve every run; nothing but scores.parquet/scores.csv is written
(no heatmaps, no maps). Asserts nothing (the tests do that).
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as the CLI: idle OpenMP threads sleep

import numpy as np

from oddspot.data.demo_dataset import texture_photo
from oddspot.files import write_png


def tiles(folder: Path, n: int, size: int, seed: int) -> list[np.ndarray]:
    """`n` tiles of the brick photo written as PNG files under `folder` (and returned)."""
    photo = texture_photo("brick")
    rng = np.random.default_rng(seed)
    ys, xs = rng.integers(0, photo.shape[0] - size, n), rng.integers(0, photo.shape[1] - size, n)
    out = []
    for i, (y, x) in enumerate(zip(ys, xs)):
        tile = np.ascontiguousarray(photo[y:y + size, x:x + size])
        write_png(folder / f"{i // 1000:03d}" / f"{i:06d}.png", tile)
        out.append(tile)
    return out


def timed(work) -> float:
    t = time.perf_counter()
    work()
    return time.perf_counter() - t


class ActorMemory:
    """Samples the peak RSS (VmHWM) of every Ray Data actor process (`ray::MapWorker...`) while it runs,
    leaving out the processes in `ignore` (actors of earlier runs)."""

    def __init__(self, every: float = 0.5, ignore: set[int] | None = None) -> None:
        self.every = every
        self.ignore = ignore or set()
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for pid in (p for p in os.listdir("/proc") if p.isdigit() and int(p) not in self.ignore):
                try:
                    if b"MapWorker" not in Path(f"/proc/{pid}/cmdline").read_bytes():
                        continue
                    status = Path(f"/proc/{pid}/status").read_text()
                except OSError:
                    continue
                for line in status.splitlines():
                    if line.startswith("VmHWM:"):
                        self.peaks[int(pid)] = max(self.peaks.get(int(pid), 0.0), int(line.split()[1]) / 1024.0)
            self._stop.wait(self.every)

    def __enter__(self) -> ActorMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=5000)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--train", type=int, default=40)
    parser.add_argument("--runtime", default="auto", choices=("auto", "torch", "openvino", "onnxruntime"))
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--out", type=Path, default=None, help="Work folder (default: a temporary one, deleted).")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    work = args.out or Path(tempfile.mkdtemp(prefix="oddspot-ray-bench-"))
    try:
        run(args, cores, work)
    finally:
        if args.out is None:
            shutil.rmtree(work, ignore_errors=True)


def run(args: argparse.Namespace, cores: int, work: Path) -> None:
    import ray
    import torch

    from oddspot import inspect
    from oddspot.detectors import PatchCore
    from oddspot.export import load_for_inference
    from oddspot.scale.predict import predict

    t = time.perf_counter()
    train = tiles(work / "train", args.train, args.size, 0)
    tiles(work / "images", args.images, args.size, 1)
    print(f"data: {args.images} PNG tiles of {args.size} px, {args.train} training tiles ({time.perf_counter() - t:.0f} s)")
    torch.set_num_threads(cores)
    PatchCore(image_size=args.size, coreset_ratio=0.1).fit(train).save(work / "run")
    model = load_for_inference(work / "run", "inspect", args.runtime)  # exports (and caches) the graph once
    print(f"model: PatchCore {args.size} px, coreset 0.1 of {args.train} tiles, runtime {model.runtime}, "
          f"{cores} cores, batch {args.batch}")

    single = timed(lambda: inspect.predict(work / "run", [work / "images"], work / "single", batch=args.batch, model=model,
                                           heatmaps=False, warn=lambda m: None))
    print(f"single process ({cores} threads): {args.images / single:7.1f} img/s  ({single:.1f} s)")

    t = time.perf_counter()
    ray.init(num_cpus=cores, include_dashboard=False, log_to_driver=False, logging_level="error")
    print(f"ray.init (local, {cores} CPUs): {time.perf_counter() - t:.1f} s")
    files = sorted((work / "images").rglob("*.png"))
    seen: set[int] = set()
    for actors in (1, 2):
        threads = max(1, cores // actors)
        n_small = min(args.images, 2 * actors * args.batch)
        small = work / f"small{actors}.csv"
        small.write_text("path\n" + "".join(f"{f}\n" for f in files[:n_small]))
        def ray_predict(source: Path, out: Path, actors: int = actors, threads: int = threads) -> float:
            return timed(lambda: predict("inspect", work / "run", [source], out, actors=actors, batch_size=args.batch,
                                         threads=threads, runtime=args.runtime, warn=lambda m: None))

        with ActorMemory(ignore=seen) as warmup:
            took_small = ray_predict(small, work / f"small{actors}")
        seen |= set(warmup.peaks)
        with ActorMemory(ignore=seen) as memory:
            took = ray_predict(work / "images", work / f"ray{actors}")
        seen |= set(memory.peaks)
        marginal = (took - took_small) / (args.images - n_small)
        peaks = sorted(memory.peaks.values(), reverse=True)
        rss = ", ".join(f"{v:.0f}" for v in peaks[:actors]) or "n/a"
        if len(peaks) > actors:  # worker processes that held a MapWorker title only briefly
            rss += f" (and {len(peaks) - actors} short-lived: {', '.join(f'{v:.0f}' for v in peaks[actors:])})"
        label = f"{actors} actor{'s' if actors > 1 else ''} x {threads} thread{'s' if threads > 1 else ''}"
        print(f"ray, {label}: {args.images / took:7.1f} img/s wall ({took:.1f} s), {1 / marginal:7.1f} img/s after start-up; "
              f"start-up {took_small - n_small * marginal:.1f} s; overhead per image vs single process "
              f"{(marginal - single / args.images) * 1e3:+.2f} ms; peak RSS per actor {rss} MB")
    ray.shutdown()


if __name__ == "__main__":
    main()
