"""Decisions on the demo data: cascade call rate, latency with and without the gate, AUROCs, PaDiM, F1.

Usage: python benchmarks/cascade.py [--out runs/bench-cascade] [--threads 2] [--sweep]
Builds the demo dataset if needed, fits PatchCore, PaDiM and the cascade per category (all
calibrated on the validation split), evaluates them on the test split and times PatchCore and
the cascade. The cascade is fitted twice: with the unsupervised gate and with the supervised one
(`gate: supervised`). Also reports calibrated decisions (F1 on test) for each threshold strategy.
With --sweep, also sweeps both cascades' gate thresholds (`oddspot sweep-gate`) into OUT/sweep-*.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from oddspot import inspect
from oddspot.data.demo_dataset import TEXTURES, build_demo_dataset
from oddspot.inspect.gate_sweep import sweep_gate
from oddspot.runs.registry import load_model


def latency(run: Path, images: list[np.ndarray]) -> float:
    detector = load_model(run, "inspect")
    detector.predict(images[:2])
    t = time.perf_counter()
    detector.predict(images, maps=True)
    return (time.perf_counter() - t) / len(images)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=Path("runs/bench-cascade"))
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--sweep", action="store_true", help="also sweep the gate thresholds of both cascades")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    data = args.out / "data"
    if not (data / "dataset.json").exists():
        build_demo_dataset(data)
    rows = []
    for cat in TEXTURES:
        res = {}
        for model in ("patchcore", "padim", "cascade", "cascade-supervised"):
            run = args.out / model / cat
            kind, _, gate = model.partition("-")
            inspect.fit(data, cat, run, model=kind, options={"gate": gate} if gate else None)
            res[model] = inspect.evaluate(run, data, cat, args.out / f"eval-{model}" / cat, bootstrap=0, gallery=0)
            if args.sweep and kind == "cascade":
                sweep_gate(run, data, cat, args.out / f"sweep-{model}" / cat)
        test = [r.load().image for r in inspect.split_test_refs(args.out / "patchcore" / cat, data, cat, None)[0]]
        lat = {m: latency(args.out / m / cat, test) for m in ("patchcore", "cascade")}
        strategies = {}
        for strategy in ("f1", "synthetic", "quantile"):
            run = args.out / f"patchcore-{strategy}" / cat
            inspect.recalibrate(args.out / "patchcore" / cat, data, cat, run, strategy=strategy)
            m = inspect.evaluate(run, data, cat, args.out / f"eval-{strategy}" / cat, bootstrap=0, gallery=0)
            strategies[strategy] = m["image"]["at_threshold"]["f1"]
        rows.append((cat, res, lat, strategies))
        call = res["cascade"]["cascade"]["localizer_call_rate"]
        sup = res["cascade-supervised"]
        print(f"{cat:7s} | supervised gate: localizer call rate {sup['cascade']['localizer_call_rate']:5.1%} | "
              f"image AUROC {sup['image']['auroc']:.4f}")
        print(f"{cat:7s} | localizer call rate {call:5.1%} | latency/image: PatchCore {1000 * lat['patchcore']:6.1f} ms, "
              f"cascade {1000 * lat['cascade']:6.1f} ms | image AUROC: PatchCore {res['patchcore']['image']['auroc']:.4f}, "
              f"cascade {res['cascade']['image']['auroc']:.4f}, PaDiM {res['padim']['image']['auroc']:.4f} | test F1 at calibrated threshold: "
              + ", ".join(f"{k} {v:.3f}" for k, v in strategies.items())
              + f", cascade {res['cascade']['image']['at_threshold']['f1']:.3f}")
    mean = lambda f: float(np.mean([f(r) for r in rows]))  # noqa: E731
    print(f"mean    | localizer call rate {mean(lambda r: r[1]['cascade']['cascade']['localizer_call_rate']):5.1%} | "
          f"latency/image: PatchCore {1000 * mean(lambda r: r[2]['patchcore']):6.1f} ms, cascade {1000 * mean(lambda r: r[2]['cascade']):6.1f} ms | "
          f"image AUROC: PatchCore {mean(lambda r: r[1]['patchcore']['image']['auroc']):.4f}, cascade {mean(lambda r: r[1]['cascade']['image']['auroc']):.4f}, "
          f"PaDiM {mean(lambda r: r[1]['padim']['image']['auroc']):.4f} | "
          "test F1: " + ", ".join(f"{k} {mean(lambda r, k=k: r[3][k]):.3f}" for k in ("f1", "synthetic", "quantile")))


if __name__ == "__main__":
    main()
