"""The road model: a DeepLabV3+ segmentation network and its per-pixel anomaly scores, as one estimator.

    model = RoadModel(train={"epochs": 12})       # options: the fields of RoadConfig
    model.fit("data/streethazards")                # train, then fit the scores on train / validation
    pred = model.predict(images)                   # list of H x W x 3 uint8 -> Prediction
    model.save("runs/road"); RoadModel.load("runs/road")

`predict` returns, per image: `maps` = the decision score's (`config.score`) per-pixel map at the
image's resolution; `masks` = map >= that score's validation threshold; `scores` = the image
score, the `config.image_quantile` quantile of the map (0.999: the value only the top 0.1% of
pixels exceed, so one noisy pixel does not decide); `normalized` = the image score mapped to
[0, 1] with the image threshold at 0.5; `decisions` = 1 when the image score reaches the image
threshold. Pixel thresholds, the fusion's normalization and the image threshold are fitted on
validation data only. Every image runs through the network on its own, so its outputs never
depend on the other images passed with it.

The saved folder (the run contract of `oddspot.runs`) holds everything fitted:
  model.safetensors  network.* (inference weights, no auxiliary head), sml.mean / sml.std (per class),
                     mahalanobis.means (classes with training pixels x D), mahalanobis.precision (D x D)
  model.json         config (RoadConfig), state (classes, class weights, best epoch, training summary,
                     pixel counts of the fitted scores), postprocess (per-score pixel thresholds, fusion
                     normalization and weights, image threshold and its [0, 1] scale)
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch

from oddspot.calibration import ScoreScale, fit_threshold
from oddspot.configs import check_range, finite_number, from_mapping
from oddspot.data.streethazards import ANOMALY_CLASS, IGNORE_INDEX, StreetHazardsSplit, load_split
from oddspot.errors import OddspotError
from oddspot.features.backbone import default_device
from oddspot.progress import track
from oddspot.road.checkpoint import network_from_weights
from oddspot.road.inference import run_model
from oddspot.road.model import DeepLabV3Plus, ModelConfig, feature_channels
from oddspot.road.scorer import SCORE_NAMES, RoadScorer, ScoreConfig, fit_scorer
from oddspot.road.scores import Fusion, Mahalanobis, StandardizedMaxLogit
from oddspot.road.train import TrainConfig, train
from oddspot.runs.contract import MODEL_FILE, TENSORS_FILE, Record
from oddspot.runs.model import RunModel
from oddspot.runs.prediction import Prediction, finite_scores

TENSOR_GROUPS = ("network", "sml", "mahalanobis")


@dataclass
class RoadConfig:
    """Every option of a road model: network, training, score fitting, and the decision score."""

    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    scores: ScoreConfig = field(default_factory=ScoreConfig)
    score: str = "fusion"
    image_quantile: float = 0.999

    def __post_init__(self) -> None:
        if self.score not in SCORE_NAMES:
            raise OddspotError(f"score {self.score!r} unknown; choose from {', '.join(SCORE_NAMES)}")
        check_range("image_quantile", self.image_quantile, 0.5, 1.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as stored in model.json (nested mappings for model, train and scores)."""
        return {"model": self.model.to_dict(), "train": self.train.to_dict(), "scores": self.scores.to_dict(),
                "score": self.score, "image_quantile": self.image_quantile}


@dataclass
class ImageRule:
    """The image-level post-processor: threshold and [0, 1] scale of image scores, fitted on validation."""

    scale: ScoreScale
    rule: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"scale": asdict(self.scale), "rule": self.rule, "details": self.details}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> ImageRule:
        if not isinstance(d, dict) or not isinstance(d.get("rule"), str) or not isinstance(d.get("details", {}), dict):
            raise OddspotError(f"{where}: expected an object with scale, rule and details; refit the model")
        return cls(ScoreScale.from_dict(d.get("scale"), f"{where}.scale"), d["rule"], dict(d.get("details", {})))


@dataclass
class SceneOutput:
    """One image through the model: score maps (float32 H x W, larger = more anomalous) and predicted classes."""

    maps: dict[str, np.ndarray]
    classes: np.ndarray


def _copy(obj: Any) -> Any:
    """A deep copy of JSON-able data, as it reads back from JSON (floats round-trip exactly)."""
    return json.loads(json.dumps(obj))


def _number(value: Any, where: str, positive: bool = False) -> float:
    """A finite JSON number (a positive one with `positive`), or a one-line error."""
    if not finite_number(value):
        raise OddspotError(f"{where}: expected a finite number, got {value!r:.60}; refit the model")
    if positive and value <= 0:
        raise OddspotError(f"{where}: expected a positive number, got {value!r}; refit the model")
    return float(value)


def _numbers(value: Any, n: int, where: str, positive: bool = False) -> list[float]:
    if not isinstance(value, list) or len(value) != n:
        raise OddspotError(f"{where}: expected a list of {n} numbers, got {value!r:.60}; refit the model")
    return [_number(v, f"{where}[{i}]", positive) for i, v in enumerate(value)]


def _ints(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise OddspotError(f"{where}: expected a list of integers, got {value!r:.60}; refit the model")
    return list(value)


def _section(mapping: Any, key: str, where: str) -> dict[str, Any]:
    value = mapping.get(key) if isinstance(mapping, dict) else None
    if not isinstance(value, dict):
        raise OddspotError(f"{where}: {key} missing or not an object; refit the model")
    return value


def check_image(image: Any, where: str) -> np.ndarray:
    """An H x W x 3 uint8 RGB array, or a one-line error naming `where`."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 8:
        raise OddspotError(f"{where}: expected an H x W x 3 uint8 RGB image of at least 8 x 8 pixels, "
                           f"got {arr.dtype} {tuple(arr.shape)}")
    return arr


class RoadModel(RunModel):
    """DeepLabV3+ on EfficientNet-Lite0 with seven pixel anomaly scores and one decision score."""

    task: ClassVar[str] = "road"
    kind: ClassVar[str] = "deeplabv3plus"
    config_class: ClassVar[type] = RoadConfig

    def __init__(self, config: RoadConfig | None = None, device: str | torch.device | None = None,
                 **options: Any) -> None:
        if config is None or options:
            base = config.to_dict() if config is not None else {}
            config = from_mapping(RoadConfig, {**base, **options}, "road model options")
        self.config: RoadConfig = config
        self.device = torch.device(device) if device is not None else default_device()
        self.network: DeepLabV3Plus | None = None
        self.scorer: RoadScorer | None = None
        self.image_rule: ImageRule | None = None
        self.state: dict[str, Any] = {}

    # fitting

    def fit(self, data: str | Path, run_dir: str | Path | None = None, resume: bool = False,
            log: Callable[[str], None] = print) -> RoadModel:
        """Train on DATA (StreetHazards layout), then fit the scores on its training and validation splits.

        The test split is never read. With `run_dir` the training state is kept there so that
        `resume=True` continues an interrupted fit (see `oddspot.road.train`); the model itself is
        written by `save`.
        """
        cfg = self.config
        result = train(data, cfg.model, cfg.train, run_dir, resume, self.device, log)
        self.network = self._place(result.network)
        self.state = {"data": str(data), "classes": result.classes, "class_weights": result.class_weights,
                      "best": result.best, "training": result.summary}
        return self.fit_scores(data, log)

    def fit_scores(self, data: str | Path, log: Callable[[str], None] = print) -> RoadModel:
        """Fit the scores of the current network: Mahalanobis on DATA's training split; SML, the
        fusion, every pixel threshold and the image threshold on its validation split. Part of `fit`."""
        if self.network is None:
            raise OddspotError("road model has no network; call fit(data) or RoadModel.load(folder) first")
        self.network = self._place(self.network)
        training = self.state.setdefault("training", {})
        skipped = training.setdefault("skipped_files", [])

        def report(exc: OddspotError) -> None:
            skipped.append(str(exc))
            log(f"skipped: {exc}")

        cfg = self.config
        train_split, val_split = load_split(data, "training"), load_split(data, "validation")
        t0 = time.perf_counter()
        self.scorer = fit_scorer(self.network, train_split, val_split, cfg.scores, cfg.train.eval_size, on_error=report)
        self.image_rule = self._fit_image_rule(val_split, report)
        training["fit_scores_seconds"] = round(time.perf_counter() - t0, 2)
        self.state["sml"] = {"counts": self.scorer.sml.counts, "fallback_classes": self.scorer.sml.fallback_classes}
        self.state["mahalanobis"] = {"counts": self.scorer.mahalanobis.counts, "fitted_on": "training pixels"}
        return self

    def _fit_image_rule(self, val: StreetHazardsSplit, report: Callable[[OddspotError], None]) -> ImageRule:
        """Image threshold and scale from the validation images' image scores (F1-max when some hold
        anomalies, else the score that flags `target_fpr` of them)."""
        scores, labels = [], []
        for sample in track(val.iter_samples(on_error=report), "fit image threshold", len(val)):
            m = self.analyze(sample.image, (self.config.score,)).maps[self.config.score]
            scores.append(self.image_score(m))
            labels.append(bool((sample.labels == ANOMALY_CLASS).any()))
        s, y = np.asarray(scores, np.float64), np.asarray(labels, bool)
        if (~y).sum() == 0:
            raise OddspotError(f"{val.image_dir}: no readable validation image without anomalies; "
                               "cannot fit the image threshold")
        if y.any():
            scale, details = fit_threshold(s, y, "f1")
            rule = "f1_max on validation images"
        else:
            q = 1.0 - self.config.scores.target_fpr
            scale, details = fit_threshold(s, y, "quantile", quantile=q)
            rule = f"quantile {q:g} of normal validation image scores"
        return ImageRule(scale, rule, details)

    # inference

    def _fitted(self) -> tuple[DeepLabV3Plus, RoadScorer]:
        if self.network is None or self.scorer is None:
            raise OddspotError("road model not fitted; call fit(data) or RoadModel.load(folder) first")
        return self.network, self.scorer

    def _place(self, network: DeepLabV3Plus) -> DeepLabV3Plus:
        return network.to(self.device).to(memory_format=torch.channels_last).eval()

    def to(self, device: str | torch.device) -> RoadModel:
        """Move the network to `device`; returns self."""
        self.device = torch.device(device)
        if self.network is not None:
            self.network = self._place(self.network)
        return self

    def analyze(self, image: np.ndarray, names: Sequence[str] = SCORE_NAMES, where: str = "image") -> SceneOutput:
        """One H x W x 3 uint8 image -> the score maps `names` and the predicted classes, at its resolution."""
        network, scorer = self._fitted()
        unknown = [n for n in names if n not in SCORE_NAMES]
        if unknown:
            raise OddspotError(f"score {unknown[0]!r} unknown; choose from {', '.join(SCORE_NAMES)}")
        img = check_image(image, where)
        out = run_model(network, img[None], size=self.config.train.eval_size, features=scorer.features)
        maps = scorer.maps(out["logits"], out["features"], tuple(dict.fromkeys(names)))
        return SceneOutput({k: v[0].float().cpu().numpy() for k, v in maps.items()},
                           out["logits"][0].argmax(0).cpu().numpy())

    def score_maps(self, images: Sequence[np.ndarray], names: Sequence[str] = SCORE_NAMES) -> dict[str, list[np.ndarray]]:
        """Every score of `names` for every image: {score: [H x W float32 map per image]}."""
        outs = [self.analyze(im, names, f"image {i}") for i, im in enumerate(images)]
        return {n: [o.maps[n] for o in outs] for n in dict.fromkeys(names)}

    def image_score(self, score_map: np.ndarray) -> float:
        """One number per image: the `config.image_quantile` quantile of its decision-score map."""
        return float(np.quantile(score_map, self.config.image_quantile))

    @property
    def pixel_threshold(self) -> dict[str, Any]:
        """The decision score's validation threshold record (threshold, rule, spread, ...)."""
        return self._fitted()[1].thresholds[self.config.score]

    def decide(self, scores: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(normalized, decisions) for image scores; (None, None) for a model without an image threshold."""
        if self.image_rule is None:
            return None, None
        s = np.asarray(scores, np.float64)
        return self.image_rule.scale(s), (s >= self.image_rule.scale.threshold).astype(np.int64)

    def predict(self, images: Sequence[np.ndarray]) -> Prediction:
        """Decision-score maps, masks, image scores, normalized scores and decisions (see the module docstring)."""
        name = self.config.score
        maps = [self.analyze(im, (name,), f"image {i}").maps[name] for i, im in enumerate(images)]
        threshold = self.pixel_threshold["threshold"]
        # An image whose map holds a non-finite pixel gets a NaN score: both are refused as damage.
        scores = np.array([self.image_score(m) if np.isfinite(m).all() else np.nan for m in maps], np.float64)
        normalized, decisions = self.decide(finite_scores(scores))
        return Prediction(scores, maps, normalized, decisions, [m >= threshold for m in maps])

    # the run contract

    def to_record(self) -> Record:
        network, scorer = self._fitted()
        tensors: dict[str, Any] = {f"network.{k}": v for k, v in network.inference_state_dict().items()}
        tensors.update({"sml.mean": scorer.sml.mean, "sml.std": scorer.sml.std,
                        "mahalanobis.means": scorer.mahalanobis.means, "mahalanobis.precision": scorer.mahalanobis.precision})
        f = scorer.fusion
        postprocess = {
            "score": self.config.score,
            "thresholds": scorer.thresholds,
            "fusion": {"components": list(Fusion.COMPONENTS), "mean": f.mean, "std": f.std, "weights": f.weights,
                       "weight_source": f.weight_source, "n_fit_pixels": f.n_fit, "fitted_on": "validation pixels"},
            "image": self.image_rule.to_dict() if self.image_rule is not None else None,
        }
        return Record(self.task, self.kind, self.config.to_dict(), _copy(self.state), _copy(postprocess),
                      {k: v.detach().to("cpu").contiguous().numpy() for k, v in tensors.items()})

    @classmethod
    def from_record(cls, record: Record, device: str | torch.device | None = None, **kwargs: Any) -> RoadModel:
        """Rebuild a fitted model, checking every tensor (names, shapes against the config, dtypes)
        and every post-processing number; anything off is a one-line error naming the file."""
        if kwargs:
            raise OddspotError(f"RoadModel.load: unknown option(s) {', '.join(sorted(kwargs))}")
        meta_path = f"{record.source}/{MODEL_FILE}"
        where = f"{record.source}/{TENSORS_FILE}"
        cfg = from_mapping(RoadConfig, record.config, f"{meta_path}: config", complete=True)
        model = cls(cfg, device)
        k = cfg.model.num_classes
        stray = sorted(n for n in record.tensors if n.split(".", 1)[0] not in TENSOR_GROUPS)
        if stray:
            raise OddspotError(f"{where}: unexpected tensor {stray[0]!r}; not a road model, refit it")
        weights = {n: torch.from_numpy(np.array(t)) for n, t in record.prefixed("network").items()}
        network = network_from_weights(cfg.model, weights, where, prefix="network.")

        def tensor(name: str, shape: tuple[int | None, ...]) -> torch.Tensor:
            t = record.tensor(name, ndim=len(shape), dtype=np.float32)
            if any(want is not None and got != want for got, want in zip(t.shape, shape)):
                raise OddspotError(f"{where}: tensor {name!r} is {tuple(t.shape)} but the config needs "
                                   f"{tuple('any' if s is None else s for s in shape)}; refit the model")
            return torch.from_numpy(np.array(t))

        d = feature_channels(cfg.model, cfg.scores.features)
        sml_mean, sml_std = tensor("sml.mean", (k,)), tensor("sml.std", (k,))
        if not bool((sml_std > 0).all()):
            raise OddspotError(f"{where}: tensor 'sml.std' holds values <= 0; refit the model")
        means, precision = tensor("mahalanobis.means", (None, d)), tensor("mahalanobis.precision", (d, d))
        if not 1 <= means.shape[0] <= k:
            raise OddspotError(f"{where}: tensor 'mahalanobis.means' has {means.shape[0]} rows for {k} classes; refit the model")

        state = record.state
        sml_state = _section(state, "sml", f"{meta_path}: state")
        maha_state = _section(state, "mahalanobis", f"{meta_path}: state")
        sml = StandardizedMaxLogit.fitted(sml_mean, sml_std, cfg.scores.sml_min_pixels,
                                          _ints(sml_state.get("counts"), f"{meta_path}: state.sml.counts"),
                                          _ints(sml_state.get("fallback_classes"), f"{meta_path}: state.sml.fallback_classes"))
        maha_counts = _ints(maha_state.get("counts"), f"{meta_path}: state.mahalanobis.counts")
        if len(maha_counts) != k or min(maha_counts) < 0 or sum(c > 0 for c in maha_counts) != means.shape[0]:
            raise OddspotError(f"{meta_path}: state.mahalanobis.counts must hold {k} pixel counts >= 0, as many of them "
                               f"non-zero as tensor 'mahalanobis.means' has rows ({means.shape[0]}); refit the model")
        maha = Mahalanobis.fitted(k, means, precision, maha_counts,
                                  cfg.scores.pixels_per_class, cfg.scores.seed, cfg.scores.shrinkage, IGNORE_INDEX)

        post = record.postprocess
        where_post = f"{meta_path}: postprocess"
        if not isinstance(post, dict):
            raise OddspotError(f"{where_post}: missing; a road model needs its thresholds, refit it")
        if post.get("score") != cfg.score:
            raise OddspotError(f"{where_post}.score {post.get('score')!r} differs from config.score {cfg.score!r}; refit the model")
        fu = _section(post, "fusion", where_post)
        fusion = Fusion.fitted(cfg.scores.temperature, cfg.scores.sigma,
                               _numbers(fu.get("mean"), 2, f"{where_post}.fusion.mean"),
                               _numbers(fu.get("std"), 2, f"{where_post}.fusion.std", positive=True),
                               _numbers(fu.get("weights"), 2, f"{where_post}.fusion.weights"),
                               str(fu.get("weight_source", "")), int(_number(fu.get("n_fit_pixels"), f"{where_post}.fusion.n_fit_pixels")))
        raw = _section(post, "thresholds", where_post)
        thresholds = {}
        for name in SCORE_NAMES:
            th = _section(raw, name, f"{where_post}.thresholds")
            _number(th.get("threshold"), f"{where_post}.thresholds.{name}.threshold")
            if _number(th.get("spread"), f"{where_post}.thresholds.{name}.spread") < 0:
                raise OddspotError(f"{where_post}.thresholds.{name}.spread is negative; refit the model")
            thresholds[name] = dict(th)
        model.image_rule = None if post.get("image") is None else ImageRule.from_dict(post["image"], f"{where_post}.image")
        model.network = model._place(network)
        model.scorer = RoadScorer(cfg.scores, sml, maha, fusion, thresholds)
        model.state = dict(state)
        return model
