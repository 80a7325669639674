"""Test-time augmentation of a road model: multi-scale and horizontal-flip averaging (numpy; no torch).

Each pass runs the network on the image resized to `s` times the model's own input size (its
`train.eval_size`, else the image's size; an exported graph's static size) and, with `flip`,
also on the mirrored image. Every pass's logits are upsampled (bilinear) to the image's full
resolution, mirrored back, and averaged with equal weights; the prediction and every score that
derives from the logits alone (`LOGIT_SCORES`) are computed from the averaged logits, as the
StreetHazards benchmark code scores its multi-scale average. A score that needs the decoder
features (mahalanobis, fusion, and any other score not in `LOGIT_SCORES`) is the mean of its
per-pass maps at full resolution, each pass's map computed exactly as without augmentation.

`TTA()` (scales (1.0,), no flip) is no augmentation: callers then take the plain path, so the
default output is bit-identical to a model without this module. The pixel and image thresholds
stay the ones fitted on validation without augmentation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from oddspot.errors import OddspotError
from oddspot.imaging import resize_maps
from oddspot.road.head import RoadHead, SceneOutput, check_image

LOGIT_SCORES: tuple[str, ...] = ("msp", "max_logit", "energy", "entropy", "sml")
SCALE_LIMITS = (0.25, 4.0)
MAX_SCALES = 8
MIN_SIDE = 16

# (image H x W x 3 uint8, network input size (h, w)) -> (K x h x w logits, D x h' x w' features)
PassRunner = Callable[[np.ndarray, tuple[int, int]], tuple[np.ndarray, np.ndarray]]
# (run one pass, the base input size of an image)
Runner = tuple[PassRunner, Callable[[np.ndarray], tuple[int, int]]]


@dataclass(frozen=True)
class TTA:
    """Test-time augmentation: network input scales relative to the model's input size, and mirroring."""

    scales: tuple[float, ...] = (1.0,)
    flip: bool = False

    def __post_init__(self) -> None:
        scales = tuple(self.scales)
        if not 1 <= len(scales) <= MAX_SCALES:
            raise OddspotError(f"--scales: give 1 to {MAX_SCALES} scales, got {len(scales)}")
        lo, hi = SCALE_LIMITS
        for s in scales:
            if isinstance(s, bool) or not isinstance(s, (int, float)) or not math.isfinite(s) or not lo <= s <= hi:
                raise OddspotError(f"--scales: {s!r} is not a finite number in {lo:g}..{hi:g}; use e.g. 0.75,1.0,1.25")
        if len(set(scales)) != len(scales):
            raise OddspotError(f"--scales: {','.join(f'{s:g}' for s in scales)} repeats a scale; list each once")
        if not isinstance(self.flip, bool):
            raise OddspotError(f"--flip: expected true or false, got {self.flip!r}")
        object.__setattr__(self, "scales", tuple(float(s) for s in scales))

    @property
    def active(self) -> bool:
        """False for the plain single pass (scale 1, no flip)."""
        return self.flip or self.scales != (1.0,)

    @property
    def passes(self) -> list[tuple[float, bool]]:
        """(scale, mirrored) of every network pass, in the order they run."""
        return [(s, f) for s in self.scales for f in ((False, True) if self.flip else (False,))]

    def to_dict(self) -> dict[str, Any]:
        """The record of metrics.json / tta.json: the setting and how each kind of score is averaged."""
        record: dict[str, Any] = {"scales": list(self.scales), "flip": self.flip, "passes": len(self.passes)}
        if self.active:
            record.update({"relative_to": "the model's input size (train.eval_size, else the image's size)",
                           "logit_scores": "computed from the mean of the passes' logits at full resolution",
                           "feature_scores": "mean of the passes' maps at full resolution",
                           "thresholds": "fitted on validation without test-time augmentation"})
        return record


def parse_scales(text: str | None) -> tuple[float, ...]:
    """`--scales 0.75,1.0,1.25` -> (0.75, 1.0, 1.25); None -> (1.0,). Range checks are `TTA`'s."""
    if text is None:
        return (1.0,)
    try:
        scales = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise OddspotError(f"--scales {text!r}: expected numbers separated by commas, like 0.75,1.0,1.25") from None
    return scales


def pass_size(base: tuple[int, int], scale: float) -> tuple[int, int]:
    """The network input size of one pass: `base` (h, w) times `scale`, rounded; at least MIN_SIDE a side."""
    size = (int(round(base[0] * scale)), int(round(base[1] * scale)))
    if min(size) < MIN_SIDE:
        raise OddspotError(f"--scales {scale:g}: the network input would be {size[0]} x {size[1]} pixels, "
                           f"under {MIN_SIDE} a side; use a larger scale")
    return size


def model_runner(head: RoadHead, tta: TTA | None = None) -> Runner:
    """(run one pass, the base input size of an image) for `head`.

    The torch model (it holds its `network`) runs at any size. An exported model's graph has one
    static input size (`input_size`), so only scale 1.0 runs there: mirroring works, other scales
    (of `tta`, checked here, before any image) are a one-line error naming --runtime torch.
    """
    if hasattr(head, "network"):
        from oddspot.road.inference import network_outputs_at  # torch: only a torch model gets here

        head.fitted_scores()  # an unfitted model fails here
        network = head.network

        features = head.config.scores.features
        eval_size = head.config.train.eval_size

        def torch_base(image: np.ndarray) -> tuple[int, int]:
            return tuple(eval_size) if eval_size is not None else tuple(image.shape[:2])  # type: ignore[return-value]

        return (lambda image, size: network_outputs_at(network, image, size, features)), torch_base
    fixed = getattr(head, "input_size", None)
    if fixed is None:
        raise OddspotError(f"{type(head).__name__}: test-time augmentation needs a torch or an exported road model")
    fixed = (int(fixed[0]), int(fixed[1]))
    if tta is not None and tta.scales != (1.0,):
        raise OddspotError(f"--scales {','.join(f'{s:g}' for s in tta.scales)}: the exported network graph takes one "
                           f"input size ({fixed[0]} x {fixed[1]}); multi-scale averaging needs --runtime torch "
                           "(--flip works on both)")

    def fixed_run(image: np.ndarray, size: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
        if tuple(size) != fixed:
            raise OddspotError(f"--scales: the exported network graph takes one input size ({fixed[0]} x {fixed[1]}); "
                               "multi-scale averaging needs --runtime torch (--flip works on both)")
        return head.network_outputs(image)

    return fixed_run, lambda image: fixed


def _passes(head: RoadHead, img: np.ndarray, tta: TTA, runner: Runner | None) -> Iterator[tuple[bool, np.ndarray, np.ndarray]]:
    """(mirrored, K x H x W logits at full resolution in the pass's own frame, the pass's features) per pass."""
    run, base = runner if runner is not None else model_runner(head)
    hw = img.shape[:2]
    sizes = {s: pass_size(base(img), s) for s in tta.scales}  # every scale checked before the first pass
    for scale, mirrored in tta.passes:
        view = np.ascontiguousarray(img[:, ::-1]) if mirrored else img
        logits, features = run(view, sizes[scale])
        yield mirrored, resize_maps(np.asarray(logits, np.float32), hw), features


def analyze(head: RoadHead, image: np.ndarray, names: Sequence[str], where: str, tta: TTA,
            runner: Runner | None = None) -> SceneOutput:
    """`head.analyze(image, names, where)` with `tta`'s passes averaged (see the module docstring);
    exactly `head.analyze` when `tta` is not active."""
    if not tta.active:
        return head.analyze(image, names, where)
    img, names = head.checked_request(image, names, where)
    from_features = tuple(n for n in names if n not in LOGIT_SCORES)
    from_logits = tuple(n for n in names if n in LOGIT_SCORES)
    total: np.ndarray | None = None
    sums: dict[str, np.ndarray] = {}
    first_features: np.ndarray | None = None
    for mirrored, logits, features in _passes(head, img, tta, runner):
        if from_features:
            for name, m in head.maps_of(logits, features, from_features).items():
                m = m[:, ::-1] if mirrored else m
                sums[name] = m.astype(np.float64) if name not in sums else sums[name] + m
        logits = logits[:, :, ::-1] if mirrored else logits
        total = logits.astype(np.float64) if total is None else total + logits
        first_features = features if first_features is None else first_features
    n = len(tta.passes)
    mean = np.ascontiguousarray((total / n).astype(np.float32))  # type: ignore[operator]
    maps = dict(head.maps_of(mean, first_features, from_logits)) if from_logits else {}  # type: ignore[arg-type]
    maps.update({name: (s / n).astype(np.float32) for name, s in sums.items()})
    return SceneOutput({name: maps[name] for name in names}, mean.argmax(0))


def mean_logits(head: RoadHead, image: np.ndarray, tta: TTA, where: str = "image", runner: Runner | None = None) -> np.ndarray:
    """K x H x W float32 mean of `tta`'s passes' logits at the image's resolution (what the segmentation uses)."""
    total: np.ndarray | None = None
    for mirrored, logits, _ in _passes(head, check_image(image, where), tta, runner):
        logits = logits[:, :, ::-1] if mirrored else logits
        total = logits.astype(np.float64) if total is None else total + logits
    return (total / len(tta.passes)).astype(np.float32)  # type: ignore[operator]
