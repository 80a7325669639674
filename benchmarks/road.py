"""Road task throughput on toy street scenes: training images/s, inference images/s, evaluation pixels/s.

    .venv/bin/python benchmarks/road.py            # 2 threads, the demo's model and image size
    .venv/bin/python benchmarks/road.py --steps 5  # quicker

Training: optimizer steps (forward, main + auxiliary loss, backward, AdamW) on augmented crops.
Inference: network forward plus all seven score maps, batch of 8, and `RoadModel.predict` (one image
at a time, as predictions are made). Evaluation: `oddspot.road.evaluate` over the toy test split,
every pixel of every score streamed through the metrics engine; reported as score-pixels per second
of metric time and test pixels per second end to end (model included).
The model is untrained (throughput does not depend on the weights). Other processes on the machine
slow every figure; the load average is printed with them.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from oddspot.data.streethazards import IGNORE_INDEX, load_split
from oddspot.data.toy_streets import ToyStreetConfig, generate_toy_streets
from oddspot.features.backbone import scale_pixels
from oddspot.road.augment import augment_batch
from oddspot.road.demo import DEMO_MODEL, DEMO_TRAIN
from oddspot.road.estimator import RoadConfig, RoadModel
from oddspot.road.evaluate import evaluate
from oddspot.road.inference import run_model
from oddspot.road.model import DeepLabV3Plus
from oddspot.road.scorer import SCORE_NAMES, ScoreConfig
from oddspot.road.train import TrainConfig, _optimizer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=15, help="timed training steps (batch 8)")
    ap.add_argument("--n-test", type=int, default=40, help="toy test scenes for the evaluation timing")
    ap.add_argument("--data", type=Path, default=None, help="existing toy data (default: generate in a temp dir)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("ODDSPOT_QUIET", "1")
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data or Path(tmp) / "data"
        if args.data is None:
            generate_toy_streets(data, ToyStreetConfig(n_train=32, n_val=8, n_test=args.n_test, seed=0))
        train_split = load_split(data, "training")
        tcfg = TrainConfig(**DEMO_TRAIN)
        torch.manual_seed(0)
        model = DeepLabV3Plus(DEMO_MODEL, pretrained=True)
        model.freeze(tcfg.freeze)
        model.to(memory_format=torch.channels_last)
        opt = _optimizer(model, tcfg)
        ce = torch.nn.CrossEntropyLoss(ignore_index=IGNORE_INDEX)
        samples = [train_split[i] for i in range(len(train_split))]
        rng = np.random.default_rng(0)
        bs = tcfg.batch_size
        model.train()
        n_img, t_train = 0, 0.0
        for step in range(args.steps + 2):
            batch = [samples[(step * bs + j) % len(samples)] for j in range(bs)]
            t0 = time.perf_counter()
            x, y = augment_batch([s.image for s in batch], [s.labels for s in batch], tcfg.augment, rng)
            x = scale_pixels(x, "lite")
            out = model(x)
            loss = ce(out["logits"], y) + tcfg.aux_weight * ce(out["aux"], y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if step >= 2:
                t_train += time.perf_counter() - t0
                n_img += bs
        road = RoadModel(RoadConfig(model=DEMO_MODEL, train=tcfg, scores=ScoreConfig(val_pixels_per_image=1000)),
                         device="cpu")
        road.network = model.eval()
        road.fit_scores(data, log=lambda s: None)
        scorer = road.scorer
        images = np.stack([s.image for s in samples[:8]])
        run_model(road.network, images, features=scorer.features)
        t_inf, n_inf = 0.0, 0
        for _ in range(5):
            t0 = time.perf_counter()
            out = run_model(road.network, images, features=scorer.features)
            scorer.maps(out["logits"], out["features"])
            t_inf += time.perf_counter() - t0
            n_inf += len(images)
        t0 = time.perf_counter()
        road.predict(list(images))
        t_pred = time.perf_counter() - t0
        t0 = time.perf_counter()
        m = evaluate(road, data, None, batch_size=8, panels=0, log=lambda s: None)
        t_eval = time.perf_counter() - t0
    px = m["anomaly"]["n_pixels"]
    load = os.getloadavg()[0]
    h, w = samples[0].image.shape[:2]
    print(f"road benchmark: toy streets {h}x{w}, {args.threads} threads, device cpu, load average {load:.2f}")
    print(f"training:   {n_img / t_train:.1f} images/s  (batch {bs}, crop {tcfg.augment.crop_size[0]}x"
          f"{tcfg.augment.crop_size[1]}, scales {tcfg.augment.scale_range[0]}-{tcfg.augment.scale_range[1]})")
    print(f"inference:  {n_inf / t_inf:.1f} images/s  (network + {len(SCORE_NAMES)} score maps, batch 8); "
          f"predict {len(images) / t_pred:.1f} images/s (one at a time, decision score only)")
    print(f"evaluation: {m['timing']['score_pixels_per_second'] / 1e6:.2f} M score-pixels/s in the metrics engine "
          f"({len(SCORE_NAMES)} scores, pooled + per-image); {px / t_eval / 1e6:.3f} M test pixels/s end to end "
          f"({px} pixels, {m['anomaly']['n_images']} images, validation mIoU pass included)")


if __name__ == "__main__":
    main()
