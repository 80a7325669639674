"""Load test of `oddspot serve` on 127.0.0.1: N clients post images for T seconds (or R requests).

Usage: python benchmarks/serve_load.py [RUN] [--images DIR] [--clients 8] [--seconds 30] [--requests R]
       [--threads 2] [--runtime auto] [--max-batch 16] [--max-wait-ms 5] [--queue 256] [--no-compare] [--json OUT]

Without RUN, a PatchCore with a 1% memory bank at 224 px is fitted on tiles of a texture photo
(seed 0) and served. The service runs in its own process (`python -m oddspot serve`), started and
stopped here; each client keeps one connection and posts one image per request (the next of
--images, or of 32 generated tiles), as a raw PNG body, waiting for each answer. Prints throughput,
latency percentiles, status counts, the server's RSS before and after, the mean batch size, and
whether every image got the same score every time, then (unless --no-compare) times the same model
called directly in batches of 16, as `oddspot predict` calls it; --json writes all of it, with
each image's scores.
Only 127.0.0.1 is ever contacted. Asserts nothing (tests/test_serve_load.py does, on a short run).
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path

import numpy as np

HOST = "127.0.0.1"


def rss_mb(pid: int) -> float:
    """Resident memory of process `pid` in MB (Linux /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return float("nan")


def texture_tiles(n: int, size: int, seed: int) -> list[np.ndarray]:
    from oddspot.data.demo_dataset import texture_photo

    photo = texture_photo("brick")
    rng = np.random.default_rng(seed)
    ys, xs = rng.integers(0, photo.shape[0] - size, n), rng.integers(0, photo.shape[1] - size, n)
    return [np.ascontiguousarray(photo[y:y + size, x:x + size]) for y, x in zip(ys, xs)]


def fit_default_run(folder: Path, size: int, ratio: float, threads: int) -> Path:
    """A calibrated PatchCore (1% bank at 224 px by default) fitted on 60 tiles, saved to `folder`."""
    import torch

    from oddspot.calibration import calibrate
    from oddspot.detectors import PatchCore

    torch.set_num_threads(threads)
    model = PatchCore(image_size=size, coreset_ratio=ratio, seed=0).fit(texture_tiles(60, size, 0))
    held_out = texture_tiles(16, size, 2)
    pred = model.predict(held_out)
    model.postprocess = calibrate(pred.scores, np.zeros(len(held_out)), pred.maps,
                                  [np.zeros(m.shape, bool) for m in pred.maps], "quantile", quantile=0.99)
    model.save(folder)
    return folder


def png(image: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(image).save(buf, format="PNG")
    return buf.getvalue()


def start_server(run: Path, args: argparse.Namespace) -> tuple[subprocess.Popen, int]:
    """`oddspot serve RUN --port 0` in a process of its own; returns it and its port once it is ready."""
    cmd = [sys.executable, "-m", "oddspot", "serve", f"load={run}", "--host", HOST, "--port", "0",
           "--threads", str(args.threads), "--runtime", args.runtime, "--max-batch", str(args.max_batch),
           "--max-wait-ms", str(args.max_wait_ms), "--queue", str(args.queue)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    env.pop("ODDSPOT_TOKEN", None)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    port = None
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("serving "):
            port = int(line.split(f"http://{HOST}:", 1)[1].split()[0].rstrip("/;,"))
            break
    if port is None:
        raise SystemExit("the service did not start:\n" + "".join(seen[-20:]))
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()  # keep its pipe drained
    deadline = time.monotonic() + 600
    while True:
        try:
            if request(port, "GET", "/readyz")[0] == 200:
                return proc, port
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit("the service never became ready")
        time.sleep(0.2)


def request(port: int, method: str, path: str, body: bytes | None = None,
            conn: http.client.HTTPConnection | None = None) -> tuple[int, bytes]:
    own = conn is None
    conn = conn or http.client.HTTPConnection(HOST, port, timeout=120)
    try:
        conn.request(method, path, body=body, headers={"Content-Type": "image/png"} if body is not None else {})
        res = conn.getresponse()
        return res.status, res.read()
    finally:
        if own:
            conn.close()


def load(port: int, bodies: list[bytes], clients: int, seconds: float, requests: int) -> dict:
    """Run the clients; every answer's status, latency and (for 200) score, by image."""
    lock = threading.Lock()
    sent = [0]
    latencies: list[float] = []
    statuses: Counter = Counter()
    scores: dict[int, set[float]] = {i: set() for i in range(len(bodies))}
    stop_at = time.perf_counter() + seconds

    def client(k: int) -> None:
        conn = http.client.HTTPConnection(HOST, port, timeout=120)
        i = k
        while time.perf_counter() < stop_at:
            with lock:
                if sent[0] >= requests:
                    break
                sent[0] += 1
            image = i % len(bodies)
            i += clients
            t = time.perf_counter()
            try:
                status, data = request(port, "POST", "/v1/models/load/predict", bodies[image], conn)
            except (OSError, http.client.HTTPException):
                status, data = -1, b""
                conn.close()
                conn = http.client.HTTPConnection(HOST, port, timeout=120)
            took = time.perf_counter() - t
            score = json.loads(data)["results"][0]["score"] if status == 200 else None
            with lock:
                latencies.append(took)
                statuses[status] += 1
                if score is not None:
                    scores[image].add(score)
        conn.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - started
    lat = np.array(latencies) * 1e3
    return {"requests": len(latencies), "seconds": wall, "throughput": statuses[200] / wall,
            "p50_ms": float(np.percentile(lat, 50)), "p95_ms": float(np.percentile(lat, 95)),
            "p99_ms": float(np.percentile(lat, 99)), "statuses": {str(k): v for k, v in sorted(statuses.items())},
            "scores": {str(k): sorted(v) for k, v in scores.items()}}


def batch_totals(port: int) -> tuple[float, float]:
    """(images, model calls) so far, from the service's batch-size histogram."""
    _, text = request(port, "GET", "/metrics")
    total = count = 0.0
    for line in text.decode().splitlines():
        if line.startswith("oddspot_batch_size_sum"):
            total += float(line.split()[-1])
        elif line.startswith("oddspot_batch_size_count"):
            count += float(line.split()[-1])
    return total, count


def model_alone(run: Path, bodies: list[bytes], runtime: str, threads: int, seconds: float) -> float:
    """Images per second of the same model called directly in batches of 16, as `oddspot predict` calls it."""
    from oddspot.cli.common import apply_runtime
    from oddspot.data.image_io import DECODE_PIXELS
    from oddspot.export import load_for_inference
    from oddspot.serve.decode import decode_image_bytes

    where = apply_runtime(threads, "cpu", lazy=True)
    model = load_for_inference(run, "inspect", runtime, device=where)
    images = [decode_image_bytes(b, 10**9, reduce_to=DECODE_PIXELS) for b in bodies]
    model.predict(images[:16], maps=False)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for lo in range(0, len(images), 16):
            model.predict(images[lo:lo + 16], maps=False)
        done += len(images)
    return done / (time.perf_counter() - started)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run", nargs="?", type=Path, help="run folder to serve (default: fit a 1%% bank PatchCore at 224 px)")
    ap.add_argument("--images", type=Path, help="folder of images to post (default: 32 texture tiles)")
    ap.add_argument("--clients", type=int, default=8, choices=range(1, 65), metavar="1..64")
    ap.add_argument("--seconds", type=float, default=30.0, help="duration, at most 600")
    ap.add_argument("--requests", type=int, default=1_000_000, help="stop after this many requests")
    ap.add_argument("--warmup", type=int, default=32, help="requests before measuring (not counted)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--runtime", default="auto")
    ap.add_argument("--max-batch", type=int, default=16)
    ap.add_argument("--max-wait-ms", type=float, default=5.0)
    ap.add_argument("--queue", type=int, default=256)
    ap.add_argument("--size", type=int, default=224, help="image size of the fitted default model and of its tiles")
    ap.add_argument("--ratio", type=float, default=0.01, help="coreset ratio of the fitted default model")
    ap.add_argument("--compare", action=argparse.BooleanOptionalAction, default=True,
                    help="also time the model alone on the same images (what `oddspot predict` reaches)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    args = ap.parse_args()
    if not 0 < args.seconds <= 600:
        raise SystemExit("--seconds: use a duration in (0, 600]")
    with tempfile.TemporaryDirectory(prefix="oddspot-serve-load-") as tmp:
        run = args.run or fit_default_run(Path(tmp) / "run", args.size, args.ratio, args.threads)
        if args.images is not None:
            from oddspot.data.image_io import list_images

            files = list_images(args.images, recursive=True)
            names, bodies = [str(f) for f in files], [f.read_bytes() for f in files]
        else:
            bodies = [png(t) for t in texture_tiles(32, args.size, 1)]
            names = [f"tile-{i:02d}" for i in range(len(bodies))]
        if not bodies:
            raise SystemExit(f"{args.images}: no images")
        proc, port = start_server(Path(run), args)
        try:
            load(port, bodies, args.clients, 120, args.warmup)
            before, (images, calls) = rss_mb(proc.pid), batch_totals(port)
            result = load(port, bodies, args.clients, args.seconds, args.requests)
            after, (images_after, calls_after) = rss_mb(proc.pid), batch_totals(port)
            mean = (images_after - images) / max(calls_after - calls, 1)
            served = json.loads(request(port, "GET", "/v1/models")[1])["models"][0]
            result.update(rss_before_mb=before, rss_after_mb=after, mean_batch=mean, clients=args.clients,
                          runtime=served["runtime"], threads=args.threads)
        finally:
            proc.terminate()
            proc.wait(30)
        if args.compare:
            result["model_alone"] = model_alone(Path(run), bodies, args.runtime, args.threads, min(args.seconds, 10))
    result["scores"] = {names[int(k)]: v for k, v in result["scores"].items()}
    stable = all(len(v) <= 1 for v in result["scores"].values())
    print(f"{result['requests']} requests from {args.clients} clients in {result['seconds']:.1f} s: "
          f"{result['throughput']:.1f} img/s; latency p50 {result['p50_ms']:.0f} ms, p95 {result['p95_ms']:.0f} ms, "
          f"p99 {result['p99_ms']:.0f} ms; mean batch {result['mean_batch']:.1f}; runtime {result['runtime']}")
    if "model_alone" in result:
        print(f"the model alone on {result['runtime']} (batches of 16, no HTTP, no client): {result['model_alone']:.1f} img/s; "
              f"the service reached {100 * result['throughput'] / result['model_alone']:.0f}% of it")
    print(f"statuses {result['statuses']}; server RSS {result['rss_before_mb']:.0f} MB before, "
          f"{result['rss_after_mb']:.0f} MB after ({result['rss_after_mb'] - result['rss_before_mb']:+.0f} MB); "
          f"every image got {'one score' if stable else 'DIFFERENT scores'} on every request")
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
