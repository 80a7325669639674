"""The road model without its network: score maps, masks, image scores and decisions (numpy; no torch).

`RoadHead.analyze` takes the network's outputs for one image from `network_outputs(image)`, which
a subclass provides: `oddspot.road.estimator.RoadModel` runs DeepLabV3+ in torch, the exported
runtime (`oddspot.runtime.road`) runs the same network on OpenVINO or ONNX Runtime. Everything
after the network is this one code, so both give the same answers:

  logits (K x h x w, at the network's input size) -> bilinear to the image's size ->
    msp, max_logit, energy, entropy, sml (per pixel, from the logits)
  features (D x h/4 x w/4) -> min over classes of the Mahalanobis distance -> bilinear to the image's size
  fusion = sum_i w_i (G_sigma * c_i - mean_i) / std_i over c = (energy, Mahalanobis distance)
  sml_full = sml after SML's boundary suppression and dilated smoothing (`sml_full_map`)
  heat = reliability-weighted z-scores of (energy, spatial KL, class-conditional Gaussian energy);
         its normalization is stored with its threshold (`thresholds.heat.normalization`)

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
from oddspot.road.config import SCORE_NAMES, RoadConfig, ScoreConfig, feature_channels
from oddspot.runs.contract import MODEL_FILE, TENSORS_FILE, Record
from oddspot.runs.prediction import Prediction, finite_scores

TENSOR_GROUPS = ("network", "sml", "mahalanobis")
FUSION_COMPONENTS = ("energy", "mahalanobis")
HEAT_COMPONENTS = ("energy", "kl", "gaussian")
LATER_SCORES = ("sml_full", "heat")  # absent from models fitted before them (an upgraded 0.1 run)


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


def _neighbours(x: np.ndarray, offsets: tuple[tuple[int, int], ...], fill: float) -> np.ndarray:
    """len(offsets) x H x W: `x` (H x W) shifted by each (dy, dx), pixels from outside the map set to `fill`."""
    h, w = x.shape
    padded = np.pad(x, 1, mode="constant", constant_values=fill)
    return np.stack([padded[1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in offsets])


CROSS = ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))
SQUARE = tuple((dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1))


def class_boundaries(pred: np.ndarray) -> np.ndarray:
    """H x W bool: pixels where the predicted class changes, as SML's code finds them: the dilation of
    the class map by a 3 x 3 cross differs from its erosion by a 3 x 3 square (pixels outside the
    map take no part)."""
    x = pred.astype(np.float32)
    return _neighbours(x, CROSS, -np.inf).max(0) != _neighbours(x, SQUARE, np.inf).min(0)


def expand_mask(mask: np.ndarray, radius: int) -> np.ndarray:
    """Dilate a bool H x W mask by a diamond (L1 ball) of `radius`: `radius` dilations by a 3 x 3 cross."""
    out = mask
    for _ in range(radius):
        out = _neighbours(out.astype(np.float32), CROSS, 0.0).max(0) > 0
    return out


def suppress_boundaries(score: np.ndarray, pred: np.ndarray, width: int = 4, iterations: int = 4) -> np.ndarray:
    """SML's boundary suppression of an H x W score map, given the predicted classes.

    Iteration i (of `iterations`) takes the class boundaries widened by width - (width / iterations)
    x i - 1 pixels (none on the last iteration) and replaces every boundary pixel by the mean of the
    non-boundary pixels of its 3 x 3 window (edges replicated); a pixel without any keeps its value.
    So the boundary band is filled in from its sides inwards. `width` must be a multiple of `iterations`.
    """
    out = np.asarray(score, np.float32)
    if iterations == 0:
        return out.copy()
    boundaries = class_boundaries(pred)
    step = width // iterations
    for i in range(iterations):
        grow = 0 if width == 0 or i == iterations - 1 else width - step * i - 1
        keep = ~expand_mask(boundaries, grow)
        kept = np.pad(np.where(keep, out, np.float32(0)), 1, mode="edge")
        count = np.pad(keep.astype(np.float32), 1, mode="edge")
        h, w = out.shape
        total = sum(kept[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))
        n = sum(count[dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3))
        mean = np.divide(total, n, out=out.copy(), where=n > 0)
        out = np.where(keep, out, mean).astype(np.float32)
    return out


def dilated_gaussian(score: np.ndarray, size: int = 7, dilation: int = 6, sigma: float = 1.0) -> np.ndarray:
    """SML's dilated smoothing: an H x W map convolved with a normalized size x size Gaussian (`sigma`)
    whose taps are `dilation` pixels apart, edges replicated; separable, so two 1-D passes."""
    c = (size - 1) / 2
    k = np.exp(-((np.arange(size) - c) ** 2) / (2 * sigma**2))
    k = (k / k.sum()).astype(np.float32)
    x = np.asarray(score, np.float32)
    r = dilation * (size // 2)
    for axis in (-1, -2):
        n = x.shape[axis]
        pad = [(0, 0)] * x.ndim
        pad[axis] = (r, r)
        padded = np.pad(x, pad, mode="edge")
        window = [slice(None)] * x.ndim
        out = np.zeros_like(x)
        for j in range(size):
            window[axis] = slice(j * dilation, j * dilation + n)
            out += k[j] * padded[tuple(window)]
        x = out
    return x


def sml_full_map(sml: np.ndarray, pred: np.ndarray, config: ScoreConfig) -> np.ndarray:
    """`sml_full`: the SML map after boundary suppression and dilated smoothing (options `sml_*` of `config`)."""
    out = suppress_boundaries(sml, pred, config.sml_boundary_width, config.sml_boundary_iterations)
    return dilated_gaussian(out, config.sml_smoothing_size, config.sml_smoothing_dilation, config.sml_smoothing_sigma)


def gaussian_energy(features: np.ndarray, means: np.ndarray, precision: np.ndarray) -> np.ndarray:
    """D x h x w features -> h x w float32 -log sum_c exp(-d_c^2 / 2): the energy of the mixture of the
    class-conditional Gaussians (tied precision, equal weights; constants dropped)."""
    d, h, w = features.shape
    x = np.ascontiguousarray(features.reshape(d, h * w).T, dtype=np.float32)
    xp = x @ precision
    d2 = np.maximum((xp * x).sum(1, keepdims=True) - 2 * xp @ means.T + ((means @ precision) * means).sum(1)[None], 0.0)
    half = -0.5 * d2
    peak = half.max(1, keepdims=True)
    return (-(peak[:, 0] + np.log(np.exp(half - peak).sum(1)))).reshape(h, w).astype(np.float32)


@dataclass
class HeatParts:
    """HEAT's per-pixel inputs: the 3 raw components (energy, kl, gaussian) with their local variances
    (3 x ...) and the entropy normalized to [0, 1] (...), for maps or for sampled pixels alike."""

    components: np.ndarray
    local_variance: np.ndarray
    entropy: np.ndarray

    def take(self, index: np.ndarray) -> HeatParts:
        """The parts of flat pixel indices `index` of H x W maps."""
        k = len(HEAT_COMPONENTS)
        return HeatParts(self.components.reshape(k, -1)[:, index], self.local_variance.reshape(k, -1)[:, index],
                         self.entropy.reshape(-1)[index])


def heat_parts(logits: np.ndarray, gaussian: np.ndarray, config: ScoreConfig) -> HeatParts:
    """K x H x W logits and the H x W Gaussian-mixture energy -> HEAT's components at H x W.

    energy    the free energy at `temperature`, Gaussian-smoothed by `sigma` (as in fusion)
    kl        KL(p || p_bar): p the pixel's softmax, p_bar the softmax averaged over a Gaussian
              neighbourhood of `heat_kl_sigma` -- large where a pixel disagrees with its surroundings
    gaussian  the class-conditional Gaussian energy on the `features` tap
    """
    t = np.float32(config.temperature)
    logits = np.ascontiguousarray(logits, np.float32)  # one memory layout: the same rounding from every caller
    scaled = logits / t
    peak = scaled.max(0)
    e = blur_maps(-t * (peak + np.log(np.exp(scaled - peak).sum(0))), config.sigma)
    top = logits.max(0)
    logp = logits - top
    logp = logp - np.log(np.exp(logp).sum(0))
    p = np.exp(logp)
    p_bar = blur_maps(p, config.heat_kl_sigma)
    kl = np.maximum((p * (logp - np.log(np.maximum(p_bar, np.float32(1e-30))))).sum(0), 0.0)
    comps = np.stack([e, kl, np.ascontiguousarray(gaussian, np.float32)])
    # the local variance E[c^2] - E[c]^2 of components centred on their image mean: the same number,
    # without squaring a large offset that float32 cannot resolve a small variance against
    centred = comps - comps.reshape(len(comps), -1).mean(1, dtype=np.float64).astype(np.float32)[:, None, None]
    m1 = blur_maps(centred, config.heat_reliability_sigma)
    m2 = blur_maps(centred * centred, config.heat_reliability_sigma)
    ent = -(p * logp).sum(0) / np.float32(max(np.log(logits.shape[0]), 1e-12))
    return HeatParts(comps, np.maximum(m2 - m1 * m1, 0.0), np.clip(ent, 0.0, 1.0).astype(np.float32))


def heat_statistics(values: np.ndarray) -> tuple[list[float], list[float]]:
    """Mean and std of each component (rows of 3 x M `values`) for HEAT's z-scores.

    The std is floored at 1% of max(|mean|, 1): a component that barely varies (an untrained
    network's near-uniform softmax gives a KL of float32 rounding noise) would otherwise turn its
    rounding into z-scores that drown the others.
    """
    flat = np.asarray(values, np.float64).reshape(len(HEAT_COMPONENTS), -1)
    mean = flat.mean(1)
    return mean.tolist(), np.maximum(flat.std(1), 0.01 * np.maximum(np.abs(mean), 1.0)).tolist()


def image_normalization(parts: HeatParts) -> tuple[list[float], list[float]]:
    """`heat_statistics` over one image's pixels: `heat_test_normalization`'s statistics."""
    return heat_statistics(parts.components)


def heat_combine(parts: HeatParts, mean: Sequence[float], std: Sequence[float], reliability: str) -> np.ndarray:
    """HEAT = sum_i w_i z_i / sum_i w_i with z_i = (c_i - mean_i) / std_i and per-pixel weights w_i:

    variance  w_i = 1 / (1 + local variance of z_i): a component that is noisy around a pixel counts less
    entropy   w_i = exp(-h) for the logit components (energy, kl), 1 for the Gaussian one, h the
              normalized entropy: where the classifier is unsure, the feature density decides more
    none      w_i = 1
    """
    shape = (-1,) + (1,) * (parts.components.ndim - 1)
    mu = np.asarray(mean, np.float32).reshape(shape)
    sd = np.asarray(std, np.float32).reshape(shape)
    z = (parts.components - mu) / sd
    if reliability == "variance":
        w = 1.0 / (1.0 + parts.local_variance / (sd * sd))
    elif reliability == "entropy":
        trust = np.exp(-parts.entropy)
        w = np.stack([trust, trust, np.ones_like(trust)])
    else:
        w = np.ones_like(z)
    return ((w * z).sum(0) / w.sum(0)).astype(np.float32)


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
        self._check_later(names)
        top = logits.max(0) if {"msp", "entropy", "max_logit", "sml", "sml_full"} & set(names) else None
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
        if "sml" in names or "sml_full" in names:
            pred = logits.argmax(0)
            out["sml"] = -(top - fitted.sml_mean[pred]) / fitted.sml_std[pred]
            if "sml_full" in names:
                out["sml_full"] = sml_full_map(out["sml"], pred, cfg)
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
        if "heat" in names:
            gaussian = gaussian_energy(features, fitted.maha_means, fitted.maha_precision)
            parts = heat_parts(logits, resize_maps(gaussian[None], logits.shape[-2:])[0], cfg)
            norm = fitted.thresholds["heat"]["normalization"]
            mean, std = image_normalization(parts) if cfg.heat_test_normalization else (norm["mean"], norm["std"])
            out["heat"] = heat_combine(parts, mean, std, cfg.heat_reliability)
        return {n: out[n].astype(np.float32, copy=False) for n in names}

    def _check_later(self, names: Sequence[str]) -> None:
        """A one-line error for a score the model was fitted without (an upgraded 0.1 run has no sml_full, heat)."""
        missing = [n for n in names if n in LATER_SCORES and n not in self.fitted_scores().thresholds]
        if missing:
            raise OddspotError(f"score {missing[0]!r}: this model was fitted before oddspot had it; "
                               "refit the model to use it, or choose another score")

    def checked_request(self, image: np.ndarray, names: Sequence[str], where: str) -> tuple[np.ndarray, tuple[str, ...]]:
        """(the image, checked; the score names, each once): an unfitted model, an unknown score name or
        a bad image is a one-line error before any network runs."""
        self.fitted_scores()
        names = tuple(dict.fromkeys(names))
        unknown = [n for n in names if n not in SCORE_NAMES]
        if unknown:
            raise OddspotError(f"score {unknown[0]!r} unknown; choose from {', '.join(SCORE_NAMES)}")
        return check_image(image, where), names

    def _logits_and_maps(self, image: np.ndarray, names: Sequence[str], where: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        img, names = self.checked_request(image, names, where)
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
            if name in LATER_SCORES and name not in raw and cfg.score != name:
                continue
            th = _section(raw, name, f"{where_post}.thresholds")
            _number(th.get("threshold"), f"{where_post}.thresholds.{name}.threshold")
            if _number(th.get("spread"), f"{where_post}.thresholds.{name}.spread") < 0:
                raise OddspotError(f"{where_post}.thresholds.{name}.spread is negative; refit the model")
            thresholds[name] = dict(th)
        if "heat" in thresholds:
            norm = _section(thresholds["heat"], "normalization", f"{where_post}.thresholds.heat")
            n = len(HEAT_COMPONENTS)
            if norm.get("components") != list(HEAT_COMPONENTS):
                raise OddspotError(f"{where_post}.thresholds.heat.normalization.components must be "
                                   f"{list(HEAT_COMPONENTS)}; refit the model")
            _numbers(norm.get("mean"), n, f"{where_post}.thresholds.heat.normalization.mean")
            _numbers(norm.get("std"), n, f"{where_post}.thresholds.heat.normalization.std", positive=True)
        image_rule = None if post.get("image") is None else ImageRule.from_dict(post["image"], f"{where_post}.image")
        fitted = FittedScores(sml_mean, sml_std, sml_counts, sml_fallback, means, precision, maha_counts,
                              fusion_mean, fusion_std, fusion_weights, str(fu.get("weight_source", "")), n_fit, thresholds)
        return cfg, fitted, image_rule, dict(state)


__all__ = ["FUSION_COMPONENTS", "HEAT_COMPONENTS", "SCORE_NAMES", "FittedScores", "ImageRule", "RoadHead", "SceneOutput", "check_image"]
