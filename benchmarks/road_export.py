"""Road model on torch vs its exported graphs (OpenVINO, ONNX Runtime; fp32 and int8): images/s and peak memory.

    .venv/bin/python benchmarks/road_export.py              # 2 threads, the demo's network, 50 toy streets
    .venv/bin/python benchmarks/road_export.py --images 20  # quicker

The model is the road demo's network (pretrained backbone, untrained decoder: throughput does not
depend on the weights) with its scores fitted on toy streets of the demo's size (128 x 256). It is
saved as a run, then exported to every format and precision that works here. Each runtime is
timed in a fresh process, so its peak RSS is its own (the exported ones never import torch):
  network   the network alone, one image at a time (`network_outputs`: torch forward, or the graph)
  predict   `predict` end to end on every toy test image (network, the decision score's maps at the
            image's size, image scores, decisions), one image at a time
It also prints how far each runtime's image scores and maps are from torch's. Other processes
on the machine slow every figure; the load average is printed with them. Workers run with
`WORKER_ENV`: on a busy machine torch's spinning OpenMP threads otherwise stall each other (10x
slower at 2 threads under a load of 10 on 2 cores), and numpy's two BLAS threads make the head's
small products 5x slower.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

# Thread teams that spin stall each other on a busy machine: torch's OpenMP threads wait passively, and
# numpy's BLAS (the head's small products, the same code for every runtime) runs on one thread.
WORKER_ENV = {"OMP_WAIT_POLICY": "PASSIVE", "OPENBLAS_NUM_THREADS": "1"}
RUNTIMES = [("torch", None, None), ("openvino fp32", "openvino", "fp32"), ("onnxruntime fp32", "onnx", "fp32"),
            ("openvino int8", "openvino", "int8"), ("onnxruntime int8", "onnx", "int8")]


def peak_rss_mb() -> float:
    """This process's peak resident memory (VmHWM: unlike ru_maxrss, not inherited from the parent across exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def worker(runtime: str, folder: str, data: str, out: str, threads: int, repeats: int) -> None:
    """Time one runtime on the toy test images; write its scores and maps to OUT (.npz) and print its figures."""
    from oddspot.data.image_io import list_images, read_image
    from oddspot.runs.registry import load_model

    images = [read_image(p) for p in list_images(Path(data) / "test" / "images", recursive=True)]
    if runtime == "torch":
        import torch

        torch.set_num_threads(threads)
        model = load_model(folder, device="cpu")
    else:
        from oddspot.runtime.engine import set_threads

        set_threads(threads)
        model = load_model(folder)
    model.network_outputs(images[0])  # warm-up (first-inference allocations, kernel choice)
    t0 = time.perf_counter()
    for _ in range(repeats):
        for image in images:
            model.network_outputs(image)
    network = repeats * len(images) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    pred = model.predict(images)
    predict = len(images) / (time.perf_counter() - t0)
    np.savez(out, scores=pred.scores, **{f"map{i}": m for i, m in enumerate(pred.maps)})
    rss = peak_rss_mb()
    print(json.dumps({"network": network, "predict": predict, "rss_mb": rss, "torch": "torch" in sys.modules,
                      "images": len(images), "size": list(images[0].shape[:2])}))


def fit_run(root: Path, n_images: int) -> tuple[Path, Path]:
    """Toy streets and a saved run of the demo's network with its scores fitted on them."""
    import torch

    from oddspot.data.toy_streets import ToyStreetConfig, generate_toy_streets
    from oddspot.road.config import RoadConfig, ScoreConfig, TrainConfig
    from oddspot.road.demo import DEMO_DATA, DEMO_MODEL, DEMO_TRAIN
    from oddspot.road.estimator import RoadModel
    from oddspot.road.model import DeepLabV3Plus

    data = root / "streets"
    generate_toy_streets(data, ToyStreetConfig(height=DEMO_DATA["height"], width=DEMO_DATA["width"], n_train=24, n_val=8,
                                               n_test=n_images, seed=0))
    torch.manual_seed(0)
    model = RoadModel(RoadConfig(model=DEMO_MODEL, train=TrainConfig(**DEMO_TRAIN), scores=ScoreConfig(val_pixels_per_image=1000)),
                      device="cpu")
    model.network = DeepLabV3Plus(DEMO_MODEL, pretrained=True)
    model.state["data"] = str(data)  # int8 calibration reads the run's training images
    model.fit_scores(data, log=lambda s: None)
    run = root / "run"
    model.save(run)
    return run, data


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--images", type=int, default=50, help="toy test images predicted end to end")
    ap.add_argument("--repeats", type=int, default=2, help="passes over the images for the network timing")
    ap.add_argument("--worker", nargs=4, metavar=("RUNTIME", "FOLDER", "DATA", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    os.environ.setdefault("ODDSPOT_QUIET", "1")
    if args.worker:
        worker(*args.worker, threads=args.threads, repeats=args.repeats)
        return

    import torch

    from oddspot.errors import OddspotError
    from oddspot.export.folder import export_run

    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        run, data = fit_run(root, args.images)
        folders, export_s, failed = {}, {}, {}
        for name, fmt, precision in RUNTIMES:
            if fmt is None:
                folders[name] = run
                continue
            t0 = time.perf_counter()
            try:
                export_run(run, fmt, precision, root / name.replace(" ", "-"), samples=16)
            except (OddspotError, RuntimeError, ValueError) as exc:  # int8 tools may be missing or refuse a graph
                failed[name] = str(exc).splitlines()[0][:120]
                continue
            export_s[name] = time.perf_counter() - t0
            folders[name] = root / name.replace(" ", "-")
        results = {}
        for name, folder in folders.items():
            out = root / f"{name.replace(' ', '-')}.npz"
            cmd = [sys.executable, __file__, "--threads", str(args.threads), "--repeats", str(args.repeats),
                   "--worker", name, str(folder), str(data), str(out)]
            done = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, **WORKER_ENV})
            if done.returncode != 0:
                failed[name] = (done.stderr.strip().splitlines() or ["?"])[-1][:120]
                continue
            results[name] = json.loads(done.stdout.strip().splitlines()[-1])
            with np.load(out) as z:
                results[name]["scores"] = z["scores"]
                results[name]["maps"] = [z[f"map{i}"] for i in range(len(z.files) - 1)]
    ref = results.get("torch")
    first = next(iter(results.values()))
    h, w = first["size"]
    print(f"road export benchmark: {first['images']} toy streets {h}x{w}, the demo's network, {args.threads} threads, "
          f"load average {os.getloadavg()[0]:.2f}")
    print(f"{'runtime':<18} {'network img/s':>13} {'predict img/s':>13} {'peak RSS MB':>11} {'torch':>6} {'export s':>8} "
          f"{'score rel. err':>14} {'map err':>8}")
    for name, r in results.items():
        s_err = m_err = ""
        if ref is not None and name != "torch":
            s_err = f"{np.max(np.abs(r['scores'] - ref['scores']) / np.abs(ref['scores'])):.1e}"
            m_err = f"{max(np.abs(a - b).max() / np.abs(b).max() for a, b in zip(r['maps'], ref['maps'])):.1e}"
        exp = f"{export_s[name]:.1f}" if name in export_s else ""
        print(f"{name:<18} {r['network']:>13.1f} {r['predict']:>13.1f} {r['rss_mb']:>11.0f} {str(r['torch']):>6} {exp:>8} "
              f"{s_err:>14} {m_err:>8}")
    for name, why in failed.items():
        print(f"{name:<18} failed: {why}")
    print("map err: max |map - torch map| / max |torch map| over the images (the fusion map, the decision score)")


if __name__ == "__main__":
    main()
