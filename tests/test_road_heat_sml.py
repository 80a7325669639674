"""sml_full (boundary suppression + dilated smoothing, as SML's code) and HEAT, against slow references
written from their definitions, and both scores in a fitted model (stored, checked, exported head)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from model_cases import untrained_road_model
from oddspot.data.streethazards import load_split
from oddspot.data.toy_streets import ToyStreetConfig, generate_toy_streets
from oddspot.errors import OddspotError
from oddspot.imaging import blur_maps, resize_maps
from oddspot.road.config import ScoreConfig
from oddspot.road.estimator import RoadModel
from oddspot.road.head import (
    HeatParts,
    class_boundaries,
    dilated_gaussian,
    gaussian_energy,
    heat_combine,
    heat_parts,
    suppress_boundaries,
)
from oddspot.runs.contract import Record

pytestmark = pytest.mark.usefixtures("one_thread")

OPTIONS = {
    "model": {"aspp_channels": 16, "aspp_rates": [1, 2], "low_level_channels": 8, "decoder_channels": 16, "aux_channels": 8},
    "train": {"epochs": 1, "batch_size": 2, "seed": 3},
    "scores": {"val_pixels_per_image": 300, "pixels_per_class": 16, "seed": 3},
}


# slow references, one pixel at a time ------------------------------------------------------------

def ref_boundaries(pred):
    h, w = pred.shape
    out = np.zeros((h, w), bool)
    for y in range(h):
        for x in range(w):
            cross = [pred[y + dy, x + dx] for dy, dx in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1))
                     if 0 <= y + dy < h and 0 <= x + dx < w]
            square = [pred[y + dy, x + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1) if 0 <= y + dy < h and 0 <= x + dx < w]
            out[y, x] = max(cross) != min(square)
    return out


def ref_suppress(score, pred, width, iterations):
    h, w = score.shape
    b = ref_boundaries(pred)
    out = score.astype(np.float64).copy()
    step = width // iterations
    for it in range(iterations):
        r = 0 if it == iterations - 1 else width - step * it - 1
        band = np.zeros((h, w), bool)
        for y in range(h):
            for x in range(w):
                band[y, x] = any(b[yy, xx] for yy in range(h) for xx in range(w) if abs(yy - y) + abs(xx - x) <= r)
        new = out.copy()
        for y in range(h):
            for x in range(w):
                if not band[y, x]:
                    continue
                vals = [out[min(max(y + dy, 0), h - 1), min(max(x + dx, 0), w - 1)]
                        for dy in (-1, 0, 1) for dx in (-1, 0, 1)
                        if not band[min(max(y + dy, 0), h - 1), min(max(x + dx, 0), w - 1)]]
                if vals:
                    new[y, x] = sum(vals) / len(vals)
        out = new
    return out


def ref_dilated(score, size, dilation, sigma):
    h, w = score.shape
    c = (size - 1) / 2
    k = np.array([[math.exp(-((i - c) ** 2 + (j - c) ** 2) / (2 * sigma**2)) for j in range(size)] for i in range(size)])
    k /= k.sum()
    out = np.zeros((h, w))
    half = size // 2
    for y in range(h):
        for x in range(w):
            for i in range(size):
                for j in range(size):
                    yy = min(max(y + (i - half) * dilation, 0), h - 1)
                    xx = min(max(x + (j - half) * dilation, 0), w - 1)
                    out[y, x] += k[i, j] * score[yy, xx]
    return out


def tiny_scene(seed=0, h=11, w=13):
    rng = np.random.default_rng(seed)
    pred = np.zeros((h, w), np.int64)
    pred[:, 6:] = 1
    pred[3:7, 2:5] = 2
    pred[8:, 9:] = 3
    return rng.normal(size=(h, w)).astype(np.float32), pred


def test_boundaries_and_suppression_match_the_definition():
    score, pred = tiny_scene()
    blocks = np.kron(np.random.default_rng(3).integers(0, 4, (6, 7)), np.ones((2, 2), np.int64))[:11, :13]
    for labels in (pred, blocks):  # rectangles, and random 2 x 2 blocks (diagonal contacts)
        assert np.array_equal(class_boundaries(labels), ref_boundaries(labels))
        for width, iterations in ((4, 4), (2, 1), (0, 1), (4, 2)):
            got = suppress_boundaries(score, labels, width, iterations)
            assert np.allclose(got, ref_suppress(score, labels, width, iterations), atol=1e-5), (width, iterations)
    far = ~ref_boundaries(pred)
    for y, x in zip(*np.nonzero(far)):  # pixels 5+ steps from any boundary are never touched
        if all(abs(y - yy) + abs(x - xx) > 4 for yy, xx in zip(*np.nonzero(~far))):
            assert suppress_boundaries(score, pred)[y, x] == score[y, x]
    assert np.array_equal(suppress_boundaries(score, np.zeros_like(pred)), score)  # one class: no boundary


def test_dilated_smoothing_matches_the_definition():
    score, _ = tiny_scene(1, 9, 10)
    for size, dilation, sigma in ((7, 6, 1.0), (3, 2, 0.7), (5, 1, 2.0)):
        assert np.allclose(dilated_gaussian(score, size, dilation, sigma), ref_dilated(score, size, dilation, sigma), atol=1e-5)
    const = np.full((9, 10), 2.5, np.float32)
    assert np.allclose(dilated_gaussian(const), 2.5)


def test_heat_parts_and_combination_match_the_definition():
    rng = np.random.default_rng(2)
    k, h, w, d = 4, 6, 7, 3
    logits = rng.normal(size=(k, h, w)).astype(np.float32) * 3
    feats = rng.normal(size=(d, h, w)).astype(np.float32)
    means = rng.normal(size=(k, d)).astype(np.float32)
    a = rng.normal(size=(d, d))
    precision = (a @ a.T + np.eye(d)).astype(np.float32)
    cfg = ScoreConfig(temperature=1.5, sigma=0.0, heat_kl_sigma=1.0, heat_reliability_sigma=1.0)

    g = gaussian_energy(feats, means, precision)
    for y, x in ((0, 0), (3, 5)):
        f = feats[:, y, x].astype(np.float64)
        d2 = [float((f - m) @ precision @ (f - m)) for m in means.astype(np.float64)]
        assert g[y, x] == pytest.approx(-math.log(sum(math.exp(-v / 2) for v in d2)), rel=1e-4, abs=1e-4)

    parts = heat_parts(logits, g, cfg)
    p = np.exp(logits - logits.max(0)) / np.exp(logits - logits.max(0)).sum(0)
    p_bar = blur_maps(p, 1.0)
    for y, x in ((0, 0), (2, 3), (5, 6)):
        z = logits[:, y, x].astype(np.float64)
        energy = -1.5 * math.log(sum(math.exp(v / 1.5) for v in z))
        kl = sum(p[c, y, x] * math.log(p[c, y, x] / p_bar[c, y, x]) for c in range(k))
        ent = -sum(p[c, y, x] * math.log(p[c, y, x]) for c in range(k)) / math.log(k)
        assert parts.components[:, y, x] == pytest.approx([energy, kl, g[y, x]], rel=1e-4, abs=1e-5)
        assert parts.entropy[y, x] == pytest.approx(ent, abs=1e-5)

    mean, std = [0.5, 0.1, 2.0], [2.0, 0.5, 3.0]
    for mode in ("none", "variance", "entropy"):
        got = heat_combine(parts, mean, std, mode)
        y, x = 2, 3
        zs = [(parts.components[i, y, x] - mean[i]) / std[i] for i in range(3)]
        if mode == "none":
            ws = [1.0, 1.0, 1.0]
        elif mode == "variance":
            ws = [1 / (1 + parts.local_variance[i, y, x] / std[i] ** 2) for i in range(3)]
        else:
            t = math.exp(-parts.entropy[y, x])
            ws = [t, t, 1.0]
        assert got[y, x] == pytest.approx(sum(wi * zi for wi, zi in zip(ws, zs)) / sum(ws), rel=1e-4, abs=1e-5), mode
    sampled = heat_combine(parts.take(np.array([2 * w + 3])), mean, std, "variance")  # sampled pixels = the map's
    assert sampled[0] == pytest.approx(float(heat_combine(parts, mean, std, "variance")[2, 3]), rel=1e-6)
    assert isinstance(parts.take(np.arange(3)), HeatParts)


def test_options_are_checked():
    for bad in ({"sml_boundary_width": 3, "sml_boundary_iterations": 2}, {"sml_smoothing_size": 6},
                {"heat_reliability": "magic"}, {"heat_kl_sigma": 0.0}, {"sml_smoothing_dilation": 0},
                {"heat_test_normalization": "yes"}):
        with pytest.raises(OddspotError):
            ScoreConfig(**bad)
    assert ScoreConfig().heat_test_normalization is False  # test statistics only on request


# in a fitted model ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    generate_toy_streets(root, ToyStreetConfig(height=48, width=96, n_train=3, n_val=2, n_test=2, seed=6))
    return root


def fitted(data, **scores) -> RoadModel:
    return untrained_road_model(data, **{**OPTIONS, "scores": {**OPTIONS["scores"], **scores}})


@pytest.fixture(scope="module")
def model(toy):
    return fitted(toy)


def test_fitted_model_scores_heat_and_sml_full_from_validation(model, toy, tmp_path):
    test = load_split(toy, "test")
    image = test[0].image
    out = model.analyze(image, ("sml", "sml_full", "heat"))
    pred = out.classes
    cfg = model.config.scores
    want = dilated_gaussian(suppress_boundaries(out.maps["sml"], pred, 4, 4), cfg.sml_smoothing_size,
                            cfg.sml_smoothing_dilation, cfg.sml_smoothing_sigma)
    assert np.allclose(out.maps["sml_full"], want, atol=1e-6)
    th = model.scorer.thresholds["heat"]
    assert th["normalization"]["fitted_on"] == "normal validation pixels" and th["test_normalization"] is False
    assert "uses_test_statistics" not in th

    # the torch batch form gives the same maps from the same network outputs (this untrained network's
    # energy is almost constant on validation, so its z-scores magnify any rounding difference)
    logits, feats = model.network_outputs(image)
    logits = resize_maps(logits, image.shape[:2])
    torch_maps = model.scorer.maps(torch.from_numpy(logits)[None], torch.from_numpy(feats)[None], ("sml_full", "heat"))
    assert np.allclose(torch_maps["sml_full"][0].numpy(), out.maps["sml_full"], atol=1e-5)
    assert np.allclose(torch_maps["heat"][0].numpy(), out.maps["heat"], atol=1e-4)

    # saved and loaded: the same maps; a damaged normalization is a one-line error
    model.save(tmp_path / "run")
    back = RoadModel.load(tmp_path / "run", device="cpu")
    again = back.analyze(image, ("sml_full", "heat"))
    assert np.array_equal(again.maps["heat"], out.maps["heat"])
    assert np.array_equal(again.maps["sml_full"], out.maps["sml_full"])
    rec = model.to_record()
    rec.postprocess["thresholds"]["heat"]["normalization"]["std"] = [1.0, 0.0, 1.0]
    with pytest.raises(OddspotError, match=r"heat\.normalization\.std"):
        RoadModel.from_record(Record(rec.task, rec.kind, rec.config, rec.state, rec.postprocess, rec.tensors, source="x"))

    # a model fitted before these scores existed (an upgraded 0.1 run): loads, refuses them in one line
    rec = model.to_record()
    for name in ("heat", "sml_full"):
        del rec.postprocess["thresholds"][name]
    old = RoadModel.from_record(Record(rec.task, rec.kind, rec.config, rec.state, rec.postprocess, rec.tensors, source="x"))
    assert np.array_equal(old.analyze(image, ("sml",)).maps["sml"], out.maps["sml"])
    with pytest.raises(OddspotError, match="fitted before oddspot had it"):
        old.analyze(image, ("heat",))


def test_test_normalization_is_opt_in_and_recorded(toy, model):
    on = fitted(toy, heat_test_normalization=True)
    th = on.scorer.thresholds["heat"]
    assert th["test_normalization"] is True and "own mean and std" in th["uses_test_statistics"]
    image = load_split(toy, "test")[1].image
    a = on.analyze(image, ("heat",)).maps["heat"]
    # the per-image statistics replace the validation ones: changing those changes nothing
    th["normalization"]["mean"] = [v + 10 for v in th["normalization"]["mean"]]
    assert np.array_equal(on.analyze(image, ("heat",)).maps["heat"], a)
    base = model.analyze(image, ("heat",)).maps["heat"]
    assert not np.allclose(base, a)


@pytest.mark.parametrize("source", ["backbone_low", "backbone_high"])
def test_heat_and_mahalanobis_on_a_backbone_tap(toy, source):
    """HEAT's class-conditional Gaussian (and mahalanobis) on a backbone layer: the tap named by the
    model's low_level / high_level, with the channels `feature_channels` declares, scored alike by the
    torch batch form and the numpy head."""
    from oddspot.road.config import TAP_CHANNELS, feature_channels

    model = fitted(toy, features=source)
    image = load_split(toy, "test")[0].image
    logits, feats = model.network_outputs(image)
    tap = model.config.model.high_level if source == "backbone_high" else model.config.model.low_level
    stride = 16 if source == "backbone_high" else 4
    assert feats.shape == (TAP_CHANNELS["efficientnet_lite0"][tap], -(-image.shape[0] // stride), -(-image.shape[1] // stride))
    assert feats.shape[0] == feature_channels(model.config.model, source)
    out = model.analyze(image, ("mahalanobis", "heat"))
    logits = resize_maps(logits, image.shape[:2])
    torch_maps = model.scorer.maps(torch.from_numpy(logits)[None], torch.from_numpy(feats)[None], ("mahalanobis", "heat"))
    assert np.allclose(torch_maps["mahalanobis"][0].numpy(), out.maps["mahalanobis"], rtol=1e-4, atol=1e-4)
    assert np.allclose(torch_maps["heat"][0].numpy(), out.maps["heat"], atol=1e-4)


def test_tap_channels_are_the_networks_own():
    from oddspot.features.efficientnet_lite import EfficientNetLite0
    from oddspot.road.config import TAP_CHANNELS

    assert TAP_CHANNELS["efficientnet_lite0"] == {k: v[2] for k, v in EfficientNetLite0.LAYERS.items() if k != "head"}
    assert TAP_CHANNELS["resnet50"] == {f"layer{i}": 256 * 2 ** (i - 1) for i in range(1, 5)}
