"""The road model without its network: score maps, masks, image scores and decisions (numpy; no torch).

`RoadHead.analyze` takes the network's outputs for one image from `network_outputs(image)`, which
a subclass provides: `oddspot.road.estimator.RoadModel` runs DeepLabV3+ in torch, the exported
runtime (`oddspot.runtime.road`) runs the same network on OpenVINO or ONNX Runtime. Everything
after the network is this one code, so both give the same answers:

  logits (K x h x w, at the network's input size) -> bilinear to the image's size ->
    msp, max_logit, energy, entropy, sml (per pixel, from the logits)
  features (D x h/4 x w/4) -> min over classes of the Mahalanobis distance -> bilinear to the image's size
  fusion = sum_i w_i (G_sigma * c_i - mean_i) / std_i over c = (energy, Mahalanobis distance)

The fitted numbers (`FittedScores`) are what the run folder stores; `RoadHead.read_record`
checks them all and `to_record` writes them back.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from oddspot.calibration import ScoreScale
from oddspot.configs import finite_number, from_mapping
from oddspot.errors import OddspotError
from oddspot.imaging import blur_maps, resize_maps
from oddspot.road.config import SCORE_NAMES, RoadConfig, feature_channels
from oddspot.runs.contract import MODEL_FILE, TENSORS_FILE, Record
from oddspot.runs.prediction import Prediction, finite_scores

TENSOR_GROUPS = ("network", "sml", "mahalanobis")
FUSION_COMPONENTS = ("energy", "mahalanobis")


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


@dataclass
class FittedScores:
    """Every fitted number of the scores, as the run folder stores them.

    SML: per-class mean / std of the max logit (`sml_counts` pixels per predicted class, the
    `sml_fallback` classes use the statistics over all classes). Mahalanobis: the means of the
    classes with training pixels (C x D) and one tied precision (D x D). Fusion: per-component
    normalization and weights. `thresholds`: every score's validation pixel threshold record.
    """

    sml_mean: np.ndarray
    sml_std: np.ndarray
    sml_counts: list[int]
    sml_fallback: list[int]
    maha_means: np.ndarray
    maha_precision: np.ndarray
    maha_counts: list[int]
    fusion_mean: list[float]
    fusion_std: list[float]
    fusion_weights: list[float]
    fusion_weight_source: str
    fusion_n_fit: int
    thresholds: dict[str, dict[str, Any]]


def check_image(image: Any, where: str) -> np.ndarray:
    """An H x W x 3 uint8 RGB array, or a one-line error naming `where`."""
    arr = np.asarray(image)
    if arr.dtype != np.uint8 or arr.ndim != 3 or arr.shape[2] != 3 or min(arr.shape[:2]) < 8:
        raise OddspotError(f"{where}: expected an H x W x 3 uint8 RGB image of at least 8 x 8 pixels, "
                           f"got {arr.dtype} {tuple(arr.shape)}")
    return arr


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


def mahalanobis_map(features: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """D x h x w features -> h x w float32 min over classes of the Mahalanobis distance (tied precision)."""
    d, h, w = features.shape
    x = np.ascontiguousarray(features.reshape(d, h * w).T, dtype=np.float32)
    xp = x @ precision
    d2 = (xp * x).sum(1, keepdims=True) - 2 * xp @ means.T + ((means @ precision) * means).sum(1)[None]
    return np.sqrt(np.maximum(d2.min(1), 0.0)).reshape(h, w).astype(np.float32)


class RoadHead:
    """Score maps, masks, image scores and decisions from the network's outputs; `network_outputs` is the subclass's."""

    task = "road"
    kind = "deeplabv3plus"
    config_class = RoadConfig

    config: RoadConfig
    image_rule: ImageRule | None
    state: dict[str, Any]

    def network_outputs(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One checked H x W x 3 uint8 image -> (float32 K x h x w logits at the network's input size,
        float32 D x h/4 x w/4 features of `config.scores.features`)."""
        raise NotImplementedError

    def fitted_scores(self) -> FittedScores:
        """The fitted numbers of the scores (an error when the model is not fitted)."""
        raise NotImplementedError

    def network_tensors(self) -> dict[str, np.ndarray]:
        """The network's weights as the run folder stores them (without the `network.` prefix)."""
        raise NotImplementedError

    # score maps ----------------------------------------------------------------------------------
    def maps_of(self, logits: np.ndarray, features: np.ndarray, names: tuple[str, ...]) -> dict[str, np.ndarray]:
        """K x H x W logits (at the image's size) and D x h x w features -> {score: H x W float32}."""
        unknown = [n for n in names if n not in SCORE_NAMES]
        if unknown:
            raise OddspotError(f"score {unknown[0]!r} unknown; choose from {', '.join(SCORE_NAMES)}")
        fitted, cfg = self.fitted_scores(), self.config.scores
        t = cfg.temperature
        top = logits.max(0) if {"msp", "entropy", "max_logit", "sml"} & set(names) else None
        out: dict[str, np.ndarray] = {}
        if "msp" in names or "entropy" in names:
            shifted = logits - top
            total = np.exp(shifted).sum(0)
            if "msp" in names:  # the top class's softmax probability is exp(0) / total
                out["msp"] = 1.0 - 1.0 / total
            if "entropy" in names:
                logp = shifted - np.log(total)
                out["entropy"] = -(np.exp(logp) * logp).sum(0)
        if "max_logit" in names:
            out["max_logit"] = -top
        if "sml" in names:
            pred = logits.argmax(0)
            out["sml"] = -(top - fitted.sml_mean[pred]) / fitted.sml_std[pred]
        if "energy" in names or "fusion" in names:
            scaled = logits / np.float32(t)
            peak = scaled.max(0)
            out["energy"] = -np.float32(t) * (peak + np.log(np.exp(scaled - peak).sum(0)))
        if "mahalanobis" in names or "fusion" in names:
            dist = mahalanobis_map(features, fitted.maha_means, fitted.maha_precision)
            out["mahalanobis"] = resize_maps(dist[None], logits.shape[-2:])[0]
        if "fusion" in names:
            fused = np.zeros(logits.shape[-2:], np.float32)
            for i, name in enumerate(FUSION_COMPONENTS):
                mean, std, weight = (np.float32(v[i]) for v in (fitted.fusion_mean, fitted.fusion_std, fitted.fusion_weights))
                fused += (blur_maps(out[name], cfg.sigma) - mean) / std * weight
            out["fusion"] = fused
        return {n: out[n].astype(np.float32, copy=False) for n in names}

    def _logits_and_maps(self, image: np.ndarray, names: Sequence[str], where: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        self.fitted_scores()  # an unfitted model fails here, before anything else
        names = tuple(dict.fromkeys(names))
        unknown = [n for n in names if n not in SCORE_NAMES]
        if unknown:
            raise OddspotError(f"score {unknown[0]!r} unknown; choose from {', '.join(SCORE_NAMES)}")
        img = check_image(image, where)
        logits, features = self.network_outputs(img)
        logits = resize_maps(logits, img.shape[:2])
        return logits, self.maps_of(logits, features, names)

    def analyze(self, image: np.ndarray, names: Sequence[str] = SCORE_NAMES, where: str = "image") -> SceneOutput:
        """One H x W x 3 uint8 image -> the score maps `names` and the predicted classes, at its resolution."""
        logits, maps = self._logits_and_maps(image, names, where)
        return SceneOutput(maps, logits.argmax(0))

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
        return self.fitted_scores().thresholds[self.config.score]

    def decide(self, scores: np.ndarray) -> tuple[np.ndarray | None, np.ndarray | None]:
        """(normalized, decisions) for image scores; (None, None) for a model without an image threshold."""
        if self.image_rule is None:
            return None, None
        s = np.asarray(scores, np.float64)
        return self.image_rule.scale(s), (s >= self.image_rule.scale.threshold).astype(np.int64)

    def predict(self, images: Sequence[np.ndarray]) -> Prediction:
        """Decision-score maps, masks, image scores, normalized scores and decisions (see `oddspot.road.estimator`)."""
        name = self.config.score
        maps = [self._logits_and_maps(im, (name,), f"image {i}")[1][name] for i, im in enumerate(images)]
        threshold = self.pixel_threshold["threshold"]
        # An image whose map holds a non-finite pixel gets a NaN score: both are refused as damage.
        scores = np.array([self.image_score(m) if np.isfinite(m).all() else np.nan for m in maps], np.float64)
        normalized, decisions = self.decide(finite_scores(scores))
        return Prediction(scores, maps, normalized, decisions, [m >= threshold for m in maps])

    # the run contract ------------------------------------------------------------------------------
    def to_record(self) -> Record:
        f = self.fitted_scores()
        tensors = {f"network.{k}": v for k, v in self.network_tensors().items()}
        tensors.update({"sml.mean": f.sml_mean, "sml.std": f.sml_std,
                        "mahalanobis.means": f.maha_means, "mahalanobis.precision": f.maha_precision})
        postprocess = {
            "score": self.config.score,
            "thresholds": f.thresholds,
            "fusion": {"components": list(FUSION_COMPONENTS), "mean": f.fusion_mean, "std": f.fusion_std,
                       "weights": f.fusion_weights, "weight_source": f.fusion_weight_source,
                       "n_fit_pixels": f.fusion_n_fit, "fitted_on": "validation pixels"},
            "image": self.image_rule.to_dict() if self.image_rule is not None else None,
        }
        return Record(self.task, self.kind, self.config.to_dict(), _copy(self.state), _copy(postprocess), tensors)

    @staticmethod
    def read_record(record: Record) -> tuple[RoadConfig, FittedScores, ImageRule | None, dict[str, Any]]:
        """Config, fitted scores, image rule and state of a saved road model, every tensor (names, shapes
        against the config, dtypes) and post-processing number checked; the network's weights are the caller's."""
        meta_path = f"{record.source}/{MODEL_FILE}"
        where = f"{record.source}/{TENSORS_FILE}"
        cfg = from_mapping(RoadConfig, record.config, f"{meta_path}: config", complete=True)
        k = cfg.model.num_classes
        stray = sorted(n for n in record.tensors if n.split(".", 1)[0] not in TENSOR_GROUPS)
        if stray:
            raise OddspotError(f"{where}: unexpected tensor {stray[0]!r}; not a road model, refit it")

        def tensor(name: str, shape: tuple[int | None, ...]) -> np.ndarray:
            t = record.tensor(name, ndim=len(shape), dtype=np.float32)
            if any(want is not None and got != want for got, want in zip(t.shape, shape)):
                raise OddspotError(f"{where}: tensor {name!r} is {tuple(t.shape)} but the config needs "
                                   f"{tuple('any' if s is None else s for s in shape)}; refit the model")
            return np.array(t)

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
        sml_counts = _ints(sml_state.get("counts"), f"{meta_path}: state.sml.counts")
        sml_fallback = _ints(sml_state.get("fallback_classes"), f"{meta_path}: state.sml.fallback_classes")
        maha_counts = _ints(maha_state.get("counts"), f"{meta_path}: state.mahalanobis.counts")
        if len(maha_counts) != k or min(maha_counts) < 0 or sum(c > 0 for c in maha_counts) != means.shape[0]:
            raise OddspotError(f"{meta_path}: state.mahalanobis.counts must hold {k} pixel counts >= 0, as many of them "
                               f"non-zero as tensor 'mahalanobis.means' has rows ({means.shape[0]}); refit the model")

        post = record.postprocess
        where_post = f"{meta_path}: postprocess"
        if not isinstance(post, dict):
            raise OddspotError(f"{where_post}: missing; a road model needs its thresholds, refit it")
        if post.get("score") != cfg.score:
            raise OddspotError(f"{where_post}.score {post.get('score')!r} differs from config.score {cfg.score!r}; refit the model")
        fu = _section(post, "fusion", where_post)
        fusion_mean = _numbers(fu.get("mean"), 2, f"{where_post}.fusion.mean")
        fusion_std = _numbers(fu.get("std"), 2, f"{where_post}.fusion.std", positive=True)
        fusion_weights = _numbers(fu.get("weights"), 2, f"{where_post}.fusion.weights")
        n_fit = int(_number(fu.get("n_fit_pixels"), f"{where_post}.fusion.n_fit_pixels"))
        raw = _section(post, "thresholds", where_post)
        thresholds = {}
        for name in SCORE_NAMES:
            th = _section(raw, name, f"{where_post}.thresholds")
            _number(th.get("threshold"), f"{where_post}.thresholds.{name}.threshold")
            if _number(th.get("spread"), f"{where_post}.thresholds.{name}.spread") < 0:
                raise OddspotError(f"{where_post}.thresholds.{name}.spread is negative; refit the model")
            thresholds[name] = dict(th)
        image_rule = None if post.get("image") is None else ImageRule.from_dict(post["image"], f"{where_post}.image")
        fitted = FittedScores(sml_mean, sml_std, sml_counts, sml_fallback, means, precision, maha_counts,
                              fusion_mean, fusion_std, fusion_weights, str(fu.get("weight_source", "")), n_fit, thresholds)
        return cfg, fitted, image_rule, dict(state)


__all__ = ["FUSION_COMPONENTS", "SCORE_NAMES", "FittedScores", "ImageRule", "RoadHead", "SceneOutput", "check_image"]
