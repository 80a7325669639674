"""PatchCore: detects defects, scores independently of batches, strict options (save/load: test_model_contract)."""

from __future__ import annotations

import numpy as np
import pytest

from oddspot.data.mvtec import read_mvtec
from oddspot.detectors import PatchCore
from oddspot.errors import OddspotError


@pytest.fixture(scope="module")
def fitted(tiny_mvtec, small_options):
    refs = read_mvtec(tiny_mvtec, "brick")
    train = [r.load().image for r in refs["train"]]
    test = [r.load() for r in refs["test"]]
    return PatchCore(**small_options).fit(train), test


def test_defects_score_higher_and_maps_localise(fitted):
    model, test = fitted
    pred = model.predict([s.image for s in test])
    labels = np.array([s.label for s in test])
    assert pred.scores[labels == 1].mean() > pred.scores[labels == 0].mean()
    bad = next(i for i, s in enumerate(test) if s.label == 1)
    amap, mask = pred.maps[bad], test[bad].mask
    assert amap.shape == mask.shape and amap.dtype == np.float32
    assert amap[mask].mean() > amap[~mask].mean()


def test_score_does_not_depend_on_batch(fitted):
    model, test = fitted
    images = [s.image for s in test]
    alone = np.array([model.predict([img], maps=False).scores[0] for img in images])
    together = model.predict(images, maps=False).scores
    shuffled_order = np.random.default_rng(0).permutation(len(images))
    shuffled = model.predict([images[i] for i in shuffled_order], maps=False).scores
    assert np.array_equal(alone, together)
    assert np.array_equal(shuffled, together[shuffled_order])


@pytest.mark.parametrize("scoring", ["reweighted", "topk_mean"])
def test_other_image_scorings(fitted, scoring, small_options):
    model, test = fitted
    other = PatchCore(**{**small_options, "scoring": scoring})
    other.memory_bank = model.memory_bank
    scores = other.predict([s.image for s in test], maps=False).scores
    assert np.all(np.isfinite(scores)) and not np.array_equal(scores, model.predict([s.image for s in test], maps=False).scores)


def test_unknown_option_fails_loudly():
    with pytest.raises(OddspotError, match="coreset_ration"):
        PatchCore(coreset_ration=0.1)
    with pytest.raises(OddspotError, match="scoring"):
        PatchCore(scoring="mean")


@pytest.mark.parametrize("options, needle", [
    ({"coreset_ratio": 0.0}, "coreset_ratio"), ({"coreset_ratio": 1.5}, "coreset_ratio"),
    ({"image_size": 16}, "image_size"), ({"image_size": 4096}, "image_size"), ({"batch_size": 0}, "batch_size"),
    ({"batch_size": 5000}, "batch_size"), ({"projection_dim": 0}, "projection_dim"), ({"blur_sigma": -1.0}, "blur_sigma"),
    ({"num_neighbors": 0}, "num_neighbors"), ({"image_size": "64"}, "image_size"), ({"batch_size": True}, "batch_size"),
    ({"coreset_ratio": float("nan")}, "coreset_ratio"), ({"layers": ["stage3"]}, "layers"),
])
def test_out_of_range_or_mistyped_option_is_a_one_line_error(options, needle):
    with pytest.raises(OddspotError, match=needle) as info:
        PatchCore(**options)
    assert "\n" not in str(info.value)


def test_load_rejects_non_model_folder(tmp_path):
    with pytest.raises(OddspotError, match="model.json"):
        PatchCore.load(tmp_path)
