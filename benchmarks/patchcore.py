"""PatchCore speed on this machine: backbone-only, fit (features + coreset) and predict throughput.

Usage: python benchmarks/patchcore.py [--sizes 224 256] [--train 200] [--test 64] [--ratio 0.1]
       [--predict-ratios 0.01 0.1] [--threads 2] [--repeats 5]
Prints figures; asserts nothing (the tests do that).
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import time

# As in the CLI: idle OpenMP threads sleep, so faiss's and torch's thread pools do not spin
# against each other while predict alternates between them. Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np
import torch

from oddspot.data.demo_dataset import texture_photo
from oddspot.detectors import PatchCore


def tiles(n: int, size: int, seed: int) -> list[np.ndarray]:
    photo = texture_photo("brick")
    rng = np.random.default_rng(seed)
    ys, xs = rng.integers(0, photo.shape[0] - size, n), rng.integers(0, photo.shape[1] - size, n)
    return [np.ascontiguousarray(photo[y:y + size, x:x + size]) for y, x in zip(ys, xs)]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def seconds(work) -> float:
    t = time.perf_counter()
    work()
    return time.perf_counter() - t


def bench(size: int, n_train: int, n_test: int, ratio: float, predict_ratios: list[float], repeats: int) -> None:
    train, test = tiles(n_train, size, 0), tiles(n_test, size, 1)
    model = PatchCore(image_size=size, coreset_ratio=ratio)
    bs = model.config.batch_size
    model.extractor(model._preprocess(train[:bs]))

    def backbone() -> None:
        for lo in range(0, n_test, bs):
            model.extractor(model._preprocess(test[lo:lo + bs]))

    fit_s = seconds(lambda: model.fit(train))
    st = model.state
    models = {r: model if r == ratio else PatchCore(image_size=size, coreset_ratio=r, backbone=model.backbone).fit(train)
              for r in predict_ratios}
    for m in models.values():
        m.predict(test[:4])
    # Backbone-only and predict runs alternate. On a shared machine whose speed drifts, the
    # throughputs are the fastest runs and the predict/backbone ratio is the median over
    # neighbouring pairs of runs, which saw the same machine.
    backbone_s, predict_s = [], {r: [] for r in models}
    for _ in range(repeats):
        backbone_s.append(seconds(backbone))
        for r, m in models.items():
            predict_s[r].append(seconds(lambda m=m: m.predict(test, maps=True)))
    backbone_ips = n_test / min(backbone_s)

    print(f"size {size} px | backbone-only {backbone_ips:6.1f} img/s | fit at {ratio:.0%}: {n_train / fit_s:6.1f} img/s "
          f"(features {st['seconds_features']:.2f} s, coreset {st['seconds_coreset']:.2f} s for "
          f"{st['n_train_patches']} patches -> {st['memory_bank_size']}; coreset/features "
          f"{st['seconds_coreset'] / st['seconds_features']:.2f})")
    textbook = st["n_train_patches"] * st["memory_bank_size"]
    print(f"size {size} px | coreset computed {st['coreset_distance_evaluations'] / textbook:.0%} of the "
          f"{textbook:.3g} point-center distances of the textbook loop")
    for r, m in models.items():
        ratio = float(np.median(np.array(backbone_s) / np.array(predict_s[r])))
        print(f"size {size} px | predict with a {r:.0%} bank ({m.state['memory_bank_size']} entries): "
              f"{n_test / min(predict_s[r]):6.1f} img/s = {100 * ratio:.0f}% of backbone-only")
    print(f"size {size} px | peak RSS {peak_rss_mb():.0f} MB")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[224, 256])
    ap.add_argument("--train", type=int, default=200)
    ap.add_argument("--test", type=int, default=64)
    ap.add_argument("--ratio", type=float, default=0.1, help="coreset ratio whose selection time is measured")
    ap.add_argument("--predict-ratios", type=float, nargs="+", default=[0.01, 0.1],
                    help="bank sizes whose predict throughput is measured (0.01 is the default model)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="alternating backbone-only and predict runs")
    ap.add_argument("--no-header", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if not args.no_header:
        print(f"PatchCore benchmark: {args.train} train / {args.test} test images, coreset {args.ratio:.0%}, "
              f"{args.threads} threads, torch {torch.__version__}", flush=True)
    if len(args.sizes) > 1:
        # One process per size: its peak RSS is its own, and no size runs in a process warmed by another.
        rest = [a for a in sys.argv[1:] if a != "--no-header"]
        for size in args.sizes:
            subprocess.run([sys.executable, __file__, *rest, "--sizes", str(size), "--no-header"], check=True)
        return
    torch.set_num_threads(args.threads)
    bench(args.sizes[0], args.train, args.test, args.ratio, args.predict_ratios, args.repeats)


if __name__ == "__main__":
    main()
