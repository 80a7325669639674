"""StreetHazards reader and toy street generator."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from oddspot.data.streethazards import (ANOMALY_CLASS, IGNORE_INDEX, NUM_KNOWN_CLASSES, decode_labels, encode_labels,
                                        load_split, read_labels)
from oddspot.data.toy_streets import ToyStreetConfig, generate_toy_streets, render_scene
from oddspot.errors import OddspotError


def _write(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path)


@pytest.fixture()
def fixture_root(tmp_path):
    """A 2-image StreetHazards layout whose label PNG values are known."""
    stored = np.array([[0, 1, 2, 8], [9, 13, 14, 14]], np.uint8)  # 1-indexed, 0 = no annotation
    img = np.random.default_rng(0).integers(0, 255, (2, 4, 3), dtype=np.uint8)
    for top, sub in (("train", "training"), ("train", "validation"), ("test", "test")):
        _write(tmp_path / top / "images" / sub / "t1" / "a.png", img)
        _write(tmp_path / top / "annotations" / sub / "t1" / "a.png", stored)
    return tmp_path, stored, img


def test_reader_maps_one_indexed_labels(fixture_root):
    root, stored, img = fixture_root
    split = load_split(root, "test")
    assert len(split) == 1
    s = split[0]
    expected = np.array([[IGNORE_INDEX, 0, 1, 7], [8, 12, 13, 13]], np.uint8)
    np.testing.assert_array_equal(s.labels, expected)
    np.testing.assert_array_equal(s.image, img)
    np.testing.assert_array_equal(s.anomaly_mask, expected == ANOMALY_CLASS)
    np.testing.assert_array_equal(s.valid, expected != IGNORE_INDEX)
    assert s.meta["town"] == "t1" and s.meta["split"] == "test"
    sample = s.to_sample()
    assert sample.label == 1 and sample.mask.sum() == 2
    np.testing.assert_array_equal(encode_labels(expected), stored)


def test_decode_rejects_values_beyond_anomaly():
    with pytest.raises(ValueError, match="15"):
        decode_labels(np.array([[15]], np.uint8))


def test_bad_label_file_names_file(tmp_path):
    p = tmp_path / "x.png"
    _write(p, np.array([[3, 40]], np.uint8))
    with pytest.raises(OddspotError, match="x.png"):
        read_labels(p)


def test_missing_annotation_and_layout_errors(fixture_root, tmp_path):
    root, _, img = fixture_root
    _write(root / "train" / "images" / "training" / "t1" / "b.png", img)
    with pytest.raises(OddspotError, match="b.png: annotation missing"):
        load_split(root, "training")
    with pytest.raises(OddspotError, match="StreetHazards layout"):
        load_split(tmp_path / "nowhere", "validation")
    with pytest.raises(OddspotError, match="split 'dev' unknown"):
        load_split(root, "dev")


def test_corrupt_image_reported_and_skipped(fixture_root):
    root, stored, img = fixture_root
    bad = root / "train" / "images" / "validation" / "t1" / "0bad.png"
    bad.write_bytes(b"not a png")
    _write(root / "train" / "annotations" / "validation" / "t1" / "0bad.png", stored)
    split = load_split(root, "validation")
    errors = []
    samples = list(split.iter_samples(on_error=errors.append))
    assert len(samples) == 1 and len(errors) == 1 and "0bad.png" in str(errors[0])
    with pytest.raises(OddspotError):
        list(split.iter_samples())


def test_toy_scene_classes_and_anomalies():
    img, lab = render_scene(np.random.default_rng(3), 64, 128, anomalies=False)
    assert img.shape == (64, 128, 3) and img.dtype == np.uint8 and lab.shape == (64, 128)
    assert lab.max() < NUM_KNOWN_CLASSES
    present = set(np.unique(lab).tolist())
    assert {0, 7, 8}.issubset(present)  # sky (unlabeled), road, sidewalk
    hits = [(render_scene(np.random.default_rng(i), 64, 128, anomalies=True)[1] == ANOMALY_CLASS).any() for i in range(5)]
    assert sum(hits) >= 4


def test_toy_generator_layout_determinism_and_reuse(tmp_path):
    cfg = ToyStreetConfig(height=48, width=96, n_train=3, n_val=2, n_test=2, towns=2, seed=5)
    manifest = generate_toy_streets(tmp_path / "d", cfg)
    assert manifest["seed"] == 5
    train, val, test = (load_split(tmp_path / "d", s) for s in ("training", "validation", "test"))
    assert (len(train), len(val), len(test)) == (3, 2, 2)
    assert all(not train[i].anomaly_mask.any() for i in range(3))
    assert all(not val[i].anomaly_mask.any() for i in range(2))
    assert any(test[i].anomaly_mask.any() for i in range(2))
    again = generate_toy_streets(tmp_path / "e", cfg)
    np.testing.assert_array_equal(load_split(tmp_path / "e", "test")[1].image, test[1].image)
    assert generate_toy_streets(tmp_path / "d", cfg) == json.loads((tmp_path / "d" / "toy_streets.json").read_text())
    assert again["counts"] == manifest["counts"]
    with pytest.raises(OddspotError, match="different toy data set"):
        generate_toy_streets(tmp_path / "d", ToyStreetConfig(height=48, width=96, n_train=3, n_val=2, n_test=2, seed=6))
