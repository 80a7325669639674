"""Segmentation network: auxiliary head, freezing, checkpoints and class-count checks, augmentation."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from oddspot.errors import OddspotError
from oddspot.road.augment import AugmentConfig, augment_batch
from oddspot.road.checkpoint import check_labels, network_from_weights
from oddspot.road.model import DeepLabV3Plus, ModelConfig

SMALL = ModelConfig(num_classes=5, aspp_channels=16, aspp_rates=(1, 2), low_level_channels=8, decoder_channels=16,
                    aux_channels=8)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return DeepLabV3Plus(SMALL, pretrained=True)


def test_aux_head_trained_then_absent_at_inference(model):
    model.freeze("stage1")
    model.train()
    x = torch.randn(2, 3, 64, 64)
    y = torch.randint(0, 5, (2, 64, 64))
    out = model(x)
    assert set(out) == {"logits", "aux"} and out["aux"].shape == (2, 5, 64, 64)
    ce = torch.nn.CrossEntropyLoss(ignore_index=255)
    model.zero_grad()
    (ce(out["logits"], y) + 0.4 * ce(out["aux"], y)).backward()
    for p in model.aux_head.parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0
    # the frozen stem gets no gradient and keeps its BatchNorm statistics in train mode
    assert model.encoder._conv_stem.weight.grad is None
    assert not model.encoder._bn0.training
    calls = []
    handle = model.aux_head.register_forward_hook(lambda *a: calls.append(1))
    model.eval()
    with torch.no_grad():
        out = model(x, features="decoder_output")
        low = model(x, features="low_level")["features"]
        both = model(x, features="decoder_input")["features"]
    handle.remove()
    assert calls == [] and set(out) == {"logits", "features"}
    assert out["features"].shape == (2, 16, 16, 16) and low.shape == (2, 8, 16, 16) and both.shape == (2, 24, 16, 16)
    torch.testing.assert_close(both[:, 16:], low)
    with pytest.raises(OddspotError, match="feature source"):
        model(x, features="stage9")
    assert not any(k.startswith("aux_head.") for k in model.inference_state_dict())


def test_weights_are_checked_against_the_config(model):
    model.eval()
    weights = model.inference_state_dict()
    back = network_from_weights(SMALL, weights, "w.safetensors", num_classes=5)
    x = torch.randn(1, 3, 48, 80)
    with torch.no_grad():
        assert torch.equal(back(x)["logits"], model(x)["logits"])
    with pytest.raises(OddspotError, match="5 classes, but 13 expected"):
        network_from_weights(SMALL, weights, "w.safetensors", num_classes=13)
    with pytest.raises(OddspotError, match="w.safetensors: the classifier: 5 classes, but 7 expected"):
        network_from_weights(replace(SMALL, num_classes=7), weights, "w.safetensors")
    with pytest.raises(OddspotError, match="unexpected tensor network.extra"):
        network_from_weights(SMALL, {**weights, "extra": torch.zeros(1)}, "w.safetensors", prefix="network.")
    cut = {k: v for k, v in weights.items() if k != "decoder.0.0.weight"}
    with pytest.raises(OddspotError, match="missing tensor decoder.0.0.weight"):
        network_from_weights(SMALL, cut, "w.safetensors")
    with pytest.raises(OddspotError, match="the config builds"):
        network_from_weights(replace(SMALL, decoder_channels=8), weights, "w.safetensors")
    half = {**weights, "low_proj.0.weight": weights["low_proj.0.weight"].half()}
    with pytest.raises(OddspotError, match="torch.float16, expected torch.float32"):
        network_from_weights(SMALL, half, "w.safetensors")


def test_config_ranges_are_checked():
    with pytest.raises(OddspotError, match="aspp_channels 0 out of range"):
        ModelConfig(aspp_channels=0)
    with pytest.raises(OddspotError, match="dropout 1.0 out of range"):
        ModelConfig(dropout=1.0)
    with pytest.raises(OddspotError, match="num_classes 1 out of range"):
        ModelConfig(num_classes=1)
    with pytest.raises(OddspotError, match="blur_prob 2.0 out of range"):
        AugmentConfig(blur_prob=2.0)


def test_class_weights_from_training_frequencies():
    from oddspot.road.train import class_weights

    counts = np.array([900, 100, 0, 0])
    w = class_weights(counts, "sqrt_inverse")
    freq = np.array([0.9, 0.1])
    ref = 1 / np.sqrt(freq)
    ref = ref / (freq * ref).sum()
    np.testing.assert_allclose(w, [ref[0], ref[1], 1.0, 1.0])
    assert w[1] == pytest.approx(3 * w[0])
    np.testing.assert_array_equal(class_weights(counts, "none"), np.ones(4))


def test_label_check_names_source():
    labels = torch.tensor([[0, 4, 255], [13, 1, 2]])
    check_labels(torch.tensor([[0, 4, 255]]), 5, 255, "a.png")
    with pytest.raises(OddspotError, match="b.png: label 13 outside 0..4"):
        check_labels(labels, 5, 255, "b.png")


def test_multiscale_crop_follows_scale_without_padding():
    rng = np.random.default_rng(0)
    img = np.random.default_rng(1).integers(0, 255, (64, 128, 3), dtype=np.uint8)
    lab = (np.arange(64 * 128).reshape(64, 128) % 5).astype(np.uint8)
    lab[:, :3] = 255
    small = AugmentConfig(crop_size=(64, 128), scale_range=(0.5, 0.5), brightness=0, contrast=0, saturation=0, blur_prob=0)
    x, y = augment_batch([img, img], [lab, lab], small, rng)
    assert x.shape == (2, 3, 32, 64) and y.shape == (2, 32, 64)
    big = AugmentConfig(crop_size=(48, 48), scale_range=(2.0, 2.0), flip=False, brightness=0, contrast=0,
                        saturation=0, blur_prob=0)
    x, y = augment_batch([img], [lab], big, rng)
    assert x.shape == (1, 3, 48, 48)
    assert set(torch.unique(y).tolist()) <= set(np.unique(lab).tolist())
    # at scale 1 with no jitter the crop is an exact window of the source image
    same = AugmentConfig(crop_size=(32, 32), scale_range=(1.0, 1.0), flip=False, brightness=0, contrast=0,
                         saturation=0, blur_prob=0)
    x, y = augment_batch([img], [lab], same, rng)
    xi = x[0].permute(1, 2, 0).round().to(torch.uint8).numpy()
    hits = [(i, j) for i in range(33) for j in range(97) if np.array_equal(img[i:i + 32, j:j + 32], xi)]
    assert len(hits) == 1
    i, j = hits[0]
    np.testing.assert_array_equal(y[0].numpy(), lab[i:i + 32, j:j + 32])
    with pytest.raises(OddspotError, match="scale range"):
        AugmentConfig(scale_range=(2.0, 0.5))
