"""RoadModel: predictions, batch independence, one record per folder, strict loading, options, CLI shape.

The model here has an untrained network (seeded) with its scores fitted on tiny toy streets:
everything the estimator does after training, in about a second.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from model_cases import untrained_road_model
from oddspot.cli import cli
from oddspot.data.streethazards import load_split
from oddspot.data.toy_streets import ToyStreetConfig, generate_toy_streets
from oddspot.errors import OddspotError
from oddspot.road.estimator import RoadConfig, RoadModel
from oddspot.road.scorer import SCORE_NAMES
from oddspot.runs.contract import load_record, save_record
from oddspot.runs.registry import build_model, load_model

OPTIONS = {
    "model": {"aspp_channels": 16, "aspp_rates": [1, 2], "low_level_channels": 8, "decoder_channels": 16, "aux_channels": 8},
    "train": {"epochs": 1, "batch_size": 2, "seed": 5},
    "scores": {"val_pixels_per_image": 300, "pixels_per_class": 16, "seed": 5},
}

pytestmark = pytest.mark.usefixtures("one_thread")


def quick_model(data) -> RoadModel:
    """A RoadModel with a seeded untrained network and its scores fitted on `data`."""
    return untrained_road_model(data, **OPTIONS)


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    generate_toy_streets(root, ToyStreetConfig(height=48, width=96, n_train=3, n_val=2, n_test=3, seed=2))
    return root


@pytest.fixture(scope="module")
def model(toy):
    return quick_model(toy)


@pytest.fixture(scope="module")
def images(toy):
    test = load_split(toy, "test")
    return [test[i].image for i in range(len(test))]


def test_predict_returns_maps_masks_scores_and_decisions(model, images):
    pred = model.predict(images)
    th = model.pixel_threshold["threshold"]
    assert pred.scores.shape == (3,) and pred.scores.dtype == np.float64
    for m, mask in zip(pred.maps, pred.masks):
        assert m.shape == (48, 96) and m.dtype == np.float32
        assert np.array_equal(mask, m >= th)
    assert np.array_equal(pred.scores, [np.quantile(m, 0.999) for m in pred.maps])
    assert ((pred.normalized >= 0) & (pred.normalized <= 1)).all()
    assert np.array_equal(pred.decisions, (pred.scores >= model.image_rule.scale.threshold).astype(np.int64))
    maps = model.score_maps(images[:1])
    assert set(maps) == set(SCORE_NAMES) and np.array_equal(maps["fusion"][0], pred.maps[0])
    big = np.concatenate([images[0], images[0]], axis=1)  # any image size
    assert model.predict([big]).maps[0].shape == (48, 192)
    with pytest.raises(OddspotError, match="image 0: expected an H x W x 3 uint8"):
        model.predict([images[0].astype(np.float32)])


def test_outputs_do_not_depend_on_the_batch(model, images):
    together = model.predict(images)
    alone = [model.predict([im]) for im in images]
    reordered = model.predict(images[::-1])
    for i in range(len(images)):
        assert np.array_equal(together.maps[i], alone[i].maps[0])
        assert np.array_equal(together.maps[i], reordered.maps[len(images) - 1 - i])
        assert together.scores[i] == alone[i].scores[0]


def test_save_load_bit_identical_and_one_record(model, images, tmp_path):
    folder = model.save(tmp_path / "run")
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors"]
    meta = json.loads((folder / "model.json").read_text())
    assert meta["task"] == "road" and meta["kind"] == "deeplabv3plus" and meta["format_version"] == 2
    post = meta["postprocess"]
    assert post["score"] == "fusion" and set(post["thresholds"]) == set(SCORE_NAMES)
    assert set(post["fusion"]) >= {"mean", "std", "weights"} and set(post["image"]["scale"]) == {"low", "threshold", "high"}
    assert meta["config"]["model"]["aspp_channels"] == 16 and meta["config"]["score"] == "fusion"
    names = load_record(folder).tensors
    assert {"sml.mean", "sml.std", "mahalanobis.means", "mahalanobis.precision"} <= set(names)
    assert all(n.startswith(("network.", "sml.", "mahalanobis.")) for n in names)
    assert not any(n.startswith("network.aux_head.") for n in names)
    back = RoadModel.load(folder, device="cpu")
    a, b = model.predict(images), back.predict(images)
    for field in ("scores", "normalized", "decisions"):
        assert np.array_equal(getattr(a, field), getattr(b, field)), field
    assert all(np.array_equal(x, y) for x, y in zip(a.maps, b.maps))
    assert all(np.array_equal(x, y) for x, y in zip(a.masks, b.masks))
    for name, maps in model.score_maps(images[:1]).items():
        assert np.array_equal(maps[0], back.score_maps(images[:1], (name,))[name][0]), name
    assert isinstance(load_model(folder, task="road"), RoadModel)


def test_tampered_or_inconsistent_records_are_refused(model, tmp_path):
    folder = model.save(tmp_path / "run")
    data = bytearray((folder / "model.safetensors").read_bytes())
    data[-5] ^= 1
    (folder / "model.safetensors").write_bytes(bytes(data))
    with pytest.raises(OddspotError, match="sha256 does not match model.json") as err:
        RoadModel.load(folder)
    assert "\n" not in str(err.value)

    good = model.to_record()

    def refused(change, match):
        record = model.to_record()
        change(record)
        save_record(tmp_path / "bad", record)
        with pytest.raises(OddspotError, match=match) as exc:
            RoadModel.load(tmp_path / "bad")
        assert "\n" not in str(exc.value)

    d = good.tensors["mahalanobis.precision"].shape[0]
    refused(lambda r: r.tensors.update({"mahalanobis.precision": np.eye(d + 1, dtype=np.float32)}),
            r"'mahalanobis.precision' is \(9, 9\) but the config needs \(8, 8\)")
    refused(lambda r: r.tensors.update({"sml.std": r.tensors["sml.std"].astype(np.float64)}), "'sml.std' is float64")
    refused(lambda r: r.tensors.pop("sml.mean"), "'sml.mean' missing")
    refused(lambda r: r.tensors.pop("network.classifier.bias"), "missing tensor network.classifier.bias")
    refused(lambda r: r.tensors.update({"extra.x": np.zeros(2, np.float32)}), "unexpected tensor 'extra.x'")
    refused(lambda r: r.config["model"].update({"decoder_channels": 32}), "the config builds")
    refused(lambda r: r.config["train"].update({"epochs": 0}), r"model.json: config: train: epochs 0 out of range")
    refused(lambda r: r.postprocess["thresholds"].pop("sml"), "postprocess.thresholds: sml missing")
    refused(lambda r: r.postprocess["fusion"].update({"std": [1.0, 0.0]}), r"fusion.std\[1\]: expected a positive number")
    refused(lambda r: r.postprocess["image"]["scale"].update({"low": "x"}), "image.scale.low: expected a finite number")
    refused(lambda r: setattr(r, "postprocess", None), "postprocess: missing")


def test_options_are_strict_and_visible():
    cfg = RoadModel(train={"epochs": 3}, score="energy").config
    assert isinstance(cfg, RoadConfig) and cfg.train.epochs == 3 and cfg.score == "energy"
    assert cfg.train.augment.crop_size == (384, 384)
    assert isinstance(build_model("road", "deeplabv3plus", {"scores": {"sigma": 2.0}}), RoadModel)
    for options, match in [({"train": {"epochs": 0}}, "train: epochs 0 out of range"),
                           ({"train": {"epochs": True}}, "expected an integer"),
                           ({"scores": {"target_fpr": 0.7}}, "target_fpr 0.7 out of range"),
                           ({"train": {"augment": {"crop_size": [8, 8]}}}, "crop size"),
                           ({"modle": {}}, "unknown option"), ({"score": "nope"}, "score 'nope' unknown"),
                           ({"image_quantile": 0.2}, "image_quantile 0.2 out of range")]:
        with pytest.raises(OddspotError, match=match):
            RoadModel(**options)
    with pytest.raises(OddspotError, match="not fitted"):
        RoadModel().predict([np.zeros((16, 16, 3), np.uint8)])


def test_cli_verbs_and_common_options():
    runner = CliRunner()
    res = runner.invoke(cli, ["road", "--help"])
    assert res.exit_code == 0
    for verb in ("fit", "predict", "evaluate", "demo", "data"):
        assert verb in res.output
        helptext = runner.invoke(cli, ["road", verb, "--help"]).output
        for option in ("--out", "--config", "--seed", "--threads", "--device"):
            assert option in helptext, (verb, option)
    assert "toy-data" not in res.output and "train " not in res.output


def test_fit_options_merge_yaml_and_flags(tmp_path):
    from oddspot.cli.road_commands import fit_options

    yaml = tmp_path / "road.yaml"
    yaml.write_text("train:\n  epochs: 4\n  seed: 9\nmodel:\n  aspp_channels: 32\nscore: energy\n")
    options, source = fit_options(yaml, 0, False, {"lr": 0.01, "crop": "64x96", "freeze": "none", "epochs": None})
    assert source == str(yaml)
    assert options["train"] == {"epochs": 4, "seed": 9, "lr": 0.01, "freeze": None, "augment": {"crop_size": [64, 96]}}
    assert options["scores"] == {"seed": 0} and options["model"] == {"aspp_channels": 32} and options["score"] == "energy"
    options, _ = fit_options(yaml, 7, True, {"epochs": 2})
    assert options["train"]["seed"] == 7 and options["train"]["epochs"] == 2
    yaml.write_text("train: 3\n")
    with pytest.raises(OddspotError, match="train must be a mapping"):
        fit_options(yaml, 0, False, {})
