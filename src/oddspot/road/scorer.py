"""All pixel anomaly scores of a road model, with their fitted statistics and thresholds.

`fit_scorer` runs the trained network once over (a seeded subset of) the training split to fit
the Mahalanobis statistics, once over the validation split to fit SML, the fusion, HEAT's
normalization and every score's threshold, and once more over validation for `sml_full`'s
threshold (its post-processing needs whole SML maps, hence the fitted SML statistics). The test
split is never touched. The maps of new images are
`oddspot.road.head.RoadHead`'s (numpy, shared with the exported runtime); `RoadScorer.maps` is
their torch form for batches.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from oddspot.data.streethazards import ANOMALY_CLASS, IGNORE_INDEX, StreetHazardsSplit
from oddspot.errors import OddspotError
from oddspot.progress import track
from oddspot.road.config import SCORE_NAMES, ScoreConfig
from oddspot.road.inference import run_model, same_size_batches
from oddspot.road.model import DeepLabV3Plus
from oddspot.imaging import resize_maps
from oddspot.road.head import (
    HEAT_COMPONENTS,
    LATER_SCORES,
    HeatParts,
    gaussian_energy,
    heat_combine,
    heat_parts,
    heat_statistics,
    image_normalization,
    sml_full_map,
)
from oddspot.road.scores import Fusion, Mahalanobis, StandardizedMaxLogit, energy, entropy, max_logit, msp
from oddspot.road.thresholds import choose_threshold


class RoadScorer:
    """Every score of SCORE_NAMES for one model, with its fitted parts and validation thresholds."""

    def __init__(self, config: ScoreConfig, sml: StandardizedMaxLogit, mahalanobis: Mahalanobis, fusion: Fusion,
                 thresholds: dict[str, dict[str, Any]]) -> None:
        self.config = config
        self.sml = sml
        self.mahalanobis = mahalanobis
        self.fusion = fusion
        self.thresholds = thresholds

    @property
    def features(self) -> str:
        """Which decoder feature map the feature-distance scores need (pass it to `run_model`)."""
        return self.config.features


    def maps(self, logits: torch.Tensor, features: torch.Tensor,
             names: tuple[str, ...] = SCORE_NAMES) -> dict[str, torch.Tensor]:
        """N x K x H x W logits and N x D x h x w features -> {score: N x H x W}, larger = more anomalous.

        The torch form of `RoadHead.maps_of` (which predictions use), for batches on the network's device.
        """
        unknown = [n for n in names if n not in SCORE_NAMES]
        if unknown:
            raise OddspotError(f"score {unknown[0]!r} unknown; choose from {', '.join(SCORE_NAMES)}")
        out: dict[str, torch.Tensor] = {}
        t = self.config.temperature
        fns = {"msp": lambda: msp(logits), "max_logit": lambda: max_logit(logits),
               "energy": lambda: energy(logits, t), "entropy": lambda: entropy(logits), "sml": lambda: self.sml(logits)}
        for name in names:
            if name in fns:
                out[name] = fns[name]()
        if "mahalanobis" in names or "fusion" in names:
            dist = self.mahalanobis(features, size=tuple(logits.shape[-2:]))
            if "mahalanobis" in names:
                out["mahalanobis"] = dist
            if "fusion" in names:
                out["fusion"] = self.fusion(logits, dist)
        later = [n for n in names if n in LATER_SCORES and n not in self.thresholds]
        if later:
            raise OddspotError(f"score {later[0]!r}: this model was fitted before oddspot had it; "
                               "refit the model to use it, or choose another score")
        if "sml_full" in names:
            sml_map, pred = self.sml(logits).cpu().numpy(), logits.argmax(1).cpu().numpy()
            out["sml_full"] = torch.from_numpy(np.stack([sml_full_map(m, p, self.config) for m, p in zip(sml_map, pred)]))
        if "heat" in names:
            out["heat"] = torch.from_numpy(np.stack([self._heat(lg, f) for lg, f in zip(logits, features)]))
        return {n: out[n] for n in names}

    def _heat(self, logits: torch.Tensor, features: torch.Tensor) -> np.ndarray:
        parts = _heat_parts(logits, features, self.mahalanobis.means.numpy(), self.mahalanobis.precision.numpy(),
                            self.config)
        if self.config.heat_test_normalization:
            return heat_combine(parts, *image_normalization(parts), self.config.heat_reliability)
        norm = self.thresholds["heat"]["normalization"]
        return heat_combine(parts, norm["mean"], norm["std"], self.config.heat_reliability)


def _reporting(on_error: Callable[[OddspotError], None] | None) -> Callable[[OddspotError], None]:
    def default(exc: OddspotError) -> None:
        raise exc

    return on_error or default


def fit_scorer(model: DeepLabV3Plus, train: StreetHazardsSplit, val: StreetHazardsSplit, config: ScoreConfig | None = None,
               size: tuple[int, int] | None = None, on_error: Callable[[OddspotError], None] | None = None) -> RoadScorer:
    """Fit Mahalanobis on training pixels, then SML, fusion and thresholds on validation pixels."""
    config = config or ScoreConfig()
    report = _reporting(on_error)
    model.eval()
    k = model.num_classes
    rng = np.random.default_rng(config.seed)
    idx = np.arange(len(train))
    if config.mahalanobis_images is not None and len(idx) > config.mahalanobis_images:
        idx = np.sort(rng.choice(idx, config.mahalanobis_images, replace=False))

    def subset(split: StreetHazardsSplit, indices: np.ndarray):
        for i in indices:
            try:
                yield split[int(i)]
            except OddspotError as exc:
                report(exc)

    maha = Mahalanobis(k, config.pixels_per_class, config.seed, config.shrinkage, IGNORE_INDEX)
    n_batches = -(-len(idx) // config.batch_size)
    for batch in track(same_size_batches(subset(train, idx), config.batch_size), "fit feature statistics", n_batches):
        out = run_model(model, np.stack([s.image for s in batch]), size=size, features=config.features)
        maha.partial_fit(out["features"], torch.from_numpy(np.stack([s.labels for s in batch])))
    maha.finalize()

    sml = StandardizedMaxLogit(k, config.sml_min_pixels)
    fusion = Fusion(config.temperature, config.sigma)
    means, precision = maha.means.numpy(), maha.precision.numpy()
    keys = ("msp", "max_logit", "energy", "entropy", "mahalanobis", "comps", "pred", "anom", "heat_test")
    sample: dict[str, list[np.ndarray]] = {n: [] for n in keys}
    heat_sample: list[HeatParts] = []
    picks: list[np.ndarray] = []
    n_batches = -(-len(val) // config.batch_size)
    val_batches = same_size_batches(subset(val, np.arange(len(val))), config.batch_size)
    for batch in track(val_batches, "fit validation statistics", n_batches):
        out = run_model(model, np.stack([s.image for s in batch]), size=size, features=config.features)
        logits = out["logits"]
        labels = torch.from_numpy(np.stack([s.labels for s in batch])).to(logits.device)
        valid = labels != IGNORE_INDEX
        known = valid & (labels != ANOMALY_CLASS)
        sml.partial_fit(logits, known)
        dist = maha(out["features"], size=tuple(logits.shape[-2:]))
        comps = fusion.component_maps(logits, dist)
        basic = {"msp": msp(logits), "max_logit": max_logit(logits), "energy": energy(logits, config.temperature),
                 "entropy": entropy(logits), "mahalanobis": dist}
        pred = logits.argmax(1)
        for i in range(len(batch)):
            pix = torch.nonzero(valid[i].flatten()).flatten().cpu().numpy()
            if len(pix) > config.val_pixels_per_image:
                pix = np.sort(rng.choice(pix, config.val_pixels_per_image, replace=False))
            picks.append(pix)
            sel = torch.from_numpy(pix).to(logits.device)
            for name, m in basic.items():
                sample[name].append(m[i].flatten()[sel].cpu().numpy())
            sample["comps"].append(comps[i].flatten(1)[:, sel].T.cpu().numpy())
            sample["pred"].append(pred[i].flatten()[sel].cpu().numpy())
            sample["anom"].append((labels[i] == ANOMALY_CLASS).flatten()[sel].cpu().numpy())
            parts = _heat_parts(logits[i], out["features"][i], means, precision, config)
            heat_sample.append(parts.take(pix))
            if config.heat_test_normalization:
                sample["heat_test"].append(heat_combine(parts, *image_normalization(parts), config.heat_reliability)
                                           .reshape(-1)[pix])
    if not sample["pred"]:
        raise OddspotError(f"{val.image_dir}: no readable validation images; cannot fit the scores")
    sml.finalize()
    s = {name: np.concatenate(v) for name, v in sample.items() if v}
    anom = s["anom"].astype(bool)
    fusion.fit(s["comps"], anom)
    ml = -s["max_logit"]
    s["sml"] = -(ml - sml.mean.numpy()[s["pred"]]) / sml.std.numpy()[s["pred"]]
    comps_t = torch.from_numpy(s["comps"].T.astype(np.float32))[None, :, :, None]
    s["fusion"] = fusion.combine(comps_t)[0, :, 0].numpy()
    s["sml_full"] = _sml_full_sample(model, val, sml, picks, config, size)
    heat_pixels = HeatParts(np.concatenate([h.components for h in heat_sample], 1),
                            np.concatenate([h.local_variance for h in heat_sample], 1),
                            np.concatenate([h.entropy for h in heat_sample]))
    normal = heat_pixels.components[:, ~anom]
    if normal.shape[1] < 2:
        raise OddspotError("HEAT: fewer than 2 normal validation pixels; cannot normalise its components")
    mean, std = heat_statistics(normal)
    heat_norm = {"components": list(HEAT_COMPONENTS), "mean": mean, "std": std, "fitted_on": "normal validation pixels"}
    if config.heat_test_normalization:
        s["heat"] = s["heat_test"]
    else:
        s["heat"] = heat_combine(heat_pixels, heat_norm["mean"], heat_norm["std"], config.heat_reliability)
    thresholds = {name: choose_threshold(s[name], anom, config.target_fpr) for name in SCORE_NAMES}
    thresholds["heat"]["normalization"] = heat_norm
    thresholds["heat"]["reliability"] = config.heat_reliability
    thresholds["heat"]["test_normalization"] = config.heat_test_normalization
    if config.heat_test_normalization:
        thresholds["heat"]["uses_test_statistics"] = ("heat_test_normalization: each image's components are "
                                                      "normalised by that image's own mean and std")
    return RoadScorer(config, sml, maha, fusion, thresholds)


def _heat_parts(logits: torch.Tensor, features: torch.Tensor, means: np.ndarray, precision: np.ndarray,
                config: ScoreConfig) -> HeatParts:
    """HEAT's parts of one image from its K x H x W logits and D x h x w features (as `RoadHead.maps_of`)."""
    lg = logits.float().cpu().numpy()
    gaussian = gaussian_energy(features.float().cpu().numpy(), means, precision)
    return heat_parts(lg, resize_maps(gaussian[None], lg.shape[-2:])[0], config)


def _sml_full_sample(model: DeepLabV3Plus, val: StreetHazardsSplit, sml: StandardizedMaxLogit,
                     picks: list[np.ndarray], config: ScoreConfig, size: tuple[int, int] | None) -> np.ndarray:
    """`sml_full` at the validation pixels `picks` (one index array per readable image, in order).

    Boundary suppression and smoothing act on whole SML maps, which need the SML statistics of the
    whole validation split: so a second pass over it, once they are fitted.
    """
    mean, std = sml.mean.numpy(), sml.std.numpy()
    values: list[np.ndarray] = []
    n_batches = -(-len(val) // config.batch_size)
    batches = same_size_batches(val.iter_samples(on_error=lambda exc: None), config.batch_size)
    for batch in track(batches, "fit sml_full thresholds", n_batches):
        logits = run_model(model, np.stack([s.image for s in batch]), size=size)["logits"].cpu().numpy()
        for lg in logits:
            if len(values) == len(picks):
                break
            top, pred = lg.max(0), lg.argmax(0)
            values.append(sml_full_map(-(top - mean[pred]) / std[pred], pred, config).reshape(-1)[picks[len(values)]])
    if len(values) != len(picks):
        raise OddspotError(f"{val.image_dir}: the validation images changed while the scores were fitted; fit again")
    return np.concatenate(values)
