"""Video task: per-frame anomaly scores for fixed cameras (frame autoencoder baseline, motion-aware detector).

Public API:
- `open_video_dataset(root, split)`: Avenue (.avi), UCSD Ped2 or frame-folder videos, lazily decoded.
- `FrameAutoencoder` / `AutoencoderConfig`: the frame-wise reconstruction baseline.
- `MotionDetector` / `MotionConfig`: nearest-neighbour scoring of motion-aware patch features.
- `load_detector(folder)`: either detector from its saved folder.
- `evaluate_video_scores`, `write_score_curves`: frame-level micro/macro AUROC and AP, score curves.
- `ScorePostprocessor`: temporal smoothing and normalization with training statistics.
"""

from oddspot.video.autoencoder import AutoencoderConfig, FrameAutoencoder
from oddspot.video.base import VideoDetector, VideoScores, load_detector
from oddspot.video.datasets import decode_videos, open_video_dataset
from oddspot.video.evaluate import evaluate_video_scores, write_score_curves
from oddspot.video.motion import MotionConfig, MotionDetector
from oddspot.video.postprocess import ScorePostprocessor

__all__ = [
    "AutoencoderConfig",
    "FrameAutoencoder",
    "MotionConfig",
    "MotionDetector",
    "ScorePostprocessor",
    "VideoDetector",
    "VideoScores",
    "decode_videos",
    "evaluate_video_scores",
    "load_detector",
    "open_video_dataset",
    "write_score_curves",
]
