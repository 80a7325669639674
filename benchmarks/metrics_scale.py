"""Scale benchmark of the evaluation engine (oddspot issue 3).

1. Streams `--pixels` scores (default 1e9; generated on the fly in chunks of `--chunk`, with
   `--positives` of them positive) through one BinaryRankingMetrics (AUROC + AP + FPR95 + F1-max
   together) and prints pixels/s and the peak RSS of the process at that point.
2. Times AUPRO on `--aupro-images` images of `--aupro-size`^2 pixels (default: the MVTec AD test
   set size, 1,725 images of 256 x 256).
3. Times scikit-learn on `--sklearn-pixels` pixels (AUROC, AP, ROC and PR curves) against
   oddspot on the same pixels, for a ratio and an accuracy check.

Quick run: python benchmarks/metrics_scale.py --pixels 1e8 --aupro-images 200 --sklearn-pixels 2e6
"""

from __future__ import annotations

import argparse
import os
import resource
import time
import tracemalloc

import numpy as np

from oddspot.metrics import AUPRO, BinaryRankingMetrics


def peak_rss_mb() -> float:
    """Peak resident set size of this process so far, in MB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def chunk_of_scores(rng: np.random.Generator, n: int, rate: float) -> tuple[np.ndarray, np.ndarray]:
    """float32 scores: negatives uniform in [0, 1), positives uniform in [0.5, 1.5)."""
    positive = rng.random(n, dtype=np.float32) < rate
    scores = rng.random(n, dtype=np.float32)
    scores += np.float32(0.5) * positive
    return scores, positive


def stream(args: argparse.Namespace) -> None:
    total, chunk = int(args.pixels), int(args.chunk)
    rng = np.random.default_rng(args.seed)
    warm = BinaryRankingMetrics(threads=args.threads)
    warm.update(*chunk_of_scores(rng, 1000, args.positives))
    warm.compute()
    metric = BinaryRankingMetrics(threads=args.threads)
    t_gen = t_update = cpu = 0.0
    done = 0
    while done < total:
        n = min(chunk, total - done)
        t0 = time.perf_counter()
        scores, positive = chunk_of_scores(rng, n, args.positives)
        t1, c1 = time.perf_counter(), time.process_time()
        metric.update(scores, positive)
        t_update += time.perf_counter() - t1
        cpu += time.process_time() - c1
        t_gen += t1 - t0
        done += n
    t0, c0 = time.perf_counter(), time.process_time()
    r = metric.compute()
    t_compute = time.perf_counter() - t0
    cpu += time.process_time() - c0
    busy = t_update + t_compute
    print(f"[stream] {done:.3e} pixels, chunks of {chunk:.0e}, {args.positives:.0%} positives, threads={args.threads}")
    print(
        f"[stream] update {t_update:.1f} s + compute {t_compute:.1f} s wall -> "
        f"{done / busy / 1e6:.1f} M pixels/s (metrics only; {cpu:.1f} CPU-s used)"
    )
    end_to_end = done / (busy + t_gen) / 1e6
    print(f"[stream] with generation on the fly ({t_gen:.1f} s): {end_to_end:.1f} M pixels/s end to end")
    print(f"[stream] state {metric.nbytes / 2**20:.0f} MiB, exact={r['exact']}, peak RSS {peak_rss_mb():.0f} MB")
    for name in ("auroc", "ap", "fpr95_first", "fpr95_nearest", "f1_max"):
        print(f"[stream] {name:14s} {r[name]:.9f}  error bound {r['error_bound'][name]:.2e}")


def aupro(args: argparse.Namespace) -> None:
    n, size = int(args.aupro_images), int(args.aupro_size)
    rng = np.random.default_rng(args.seed + 1)
    metric = AUPRO(threads=args.threads)
    elapsed = 0.0
    yy, xx = np.mgrid[:size, :size]
    for i in range(n):
        mask = np.zeros((size, size), bool)
        if i % 4:  # about 3 of 4 MVTec test images are defective
            cy, cx, ry, rx = rng.integers(0, size, 2).tolist() + rng.integers(2, size // 6, 2).tolist()
            mask = ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        amap = rng.random((size, size), dtype=np.float32) + np.float32(0.7) * mask
        t0 = time.perf_counter()
        metric.update(amap, mask)
        elapsed += time.perf_counter() - t0
    t0 = time.perf_counter()
    r = metric.compute()
    elapsed += time.perf_counter() - t0
    pixels = n * size * size
    print(
        f"[aupro] {n} images of {size}x{size} ({pixels:.2e} px): {elapsed:.1f} s, {n / elapsed:.0f} images/s, "
        f"{pixels / elapsed / 1e6:.1f} M px/s; aupro {r['aupro']:.9f} (bound {r['error_bound']:.1e}, "
        f"exact={r['exact']}), {r['n_regions']} regions"
    )


def versus_sklearn(args: argparse.Namespace) -> None:
    from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve

    n = int(args.sklearn_pixels)
    rng = np.random.default_rng(args.seed + 2)
    scores, positive = chunk_of_scores(rng, n, args.positives)
    tracemalloc.start()
    t0 = time.perf_counter()
    ref_auroc = roc_auc_score(positive, scores)
    ref_ap = average_precision_score(positive, scores)
    roc_curve(positive, scores, drop_intermediate=False)
    precision_recall_curve(positive, scores)
    t_sk = time.perf_counter() - t0
    sk_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.reset_peak()
    t0 = time.perf_counter()
    metric = BinaryRankingMetrics(threads=args.threads)
    for start in range(0, n, int(args.chunk)):
        metric.update(scores[start : start + int(args.chunk)], positive[start : start + int(args.chunk)])
    r = metric.compute()
    t_ours = time.perf_counter() - t0
    ours_peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    print(
        f"[sklearn] {n:.1e} px: scikit-learn {t_sk:.1f} s (peak traced {sk_peak / 2**20:.0f} MiB), "
        f"oddspot {t_ours:.1f} s (peak traced {ours_peak / 2**20:.0f} MiB): {t_sk / t_ours:.1f}x faster"
    )
    print(
        f"[sklearn] |auroc diff| {abs(r['auroc'] - ref_auroc):.1e} (bound {r['error_bound']['auroc']:.1e}), "
        f"|ap diff| {abs(r['ap'] - ref_ap):.1e} (bound {r['error_bound']['ap']:.1e}), exact={r['exact']}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pixels", type=float, default=1e9, help="pixel scores to stream (default 1e9)")
    parser.add_argument("--chunk", type=float, default=1e7, help="pixels per update (default 1e7)")
    parser.add_argument("--positives", type=float, default=0.01, help="fraction of positives (default 0.01)")
    parser.add_argument("--aupro-images", type=float, default=1725, help="AUPRO images (default 1725; 0 skips)")
    parser.add_argument("--aupro-size", type=int, default=256, help="AUPRO image side (default 256)")
    parser.add_argument("--sklearn-pixels", type=float, default=2e7, help="pixels for the sklearn ratio (0 skips)")
    parser.add_argument("--threads", type=int, default=2, help="threads for binned updates (default 2)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the generated data (default 0)")
    args = parser.parse_args()
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"[setup] seed {args.seed}; {os.cpu_count()} cores, threads={args.threads}; load average {load}")
    if args.pixels > 0:
        stream(args)
    if args.aupro_images > 0:
        aupro(args)
    if args.sklearn_pixels > 0:
        versus_sklearn(args)
    load = " ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"[end] peak RSS of the whole run (scikit-learn part included) {peak_rss_mb():.0f} MB; load average {load}")


if __name__ == "__main__":
    main()
