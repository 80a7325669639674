"""Video task: per-frame anomaly scores for fixed cameras (frame autoencoder baseline, motion-aware detector).

Public API:
- `open_video_dataset(root, split)`: Avenue (.avi), ShanghaiTech Campus, UCSD Ped1 / Ped2 or frame-folder
  videos, lazily decoded;
  `open_videos(path)`: unlabeled videos (a video file, a frame folder, or a folder of either).
- `MotionDetector` / `MotionConfig`: nearest-neighbour scoring of motion-aware patch features.
- `FrameAutoencoder` / `AutoencoderConfig`: the frame-wise reconstruction baseline.
  Both: `fit(videos)`, `predict(videos) -> list[Prediction]` (raw `scores`, `normalized`,
  `decisions`, optional `maps`, `name` = video id), `save(folder)`, `Cls.load(folder)`;
  `oddspot.runs.registry.load_model(folder, task="video")` loads either. Studies on a fitted model:
  `predict(videos, tta=views, power=gamma)` (`tta`: `video.tta.TTA_VIEWS`; autoencoder only).
- `ScorePostprocessor`: temporal smoothing, normalization and the decision threshold, fitted on
  held-out training frames and saved in model.json's `postprocess`.
- `evaluate_video_scores`, `write_evaluation`: frame-level micro/macro AUROC and AP, per event
  type, the threshold's precision/recall/F1; the evaluation record (metrics.json, scores.csv, curves).
- `pipeline`: the CLI verbs as functions (fit on a dataset, predict unlabeled videos, evaluate one model,
  or several in one table with `evaluate_runs`).

Imports inside the package are one-way: `postprocess`, `tta` <- `head` <- `motion_head`, `autoencoder_head` <- `base`
<- `motion`, `autoencoder` <- `upgrade`, `demo`, `pipeline`; the heads never import torch (they are shared with
`oddspot.runtime.video`).
"""

from oddspot.lazy import lazy_exports

__all__ = [
    "AutoencoderConfig",
    "FrameAutoencoder",
    "MotionConfig",
    "MotionDetector",
    "ScorePostprocessor",
    "VideoDetector",
    "decode_videos",
    "evaluate_video_scores",
    "open_video_dataset",
    "open_videos",
    "write_evaluation",
    "write_score_curves",
]
__getattr__, __dir__ = lazy_exports(__name__, {
    "AutoencoderConfig": "autoencoder_head", "FrameAutoencoder": "autoencoder", "VideoDetector": "base", "decode_videos":
    "datasets", "open_video_dataset": "datasets", "open_videos": "datasets", "evaluate_video_scores": "evaluate",
    "write_evaluation": "evaluate", "write_score_curves": "evaluate", "MotionConfig": "motion_head", "MotionDetector":
    "motion", "ScorePostprocessor": "postprocess",
})
