"""The offline backbone carries real ImageNet weights, loads strictly, and stops early."""

from __future__ import annotations

import pytest
import torch
from skimage import data

from oddspot.errors import OddspotError
from oddspot.features import FeatureExtractor, build_backbone
from oddspot.features.efficientnet_lite import EfficientNetLite0, load_checked_state


@pytest.fixture(scope="module")
def backbone():
    return build_backbone("efficientnet_lite0", device="cpu")


def _top1(backbone, image) -> int:
    with torch.inference_mode():
        return int(backbone.model(backbone.preprocess(image, 224)).argmax(1))


def test_weights_are_real_imagenet_weights(backbone):
    assert 281 <= _top1(backbone, data.chelsea()) <= 285
    assert _top1(backbone, data.coffee()) in (967, 968, 504)


def test_missing_or_misshaped_tensor_is_an_error():
    model = EfficientNetLite0()
    state = model.state_dict()
    broken = dict(state)
    broken.pop("_blocks.4._depthwise_conv.weight")
    with pytest.raises(OddspotError, match="missing"):
        load_checked_state(EfficientNetLite0(), broken, "w.pth")
    broken = dict(state)
    broken["_fc.bias"] = torch.zeros(10)
    with pytest.raises(OddspotError, match="mis-shaped"):
        load_checked_state(EfficientNetLite0(), broken, "w.pth")


def test_extractor_stops_after_deepest_layer(backbone):
    ran = []
    handle = backbone.model._blocks[11].register_forward_hook(lambda *a: ran.append(1))
    try:
        ex = FeatureExtractor(backbone, ["stage3", "stage5"])
        out = ex(backbone.preprocess(data.coffee(), 128))
        ex.close()
    finally:
        handle.remove()
    assert ran == []
    assert out["stage3"].shape[1:] == (40, 16, 16) and out["stage5"].shape[1:] == (112, 8, 8)


def test_unknown_layer_names_the_choices(backbone):
    with pytest.raises(OddspotError, match="stage3"):
        FeatureExtractor(backbone, ["layer9"])


def test_two_extractors_share_one_backbone(backbone):
    shallow = FeatureExtractor(backbone, ["stage3"])
    deep = FeatureExtractor(backbone, ["stage3", "stage5"])
    x = backbone.preprocess(data.coffee(), 64)
    assert set(shallow(x)) == {"stage3"} and set(deep(x)) == {"stage3", "stage5"}
    shallow.close()
    deep.close()
