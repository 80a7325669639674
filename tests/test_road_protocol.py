"""The StreetHazards protocol of the road task: test-time augmentation against a hand loop, both mIoU
conventions against a hand-made confusion matrix and the benchmark's own counting, the training
augmentation's scale convention, per-image scales, rotation and switches, and the demo report."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

from oddspot.cli import cli
from oddspot.errors import OddspotError
from oddspot.metrics.segmentation import ConfusionMatrix, iou_conventions
from oddspot.road.augment import augment_batch
from oddspot.road.config import AugmentConfig
from oddspot.road.evaluate import named_miou, segmentation_on_test
from oddspot.road.head import RoadHead, mahalanobis_map
from oddspot.road.inference import network_outputs_at
from oddspot.road.model import preprocess
from oddspot.road.tta import TTA, model_runner, parse_scales
from oddspot.road.tta import analyze as analyze_tta

pytestmark = pytest.mark.usefixtures("one_thread")


# --- mIoU conventions ---------------------------------------------------------------------------------

def test_both_miou_conventions_from_a_hand_made_matrix():
    # rows = target, columns = prediction; classes 0..2 known, row 3 = the anomaly class (never predicted)
    m = np.array([[5, 1, 0, 0],
                  [2, 3, 0, 0],
                  [0, 0, 0, 0],   # class 2: absent from targets and predictions
                  [1, 2, 0, 0]])  # anomaly pixels predicted as class 0 (1) and class 1 (2)
    r = iou_conventions(m, 3)
    iou0 = 5 / (6 + 8 - 5)  # row 0 sum 6, column 0 sum over every row 8 (anomaly pixel included)
    iou1 = 3 / (5 + 6 - 3)
    assert r["iou"][:2] == pytest.approx([iou0, iou1]) and np.isnan(r["iou"][2])
    assert r["miou_present_classes"] == pytest.approx((iou0 + iou1) / 2)
    assert r["miou_all_classes"] == pytest.approx((iou0 + iou1 + 0) / 3)
    assert r["pixel_accuracy"] == pytest.approx(8 / 11) and r["n_pixels"] == 11 and r["n_other_pixels"] == 3
    # without the anomaly row: the plain matrix of the three classes
    plain = iou_conventions(m[:3, :3])
    assert plain["iou"][0] == pytest.approx(5 / (6 + 7 - 5))
    full = ConfusionMatrix(3)
    full.matrix = m[:3, :3].copy()
    c = full.compute()
    assert c["miou_all_classes"] == pytest.approx(plain["miou_all_classes"])
    assert c["miou"] == c["miou_present_classes"] == pytest.approx(plain["miou_present_classes"])
    named = named_miou({"a": 0.5, "b": float("nan"), "c": 0.25})
    assert named == {"miou_present_classes": pytest.approx(0.375), "miou_all_classes": pytest.approx(0.25)}


def _benchmark_iou(pred: np.ndarray, label: np.ndarray, num_class: int) -> np.ndarray:
    """The StreetHazards code's counting, written from its definition: classes shifted by one, every
    labelled pixel kept, histograms over 1..num_class (the anomaly label falls outside), and
    intersection / (union + 1e-10) summed over images."""
    inter_sum = np.zeros(num_class)
    union_sum = np.zeros(num_class)
    for p, t in zip(pred, label):
        p, t = p.astype(np.int64) + 1, t.astype(np.int64) + 1
        p = p * (t > 0)
        inter = np.zeros(num_class)
        area_p = np.zeros(num_class)
        area_t = np.zeros(num_class)
        for c in range(1, num_class + 1):  # slow on purpose: one class at a time
            inter[c - 1] = np.sum((p == c) & (t == c))
            area_p[c - 1] = np.sum(p == c)
            area_t[c - 1] = np.sum(t == c)
        inter_sum += inter
        union_sum += area_p + area_t - inter
    return inter_sum / (union_sum + 1e-10)


def test_test_split_miou_counts_as_the_benchmark_code():
    rng = np.random.default_rng(0)
    k = 5
    pred = rng.integers(0, k - 1, (3, 12, 16))  # class 4 is never predicted ...
    label = rng.integers(0, k - 1, (3, 12, 16))  # ... nor labelled: absent
    label[:, :3, :4] = k  # the anomaly class (StreetHazards: 13 after subtracting 1)
    cm = ConfusionMatrix(k + 1, ignore_index=255)
    for p, t in zip(pred, label):
        cm.update(p, t)
    ours = segmentation_on_test(cm.matrix, k, 3)
    ref = _benchmark_iou(pred, label, k)
    assert ours["miou_all_classes"] == pytest.approx(ref.mean(), abs=1e-9)
    got = np.array(list(ours["iou"].values()), np.float64)
    np.testing.assert_allclose(np.nan_to_num(got), ref, atol=1e-9)
    assert np.isnan(got[4]) and ours["miou_present_classes"] == pytest.approx(ref[:4].mean(), abs=1e-9)
    assert ours["n_anomaly_pixels"] == 3 * 12


# --- training augmentation ----------------------------------------------------------------------------

OFF = dict(flip=False, rotate=False, colour=False, blur=False, brightness=0, contrast=0, saturation=0, blur_prob=0)


def _scene(h: int = 64, w: int = 64, box: int = 8) -> tuple[np.ndarray, np.ndarray]:
    img = np.full((h, w, 3), 40, np.uint8)
    lab = np.zeros((h, w), np.uint8)
    top, left = (h - box) // 2, (w - box) // 2
    img[top:top + box, left:left + box] = 220
    lab[top:top + box, left:left + box] = 3
    return img, lab


def test_scale_above_one_zooms_in():
    img, lab = _scene()
    areas = {}
    for s in (0.5, 2.0):
        cfg = AugmentConfig(crop_size=(128, 128), scale_range=(s, s), **OFF)
        _, y = augment_batch([img], [lab], cfg, np.random.default_rng(0))
        areas[s] = int((y == 3).sum())
    assert areas[2.0] == pytest.approx(4 * 64, rel=0.15)  # the 8 x 8 object at s = 2 covers ~4x its pixels
    assert areas[0.5] == pytest.approx(64 / 4, rel=0.3)


def test_scales_are_drawn_per_image_and_small_images_are_padded_with_ignore():
    img, lab = _scene()
    cfg = AugmentConfig(crop_size=(128, 128), scale_range=(0.5, 2.0), **OFF)
    x, y = augment_batch([img] * 6, [lab] * 6, cfg, np.random.default_rng(1))
    assert x.shape[0] == 6 and x.shape[-2:] == y.shape[-2:]
    areas = [int((y[i] == 3).sum()) for i in range(6)]
    assert len(set(areas)) > 3, areas  # one scale per image, not one per batch
    valid = [int((y[i] != 255).sum()) for i in range(6)]
    assert min(valid) < y[0].numel() and max(valid) == y[0].numel()  # the smallest is padded, the largest fills it
    pad = y[int(np.argmin(valid))] == 255
    assert torch.all(x[int(np.argmin(valid))][:, pad] == 127.0)


def test_each_switch_off_leaves_the_batch_as_it_was():
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
    lab = rng.integers(0, 13, (48, 80)).astype(np.uint8)
    off = AugmentConfig(crop_size=(48, 80), scale=False, **{**OFF, "brightness": 0.5, "contrast": 0.5,
                                                            "saturation": 0.5, "blur_prob": 1.0})
    x, y = augment_batch([img, img], [lab, lab], off, np.random.default_rng(3))
    for i in range(2):
        np.testing.assert_array_equal(x[i].permute(1, 2, 0).numpy(), img.astype(np.float32))
        np.testing.assert_array_equal(y[i].numpy(), lab)
    # each switch on alone changes the batch: the switch is what turns it off
    for switch in ("scale", "flip", "rotate", "colour", "blur"):
        on = AugmentConfig(**{**off.__dict__, switch: True, "rotation_degrees": 30.0, "scale_range": (1.3, 1.3)})
        xs, ys = augment_batch([img] * 4, [lab] * 4, on, np.random.default_rng(3))
        changed = any(not np.array_equal(xs[i].permute(1, 2, 0).numpy(), img.astype(np.float32)) for i in range(4))
        assert changed, switch


def test_rotation_keeps_labels_on_their_pixels():
    # the label is a function of the pixel colour: 4 large blocks of 4 colours
    colours = np.array([[200, 30, 30], [30, 200, 30], [30, 30, 200], [200, 200, 30]], np.uint8)
    lab = np.zeros((64, 96), np.uint8)
    lab[:32, 48:] = 1
    lab[32:, :48] = 2
    lab[32:, 48:] = 3
    img = colours[lab]
    cfg = AugmentConfig(crop_size=(64, 96), scale=False, **{**OFF, "rotate": True}, rotation_degrees=40.0)
    x, y = augment_batch([img] * 4, [lab] * 4, cfg, np.random.default_rng(4))
    assert (y == 255).any()  # corners from outside the crop are ignored
    for i in range(4):
        valid = (y[i] != 255).numpy()
        pix = x[i].permute(1, 2, 0).numpy()[valid]
        nearest = np.abs(pix[:, None, :] - colours[None].astype(np.float32)).sum(-1).argmin(1)
        agree = (nearest == y[i].numpy()[valid]).mean()
        assert agree > 0.97, agree  # only the blocks' edges may differ (bilinear pixels, nearest labels)
        assert not np.array_equal(y[i].numpy(), lab)


def test_augment_options_are_checked_and_recorded():
    with pytest.raises(OddspotError, match="rotation_degrees"):
        AugmentConfig(rotation_degrees=float("nan"))
    with pytest.raises(OddspotError, match="rotate"):
        AugmentConfig(rotate="yes")  # type: ignore[arg-type]
    from oddspot.cli.road_commands import fit_options

    options, _ = fit_options(None, 0, False, {"augment_rotate": True, "rotation": 5.0, "augment_blur": False})
    assert options["train"]["augment"] == {"rotate": True, "rotation_degrees": 5.0, "blur": False}


# --- test-time augmentation ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    from oddspot.data.toy_streets import ToyStreetConfig, generate_toy_streets
    from oddspot.road.estimator import RoadModel

    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("streets")
    generate_toy_streets(root, ToyStreetConfig(height=64, width=128, n_train=6, n_val=2, n_test=2, seed=1))
    model = RoadModel(
        model={"aspp_channels": 16, "aspp_rates": [1, 2], "low_level_channels": 8, "decoder_channels": 16,
               "aux_channels": 8},
        train={"epochs": 1, "batch_size": 4, "lr": 3e-3, "freeze": "stage2", "warmup_steps": 1, "seed": 3,
               "augment": {"crop_size": [64, 96], "scale_range": [0.75, 1.5], "rotate": True}},
        scores={"val_pixels_per_image": 500, "seed": 3}, device="cpu").fit(root, log=lambda m: None)
    return model, root


def _image(seed: int = 5) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.kron(rng.integers(0, 256, (6, 10, 3)), np.ones((8, 8, 1))).astype(np.uint8)  # 48 x 80 blocks
    return np.ascontiguousarray(img)


@pytest.mark.slow  # the fitted model fixture takes ~9 s, once
@torch.inference_mode()
def test_tta_matches_a_hand_loop_over_two_scales_and_flip(fitted):
    model, _ = fitted
    img = _image()
    h, w = img.shape[:2]
    scales = (0.75, 1.25)
    fitted_scores = model.fitted_scores()
    logit_sum = torch.zeros(model.config.model.num_classes, h, w, dtype=torch.float64)
    maha_sum = np.zeros((h, w))
    for s in scales:
        for mirrored in (False, True):
            view = img[:, ::-1].copy() if mirrored else img
            x = preprocess(torch.from_numpy(view[None].copy()))
            x = F.interpolate(x, size=(round(h * s), round(w * s)), mode="bilinear", align_corners=False, antialias=True)
            out = model.network(x, features=model.config.scores.features)
            logits = F.interpolate(out["logits"], size=(h, w), mode="bilinear", align_corners=False)[0]
            dist = mahalanobis_map(out["features"][0].numpy(), fitted_scores.maha_means, fitted_scores.maha_precision)
            dist = F.interpolate(torch.from_numpy(dist)[None, None], size=(h, w), mode="bilinear", align_corners=False)[0, 0]
            if mirrored:
                logits, dist = logits.flip(-1), dist.flip(-1)
            logit_sum += logits.double()
            maha_sum += dist.numpy()
    mean = (logit_sum / 4).float()
    msp = 1 - torch.softmax(mean, 0).max(0).values
    energy = -torch.logsumexp(mean / model.config.scores.temperature, 0) * model.config.scores.temperature
    got = analyze_tta(model, img, ("msp", "energy", "mahalanobis", "fusion"), "img", TTA(scales, flip=True))
    np.testing.assert_allclose(got.maps["msp"], msp.numpy(), atol=2e-5)
    np.testing.assert_allclose(got.maps["energy"], energy.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got.maps["mahalanobis"], maha_sum / 4, rtol=1e-4, atol=1e-3)
    assert (got.classes == mean.argmax(0).numpy()).mean() > 0.999
    plain = model.analyze(img, ("msp",))
    assert not np.allclose(got.maps["msp"], plain.maps["msp"])  # the averaging did something


@pytest.mark.slow  # the fitted model fixture takes ~9 s, once
def test_tta_off_is_the_plain_path_bit_for_bit(fitted):
    model, _ = fitted
    img = _image(6)
    assert not TTA().active and not TTA((1.0,), False).active
    names = ("msp", "sml", "fusion")
    plain, off = model.analyze(img, names), analyze_tta(model, img, names, "img", TTA())
    for n in names:
        assert np.array_equal(plain.maps[n], off.maps[n])
    # the pass runner at scale 1 is the model's own network call, bit for bit
    logits, features = model.network_outputs(img)
    mine = network_outputs_at(model.network, img, img.shape[:2], model.config.scores.features)
    assert np.array_equal(logits, mine[0]) and np.array_equal(features, mine[1])


class _FixedSize(RoadHead):
    """An exported-like head: one static input size, network outputs from the torch model."""

    def __init__(self, model, size):
        self.model, self.input_size = model, size
        self.config, self.image_rule, self.state = model.config, model.image_rule, model.state

    def network_outputs(self, image):
        assert image.shape[:2] == self.input_size
        return self.model.network_outputs(image)

    def fitted_scores(self):
        return self.model.fitted_scores()


@pytest.mark.slow  # the fitted model fixture takes ~9 s, once
def test_a_static_graph_flips_but_refuses_other_scales(fitted):
    model, _ = fitted
    img = _image(7)
    fixed = _FixedSize(model, img.shape[:2])
    names = ("msp", "fusion")
    a = analyze_tta(fixed, img, names, "img", TTA(flip=True))
    b = analyze_tta(model, img, names, "img", TTA(flip=True))
    for n in names:
        np.testing.assert_array_equal(a.maps[n], b.maps[n])
    with pytest.raises(OddspotError, match="--runtime torch"):
        model_runner(fixed, TTA((0.5, 1.0)))


def test_scales_are_checked(tmp_path):
    assert parse_scales("0.75,1,1.25") == (0.75, 1.0, 1.25)
    for bad, needle in (("nan", "finite"), ("0.1", "0.25..4"), ("1,1", "repeats"), ("a", "numbers"), ("inf", "finite")):
        with pytest.raises(OddspotError, match=needle):
            TTA(parse_scales(bad))
    result = CliRunner().invoke(cli, ["road", "predict", "RUN", "IMG", "-o", "OUT", "--scales", "0.5,nan"])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1 and "--scales" in result.output
    for verb in ("predict", "evaluate"):  # the Ray workers run one plain pass: refused, not ignored
        result = CliRunner().invoke(cli, ["road", verb, "RUN", str(tmp_path), "-o", "OUT", "--engine", "ray", "--flip"])
        assert result.exit_code == 2 and "--engine local only" in result.output


@pytest.mark.slow  # the fitted model fixture takes ~9 s, once
def test_evaluate_and_predict_record_the_setting_and_both_splits_miou(fitted, tmp_path):
    from oddspot.road.evaluate import evaluate
    from oddspot.road.predict import predict

    model, root = fitted
    tta = TTA((0.75, 1.0), flip=True)
    m = evaluate(model, root, tmp_path / "eval", panels=0, log=lambda s: None, tta=tta)
    assert m["tta"]["scales"] == [0.75, 1.0] and m["tta"]["flip"] is True and m["tta"]["passes"] == 4
    for split in ("segmentation", "segmentation_test"):
        seg = m[split]
        assert 0 <= seg["miou_all_classes"] <= seg["miou_present_classes"] <= 1
    assert m["segmentation_test"]["split"] == "test" and m["segmentation_test"]["n_anomaly_pixels"] > 0
    on_disk = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert on_disk["tta"]["passes"] == 4 and "miou_all_classes" in on_disk["segmentation_test"]
    images = sorted((root / "test" / "images").rglob("*.png"))[:1]
    r = predict(model, images, tmp_path / "pred", panels=False, log=lambda s: None, tta=tta)
    assert r["images"] == 1 and json.loads((tmp_path / "pred" / "tta.json").read_text())["passes"] == 4
    plain = predict(model, images, tmp_path / "plain", panels=False, log=lambda s: None)
    assert plain["images"] == 1 and not (tmp_path / "plain" / "tta.json").exists()


# --- the demo report ------------------------------------------------------------------------------------

@pytest.mark.slow
def test_the_road_demo_report_shows_curves_sensitivity_miou_conventions_and_tta(tmp_path):
    from oddspot.report import write_report
    from oddspot.road.demo import run_road_demo

    out = tmp_path / "demo"
    run_road_demo(out, seed=0, quiet=True, device="cpu", epochs=1,
                  data_options={"height": 64, "width": 128, "n_train": 6, "n_val": 2, "n_test": 3})
    html = write_report(out, warn=lambda s: None).read_text()
    for needle in ('alt="pixel ROC per score"', 'alt="pixel PR per score"', "Threshold sensitivity",
                   "mIoU over all classes (absent = 0", "mIoU over classes present", "test-time augmentation: none",
                   "IoU (test)"):
        assert needle in html, needle
    assert re.search(r"offset \(spreads\)", html)
    # the image decisions' reliability: bins of the normalized image score against observed frequency
    rel = json.loads((out / "eval" / "metrics.json").read_text())["image"]["reliability"]
    assert sum(b["n"] for b in rel["bins"]) == rel["n_images"] == 3 and 0.0 <= rel["ece"] <= 1.0
    assert 'alt="reliability diagram of the image decisions"' in html and "ECE" in html
