"""Video model folders written by oddspot 0.1 (format 1): refused with the `oddspot upgrade` hint, and
converted by `oddspot.runs.upgrade.upgrade` into models whose raw and normalized scores are bit-identical."""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save as safetensors_bytes

from oddspot.data.synthetic_video import generate_video_dataset
from oddspot.errors import OddspotError
from oddspot.runs.registry import load_model
from oddspot.runs.upgrade import upgrade
from oddspot.video.autoencoder import FrameAutoencoder
from oddspot.video.base import VideoDetector
from oddspot.video.datasets import open_video_dataset
from oddspot.video.motion import MotionDetector

SIZE = (48, 64)


def write_v1_folder(model: VideoDetector, folder: Path) -> None:
    """Write `model` exactly as oddspot 0.1 saved a video model: model.json (format 1) + weights.safetensors."""
    config = asdict(model.config)
    del config["threshold_quantile"]  # 0.1 had no decision threshold
    meta = {
        "format_version": 1,
        "oddspot_version": "0.1.0",
        "kind": model.kind,
        "config": config,
        "postprocess": {k: getattr(model.post, k) for k in ("sigma", "normalization", "mean", "std", "fitted")},
        "state": model._state(),
        "fit_info": {**model.fit_info, "skipped_videos": []},
    }
    tensors = {k: torch.as_tensor(v).detach().cpu().contiguous() for k, v in model._tensors().items()}
    folder.mkdir(parents=True)
    (folder / "weights.safetensors").write_bytes(safetensors_bytes(tensors))
    (folder / "model.json").write_text(json.dumps(meta, indent=2) + "\n")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    root = tmp_path_factory.mktemp("video_v1")
    generate_video_dataset(root, seed=4, num_train=1, num_test=1, num_frames=64, size=SIZE)
    return open_video_dataset(root, "train"), open_video_dataset(root, "test")


@pytest.mark.parametrize("kind", ["motion", "autoencoder"])
def test_v1_folder_is_refused_then_upgraded_bit_identically(tmp_path, tiny, kind):
    train, test = tiny
    model = MotionDetector(size=SIZE, coreset_ratio=0.25) if kind == "motion" else FrameAutoencoder(size=SIZE, epochs=1)
    model.fit(train)
    original = model.predict(test)[0]
    folder = tmp_path / "run"
    write_v1_folder(model, folder)
    with pytest.raises(OddspotError, match=r"format 1\); convert it with `oddspot upgrade") as err:
        load_model(folder, task="video")
    assert "\n" not in str(err.value)

    upgrade(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors"]
    meta = json.loads((folder / "model.json").read_text())
    assert meta["format_version"] == 2 and meta["task"] == "video" and meta["kind"] == kind
    assert meta["postprocess"]["threshold"] is None and "refit" in meta["state"]["fit_info"]["upgraded_from"]
    upgraded = load_model(folder, task="video").predict(test)[0]
    np.testing.assert_array_equal(upgraded.scores, original.scores)
    np.testing.assert_array_equal(upgraded.normalized, original.normalized)
    assert upgraded.decisions is None  # a 0.1 model has no threshold; none is made up


def test_damaged_v1_folder_is_not_written_over(tmp_path, tiny):
    model = MotionDetector(size=SIZE, coreset_ratio=0.25).fit(tiny[0])
    folder = tmp_path / "run"
    write_v1_folder(model, folder)
    (folder / "weights.safetensors").unlink()
    with pytest.raises(OddspotError, match="weights.safetensors: not found"):
        upgrade(folder)
    meta = json.loads((folder / "model.json").read_text())
    meta["config"]["gap"] = 0
    (folder / "weights.safetensors").write_bytes(safetensors_bytes({"bank": torch.zeros(2, 3)}))
    (folder / "model.json").write_text(json.dumps(meta))
    with pytest.raises(OddspotError, match="gap"):
        upgrade(folder)
    assert json.loads((folder / "model.json").read_text())["format_version"] == 1
