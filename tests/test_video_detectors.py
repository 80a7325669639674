"""Both video models on tiny synthetic videos: behaviour, predictions, the run contract, configuration errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file

from oddspot.configs import from_mapping
from oddspot.data.synthetic_video import generate_video_dataset
from oddspot.errors import OddspotError
from oddspot.runs.contract import TENSORS_FILE, load_record, save_record
from oddspot.runs.prediction import Prediction
from oddspot.runs.registry import build_model, load_model
from oddspot.video.autoencoder import AutoencoderConfig, FrameAutoencoder
from oddspot.video.datasets import open_video_dataset
from oddspot.video.motion import MotionConfig, MotionDetector, block_flow, temporal_stacks

SIZE = (48, 64)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    torch.set_num_threads(min(2, torch.get_num_threads()))
    root = tmp_path_factory.mktemp("video")
    generate_video_dataset(root, seed=1, num_train=2, num_test=1, num_frames=64, size=SIZE)
    return open_video_dataset(root, "train"), open_video_dataset(root, "test")


@pytest.fixture(scope="module")
def motion(tiny):
    return MotionDetector(MotionConfig(size=SIZE, coreset_ratio=0.25, sigma=1.0)).fit(tiny[0])


@pytest.fixture(scope="module")
def autoencoder(tiny):
    return FrameAutoencoder(AutoencoderConfig(size=SIZE, epochs=2, sigma=1.0)).fit(tiny[0])


@pytest.fixture(scope="module")
def models(motion, autoencoder):
    return {"motion": motion, "autoencoder": autoencoder}


def test_block_flow_finds_the_displacement():
    frames = np.zeros((3, 32, 48), np.float32)
    for k, x in enumerate((10, 14, 18)):  # a bright block moving right by 4 px per step
        frames[k, 8:20, x : x + 8] = 200.0
    trio = tuple(torch.from_numpy(frames[k : k + 1]) for k in range(3))
    fg = trio[2] > 100
    flow = block_flow(trio, fg, (4, 6), (1, 6))
    moving = flow[0][flow[0].abs().sum(-1) > 0]
    assert moving.shape[0] > 0 and torch.all(moving[:, 1] == 4) and torch.all(moving[:, 0] == 0)


def test_temporal_stack_orders_past_to_present():
    frames = np.zeros((6, 4, 4, 3), np.uint8)
    for t in range(6):
        frames[t] = 10 * t
    stacks = temporal_stacks(frames, gap=2)
    assert stacks.shape == (6, 4, 4, 3)
    np.testing.assert_array_equal(stacks[5, 0, 0], [10, 30, 50])
    np.testing.assert_array_equal(stacks[1, 0, 0], [0, 0, 10])  # clamped at the first frame


def test_motion_sees_reversed_time_the_autoencoder_does_not(tiny, motion, autoencoder):
    frames = np.asarray(tiny[0][0].frames(SIZE))
    fwd_m, _ = motion._score_frames(frames)
    rev_m, _ = motion._score_frames(frames[::-1].copy())
    # played backwards every pedestrian walks the wrong way: the motion detector notices
    assert np.median(rev_m[8:]) > np.median(fwd_m[8:]) * 1.2
    fwd_a, _ = autoencoder._score_frames(frames)
    rev_a, _ = autoencoder._score_frames(frames[::-1].copy())
    # a frame-wise model gives every frame the same score whatever the order
    np.testing.assert_allclose(rev_a[::-1], fwd_a, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["motion", "autoencoder"])
def test_predict_returns_scores_normalized_decisions_and_maps(tiny, models, kind):
    model, video = models[kind], tiny[1][0]
    [p] = model.predict([video], with_maps=True)
    assert isinstance(p, Prediction) and p.name == video.video_id
    n = len(video)
    assert p.scores.shape == (n,) and p.normalized.shape == (n,) and np.all(np.isfinite(p.normalized))
    assert len(p.maps) == n and p.maps[0].shape == SIZE
    # decisions are the normalized scores against the threshold fitted on held-out training frames
    assert model.post.threshold_quantile == 0.995 and model.post.threshold is not None
    np.testing.assert_array_equal(p.decisions, p.normalized >= model.post.threshold)
    assert p.decisions.dtype == bool
    legacy = model.predict([video], protocol="legacy_minmax_per_video")[0]
    assert legacy.decisions is None and legacy.normalized.min() == 0.0 and legacy.normalized.max() == 1.0
    with pytest.raises(OddspotError, match="list of videos"):
        model.predict(video)
    with pytest.raises(OddspotError, match="protocol"):
        model.predict([video], protocol="minmax")


@pytest.mark.parametrize("kind", ["motion", "autoencoder"])
def test_save_load_gives_bit_identical_predictions(tmp_path, tiny, models, kind):
    model, video = models[kind], tiny[1][0]
    before = model.predict([video])[0]
    model.save(tmp_path / kind)
    assert sorted(p.name for p in (tmp_path / kind).iterdir()) == ["model.json", "model.safetensors"]
    meta = json.loads((tmp_path / kind / "model.json").read_text())
    assert meta["task"] == "video" and meta["kind"] == kind and meta["format_version"] == 2
    assert meta["postprocess"]["threshold"] == model.post.threshold
    assert meta["state"]["fit_info"]["train_videos"] == ["01", "02"]
    for loaded in (load_model(tmp_path / kind, task="video"), type(model).load(tmp_path / kind)):
        after = loaded.predict([video])[0]
        np.testing.assert_array_equal(after.scores, before.scores)
        np.testing.assert_array_equal(after.normalized, before.normalized)
        np.testing.assert_array_equal(after.decisions, before.decisions)


def test_tampered_tensor_file_is_refused(tmp_path, motion):
    motion.save(tmp_path / "m")
    path = tmp_path / "m" / TENSORS_FILE
    tensors = load_file(str(path))
    tensors["bank"] = tensors["bank"] * 2
    save_file(tensors, str(path))
    with pytest.raises(OddspotError, match="sha256") as err:
        load_model(tmp_path / "m")
    assert "\n" not in str(err.value)


def _resave(folder, change) -> None:
    """Rewrite a saved model through the contract after `change(record)`: hashes valid, content wrong."""
    record = load_record(folder)
    change(record)
    save_record(folder, record)


def test_wrong_tensors_and_postprocess_are_refused_on_load(tmp_path, motion, autoencoder):
    motion.save(tmp_path / "m")
    _resave(tmp_path / "m", lambda r: r.tensors.update(bank=r.tensors["bank"][:, :-1]))
    with pytest.raises(OddspotError, match="'bank' has shape"):
        load_model(tmp_path / "m")
    motion.save(tmp_path / "m")
    _resave(tmp_path / "m", lambda r: r.tensors.update(extra=np.zeros(2, np.float32)))
    with pytest.raises(OddspotError, match="unexpected tensor 'extra'"):
        load_model(tmp_path / "m")
    motion.save(tmp_path / "m")
    _resave(tmp_path / "m", lambda r: r.tensors.update(background=r.tensors["background"].astype(np.float64)))
    with pytest.raises(OddspotError, match="'background' is float64"):
        load_model(tmp_path / "m")
    motion.save(tmp_path / "m")
    _resave(tmp_path / "m", lambda r: r.postprocess.update(threshold="high"))
    with pytest.raises(OddspotError, match="postprocess: threshold"):
        load_model(tmp_path / "m")
    motion.save(tmp_path / "m")
    _resave(tmp_path / "m", lambda r: r.postprocess.pop("std"))
    with pytest.raises(OddspotError, match="field std missing"):
        load_model(tmp_path / "m")
    autoencoder.save(tmp_path / "a")
    _resave(tmp_path / "a", lambda r: r.tensors.pop("decoder.net.0.weight"))
    with pytest.raises(OddspotError, match="decoder.net.0.weight' missing"):
        load_model(tmp_path / "a")
    autoencoder.save(tmp_path / "a")
    _resave(tmp_path / "a", lambda r: r.state["transforms"].pop("pixel"))
    with pytest.raises(OddspotError, match="transforms must hold"):
        load_model(tmp_path / "a")


def test_autoencoder_tta_maps_average_the_views(tiny, autoencoder):
    frames = np.asarray(tiny[1][0].frames(SIZE))[:4]
    model = FrameAutoencoder(AutoencoderConfig(size=SIZE, epochs=2, sigma=1.0))
    model.decoder.load_state_dict(autoencoder.decoder.state_dict())
    model.decoder.eval()
    model.config.tta = ("identity", "hflip", "vflip", "rot180")
    tta = model.component_maps(frames)["pixel"]
    per_view = []
    for view in ("identity", "hflip", "vflip", "rot180"):
        model.config.tta = (view,)
        per_view.append(model.component_maps(frames)["pixel"])
    np.testing.assert_allclose(tta, np.mean(per_view, axis=0), rtol=1e-4, atol=1e-5)


def test_scratch_encoder_with_tta_fits(tiny):
    cfg = AutoencoderConfig(size=SIZE, encoder="scratch", epochs=1, tta=("identity", "hflip", "vflip", "rot180"),
                            train_loss="l1", pixel_error="l1", power_transform=False)
    det = FrameAutoencoder(cfg).fit(tiny[0][:1])
    assert set(det.transforms) == {"pixel", "feature:enc2", "feature:enc3"}
    assert np.all(np.isfinite(det.predict([tiny[1][0]])[0].normalized))


def test_configuration_errors():
    with pytest.raises(OddspotError, match="unknown option.*pixel_wieght"):
        from_mapping(AutoencoderConfig, {"pixel_wieght": 1.0}, "ae.yaml")
    with pytest.raises(OddspotError, match="ae.yaml: epochs: expected an integer"):
        from_mapping(AutoencoderConfig, {"epochs": "10"}, "ae.yaml")
    with pytest.raises(OddspotError, match="one weight per layer"):
        AutoencoderConfig(feature_weights=(1.0,))
    with pytest.raises(OddspotError, match="coreset_ratio"):
        MotionConfig(coreset_ratio=0.0)
    with pytest.raises(OddspotError, match="threshold_quantile"):
        MotionConfig(threshold_quantile=1.0)
    with pytest.raises(OddspotError, match="holdout_fraction"):
        AutoencoderConfig(holdout_fraction=0.0)
    with pytest.raises(OddspotError, match="lr"):
        AutoencoderConfig(lr=-1.0)
    with pytest.raises(OddspotError, match="size"):
        MotionConfig(size=(4, 64))
    with pytest.raises(OddspotError, match="motion options: unknown option"):
        build_model("video", "motion", {"coreset": 0.1})
    with pytest.raises(OddspotError, match="no such run folder"):
        load_model("/nonexistent/run")
    with pytest.raises(OddspotError, match="not fitted"):
        MotionDetector(size=SIZE).save("/nonexistent/never-written")


def test_autoencoder_is_reproducible_for_a_seed(tiny):
    torch.manual_seed(123)  # the global RNG state must not matter
    a = FrameAutoencoder(AutoencoderConfig(size=SIZE, epochs=1, seed=5)).fit(tiny[0][:1])
    torch.rand(10)
    b = FrameAutoencoder(AutoencoderConfig(size=SIZE, epochs=1, seed=5)).fit(tiny[0][:1])
    video = tiny[1][0]
    np.testing.assert_allclose(a.predict([video])[0].scores, b.predict([video])[0].scores, rtol=1e-5, atol=1e-6)
