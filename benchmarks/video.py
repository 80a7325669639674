"""Video detectors' throughput at 2 threads: frames per second for fitting and for scoring.

    .venv/bin/python benchmarks/video.py [--frames 120] [--size 96x128] [--seed 0]

Generates synthetic videos in a temporary folder (2 training videos, 1 test video of --frames
frames each), then fits and scores the frame autoencoder (without and with 4-view TTA) and the
motion detector. Fit frames/s counts every training frame (including the held-out tail that
fits the score statistics); score frames/s counts test frames scored end to end (features,
search, smoothing, normalization).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--size", default="96x128")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)

    from oddspot.data.avenue import parse_size
    from oddspot.data.synthetic_video import generate_video_dataset
    from oddspot.video.autoencoder import AutoencoderConfig, FrameAutoencoder
    from oddspot.video.datasets import open_video_dataset
    from oddspot.video.motion import MotionConfig, MotionDetector
    from oddspot.video.tta import VIEWS

    size = parse_size(args.size)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_video_dataset(root, seed=args.seed, num_train=2, num_test=1, num_frames=args.frames, size=size)
        train, test = open_video_dataset(root, "train"), open_video_dataset(root, "test")
        for v in train + test:
            v.frames(size)  # decode once, outside the timings
        n_train = sum(len(v) for v in train)
        n_test = sum(len(v) for v in test)
        detectors = {
            "autoencoder": lambda: FrameAutoencoder(AutoencoderConfig(size=size, seed=args.seed)),
            "autoencoder+tta4": lambda: FrameAutoencoder(AutoencoderConfig(size=size, seed=args.seed, tta=VIEWS)),
            "motion": lambda: MotionDetector(MotionConfig(size=size, seed=args.seed)),
        }
        print(f"threads={torch.get_num_threads()} size={size[0]}x{size[1]} train_frames={n_train} test_frames={n_test}")
        for name, make in detectors.items():
            det = make()
            t0 = time.perf_counter()
            det.fit(train)
            fit_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            for v in test:
                det.predict([v])
            score_s = time.perf_counter() - t0
            print(f"{name:18s} fit {n_train / fit_s:7.1f} frames/s ({fit_s:6.1f} s)   score {n_test / score_s:7.1f} frames/s ({score_s:6.1f} s)")


if __name__ == "__main__":
    main()
