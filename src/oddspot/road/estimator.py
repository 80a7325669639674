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
depend on the other images passed with it. Everything after the network is `RoadHead`'s
(`oddspot.road.head`, numpy), shared with the exported runtime (`oddspot.runtime.road`).

The saved folder (the run contract of `oddspot.runs`) holds everything fitted:
  model.safetensors  network.* (inference weights, no auxiliary head), sml.mean / sml.std (per class),
                     mahalanobis.means (classes with training pixels x D), mahalanobis.precision (D x D)
  model.json         config (RoadConfig), state (classes, class weights, best epoch, training summary,
                     pixel counts of the fitted scores, image_size: the size most training images
                     have), postprocess (per-score pixel thresholds -- heat's with its component
                     normalization --, fusion normalization and weights, image threshold and its
                     [0, 1] scale)
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from oddspot.calibration import fit_threshold
from oddspot.configs import from_mapping
from oddspot.data.streethazards import ANOMALY_CLASS, IGNORE_INDEX, StreetHazardsSplit, load_split
from oddspot.errors import OddspotError
from oddspot.features.backbone import default_device
from oddspot.progress import track
from oddspot.road.checkpoint import network_from_weights
from oddspot.road.config import RoadConfig
from oddspot.road.head import FittedScores, ImageRule, RoadHead
from oddspot.road.model import DeepLabV3Plus, preprocess
from oddspot.road.scorer import RoadScorer, fit_scorer
from oddspot.road.scores import Fusion, Mahalanobis, StandardizedMaxLogit
from oddspot.road.train import train
from oddspot.runs.contract import TENSORS_FILE, Record
from oddspot.runs.model import RunModel


def common_image_size(split: StreetHazardsSplit) -> list[int] | None:
    """[H, W] most of the split's images have (read from their headers), or None when none is readable."""
    sizes: Counter[tuple[int, int]] = Counter()
    for path in split.image_paths:
        try:
            with Image.open(path) as img:
                sizes[(img.height, img.width)] += 1
        except (OSError, ValueError):
            continue
    return list(sizes.most_common(1)[0][0]) if sizes else None


class RoadModel(RoadHead, RunModel):
    """DeepLabV3+ on EfficientNet-Lite0 with nine pixel anomaly scores and one decision score.

    Everything after the network (maps, masks, image scores, decisions, the record) is
    `RoadHead`'s, shared with the exported runtime; this class adds the network and fitting.
    """

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
        fusion, every pixel threshold and the image threshold on its validation split. Part of `fit`.

        Also records `state.image_size`, the size most training images have: the network's input
        size of an export when the model has no `train.eval_size`.
        """
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
        self.state["image_size"] = common_image_size(train_split)
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

    def network_inputs(self, image: np.ndarray) -> torch.Tensor:
        """uint8 H x W x 3 -> 1 x 3 x h x w network input on the device: scaled, then resized
        (antialiased bilinear) to `train.eval_size` when the model has one."""
        x = preprocess(torch.from_numpy(np.array(image[None], dtype=np.uint8)).to(self.device))
        size = self.config.train.eval_size
        if size is not None and tuple(size) != tuple(image.shape[:2]):
            x = F.interpolate(x, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
        return x

    @torch.inference_mode()
    def network_outputs(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        network, _ = self._fitted()
        out = network(self.network_inputs(image), features=self.config.scores.features)
        return out["logits"][0].float().cpu().numpy(), out["features"][0].float().cpu().numpy()

    def fitted_scores(self) -> FittedScores:
        _, scorer = self._fitted()
        sml, maha, fusion = scorer.sml, scorer.mahalanobis, scorer.fusion

        def array(t: torch.Tensor) -> np.ndarray:
            return t.detach().to("cpu").contiguous().numpy()

        return FittedScores(array(sml.mean), array(sml.std), sml.counts, sml.fallback_classes,
                            array(maha.means), array(maha.precision), maha.counts,
                            fusion.mean, fusion.std, fusion.weights, fusion.weight_source, fusion.n_fit, scorer.thresholds)

    def network_tensors(self) -> dict[str, np.ndarray]:
        network, _ = self._fitted()
        return {k: v.detach().to("cpu").contiguous().numpy() for k, v in network.inference_state_dict().items()}

    # the run contract

    @classmethod
    def from_record(cls, record: Record, device: str | torch.device | None = None, **kwargs: Any) -> RoadModel:
        """Rebuild a fitted model, checking every tensor (names, shapes against the config, dtypes)
        and every post-processing number; anything off is a one-line error naming the file."""
        if kwargs:
            raise OddspotError(f"RoadModel.load: unknown option(s) {', '.join(sorted(kwargs))}")
        cfg, f, image_rule, state = cls.read_record(record)
        model = cls(cfg, device)
        weights = {n: torch.from_numpy(np.array(t)) for n, t in record.prefixed("network").items()}
        network = network_from_weights(cfg.model, weights, f"{record.source}/{TENSORS_FILE}", prefix="network.")
        s = cfg.scores
        sml = StandardizedMaxLogit.fitted(torch.from_numpy(f.sml_mean), torch.from_numpy(f.sml_std), s.sml_min_pixels,
                                          f.sml_counts, f.sml_fallback)
        maha = Mahalanobis.fitted(cfg.model.num_classes, torch.from_numpy(f.maha_means), torch.from_numpy(f.maha_precision),
                                  f.maha_counts, s.pixels_per_class, s.seed, s.shrinkage, IGNORE_INDEX)
        fusion = Fusion.fitted(s.temperature, s.sigma, f.fusion_mean, f.fusion_std, f.fusion_weights,
                               f.fusion_weight_source, f.fusion_n_fit)
        model.image_rule = image_rule
        model.network = model._place(network)
        model.scorer = RoadScorer(s, sml, maha, fusion, f.thresholds)
        model.state = state
        return model
