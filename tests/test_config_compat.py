"""Models saved before a config field existed still load, and take the value that reproduces them.

A saved config must hold every field (`configs.from_mapping(..., complete=True)`), so a field added
later would make every earlier model.json unreadable. Each config class lists such fields in its
`ADDED_FIELDS`, with the value the older models were made with. The field lists below are those
of the first format-2 release; a new field that is not listed in `ADDED_FIELDS` fails here.
"""

from __future__ import annotations

import json
from dataclasses import asdict, fields

import numpy as np
import pytest

from oddspot.configs import from_mapping
from oddspot.detectors.cascade_head import CascadeConfig
from oddspot.detectors.padim_head import PaDiMConfig
from oddspot.detectors.patchcore_head import PatchCoreConfig
from oddspot.errors import OddspotError
from oddspot.road.config import AugmentConfig, ModelConfig, RoadConfig, ScoreConfig, TrainConfig
from oddspot.video.autoencoder_head import AutoencoderConfig
from oddspot.video.motion_head import MotionConfig

FORMAT2_FIELDS = {
    PatchCoreConfig: ["backbone", "layers", "image_size", "pool", "coreset_ratio", "projection_dim", "num_neighbors",
                      "scoring", "reweight_neighbors", "topk", "blur_sigma", "batch_size", "seed"],
    PaDiMConfig: ["backbone", "layers", "image_size", "n_features", "regularization", "blur_sigma", "batch_size", "seed"],
    CascadeConfig: ["localizer", "localizer_options", "gate_options", "low_margin", "high_margin", "backbone", "seed"],
    AugmentConfig: ["crop_size", "scale_range", "flip", "brightness", "contrast", "saturation", "blur_prob", "blur_sigma"],
    ModelConfig: ["num_classes", "low_level", "high_level", "aux_layer", "aspp_channels", "aspp_rates",
                  "low_level_channels", "decoder_channels", "aux_channels", "dropout", "backbone"],
    ScoreConfig: ["features", "temperature", "sigma", "pixels_per_class", "shrinkage", "mahalanobis_images",
                  "sml_min_pixels", "val_pixels_per_image", "target_fpr", "batch_size", "seed"],
    TrainConfig: ["epochs", "batch_size", "optimizer", "lr", "backbone_lr_factor", "weight_decay", "momentum", "schedule",
                  "warmup_steps", "aux_weight", "class_weighting", "class_weight_images", "patience", "freeze",
                  "max_train_images", "eval_size", "seed", "augment"],
    RoadConfig: ["model", "train", "scores", "score", "image_quantile"],
    MotionConfig: ["size", "backbone", "layers", "gap", "pool", "position_weight", "flow_weight", "flow_step",
                   "max_shift", "foreground_threshold", "coreset_ratio", "train_step", "k", "map_sigma", "batch_size",
                   "seed", "sigma", "normalization", "threshold_quantile", "holdout_fraction"],
    AutoencoderConfig: ["size", "encoder", "latent_layer", "feature_layers", "train_loss", "pixel_error", "pixel_weight",
                        "feature_weights", "tta", "power_transform", "epochs", "train_step", "batch_size", "lr",
                        "decoder_width", "seed", "sigma", "normalization", "threshold_quantile", "holdout_fraction"],
}


def _added(cls) -> dict:
    return getattr(cls, "ADDED_FIELDS", {})


@pytest.mark.parametrize("cls", list(FORMAT2_FIELDS), ids=lambda c: c.__name__)
def test_every_field_is_a_format_2_field_or_listed_as_added(cls):
    names = [f.name for f in fields(cls)]
    added = _added(cls)
    assert not set(added) & set(FORMAT2_FIELDS[cls]), "a format-2 field cannot be 'added'"
    assert set(names) == set(FORMAT2_FIELDS[cls]) | set(added), (
        f"{cls.__name__}: fields added without an ADDED_FIELDS entry would make older model.json files unreadable")


@pytest.mark.parametrize("cls", [c for c in FORMAT2_FIELDS if _added(c)], ids=lambda c: c.__name__)
def test_added_fields_hold_their_defaults_so_a_new_model_is_made_as_before(cls):
    config = cls()
    assert {k: getattr(config, k) for k in _added(cls)} == _added(cls)


def _older(values: dict, cls) -> dict:
    """A saved config mapping as an older oddspot wrote it: without the fields added since (nested too)."""
    hints = {f.name: f.type for f in fields(cls)}
    out = {}
    for key, value in values.items():
        if key in _added(cls):
            continue
        nested = {"model": ModelConfig, "train": TrainConfig, "scores": ScoreConfig, "augment": AugmentConfig}.get(key)
        out[key] = _older(value, nested) if nested is not None and isinstance(value, dict) and nested.__name__ in str(hints[key]) else value
    return out


def test_an_older_road_config_reads_complete_and_another_missing_field_is_still_refused():
    saved = json.loads(json.dumps(asdict(RoadConfig())))
    older = _older(saved, RoadConfig)
    assert "rotate" not in older["train"]["augment"] and "heat_kl_sigma" not in older["scores"]
    read = from_mapping(RoadConfig, older, "model.json: config", complete=True)
    assert json.loads(json.dumps(asdict(read))) == saved
    del older["scores"]["sigma"]
    with pytest.raises(OddspotError, match="sigma missing"):
        from_mapping(RoadConfig, older, "model.json: config", complete=True)


def test_an_older_patchcore_model_json_loads_and_scores_the_same(tmp_path, small_options):
    from oddspot.data.demo_dataset import texture_photo
    from oddspot.detectors import PatchCore
    from oddspot.runs.registry import load_model

    photo = texture_photo("brick")
    images = [np.ascontiguousarray(photo[y:y + 64, 40:104]) for y in range(0, 320, 40)]
    model = PatchCore(**small_options)
    model.fit(images[:6])
    model.save(tmp_path / "run")
    meta_path = tmp_path / "run" / "model.json"
    meta = json.loads(meta_path.read_text())
    for key in PatchCoreConfig.ADDED_FIELDS:
        del meta["config"][key]
    meta_path.write_text(json.dumps(meta))
    loaded = load_model(tmp_path / "run", "inspect")
    assert loaded.config == model.config
    np.testing.assert_array_equal(loaded.predict(images[6:]).scores, model.predict(images[6:]).scores)
