"""Road scenes: a DeepLabV3+ segmentation network on the offline backbone and per-pixel anomaly scores.

`RoadModel` (`oddspot.road.estimator`) is the estimator: `fit(data)` trains the network
(`oddspot.road.train`) and fits the scores on the training / validation splits (`fit_scorer`),
`predict(images)` returns maps, masks, image scores and decisions, `save` / `load` go through the
run contract. `oddspot.road.evaluate.evaluate` measures mIoU on validation and every score over
every test pixel; `oddspot.road.predict.predict` writes scores, maps and panels for new images;
`oddspot.road.demo.run_road_demo` does all on toy streets.
Score functions (`msp`, `max_logit`, `energy`, `entropy`) are pure functions of logits; fitted
scores (`StandardizedMaxLogit`, `Mahalanobis`, `Fusion`) are stored with the model. The options
(`oddspot.road.config`) and everything after the network (`oddspot.road.head`) import no torch:
the exported runtime (`oddspot.runtime.road`) shares them.
"""

from oddspot.lazy import lazy_exports

__all__ = [
    "SCORE_NAMES", "AugmentConfig", "DeepLabV3Plus", "Fusion", "Mahalanobis", "ModelConfig", "RoadConfig", "RoadModel",
    "RoadScorer", "ScoreConfig", "StandardizedMaxLogit", "TrainConfig", "choose_threshold", "energy", "entropy",
    "fit_scorer", "max_logit", "msp", "threshold_sensitivity",
]
__getattr__, __dir__ = lazy_exports(__name__, {
    "AugmentConfig": "config", "RoadConfig": "config", "RoadModel": "estimator", "DeepLabV3Plus": "model",
    "ModelConfig": "config", "SCORE_NAMES": "config", "RoadScorer": "scorer", "ScoreConfig": "config", "fit_scorer":
    "scorer", "Fusion": "scores", "Mahalanobis": "scores", "StandardizedMaxLogit": "scores", "energy": "scores",
    "entropy": "scores", "max_logit": "scores", "msp": "scores", "choose_threshold": "thresholds",
    "threshold_sensitivity": "thresholds", "TrainConfig": "config",
})
