"""Road scenes: a DeepLabV3+ segmentation network on the offline backbone and per-pixel anomaly scores.

Pipeline: `oddspot.road.train.train` (network, then `fit_scorer` on training/validation outputs)
-> `oddspot.road.evaluate.evaluate` (mIoU on validation, every score over every test pixel)
-> `oddspot.road.predict.predict` (score maps and panels); `oddspot.road.demo.run_road_demo` does all.
Score functions (`msp`, `max_logit`, `energy`, `entropy`) are pure functions of logits; fitted
scores (`StandardizedMaxLogit`, `Mahalanobis`, `Fusion`) store their statistics with the run.
"""

from oddspot.road.augment import AugmentConfig
from oddspot.road.model import DeepLabV3Plus, ModelConfig
from oddspot.road.scorer import SCORE_NAMES, RoadScorer, ScoreConfig, fit_scorer
from oddspot.road.scores import Fusion, Mahalanobis, StandardizedMaxLogit, energy, entropy, max_logit, msp
from oddspot.road.thresholds import choose_threshold, threshold_sensitivity
from oddspot.road.train import TrainConfig

__all__ = [
    "SCORE_NAMES", "AugmentConfig", "DeepLabV3Plus", "Fusion", "Mahalanobis", "ModelConfig", "RoadScorer",
    "ScoreConfig", "StandardizedMaxLogit", "TrainConfig", "choose_threshold", "energy", "entropy", "fit_scorer",
    "max_logit", "msp", "threshold_sensitivity",
]
