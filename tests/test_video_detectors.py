"""Both video detectors on tiny synthetic videos: behaviour, persistence, configuration errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oddspot.data.synthetic_video import generate_video_dataset
from oddspot.errors import OddspotError
from oddspot.video.autoencoder import AutoencoderConfig, FrameAutoencoder
from oddspot.video.base import load_detector
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


def test_motion_scores_maps_and_roundtrip(tmp_path, tiny, motion):
    video = tiny[1][0]
    res = motion.score_video(video, with_maps=True)
    assert res.raw.shape == (len(video),) and res.scores.shape == (len(video),)
    assert res.maps.shape == (len(video), *SIZE)
    assert np.all(np.isfinite(res.scores))
    motion.save(tmp_path / "m")
    loaded = load_detector(tmp_path / "m")
    assert isinstance(loaded, MotionDetector)
    again = loaded.score_video(video)
    np.testing.assert_allclose(again.scores, res.scores, rtol=1e-5, atol=1e-5)
    assert loaded.post.mean == motion.post.mean


def test_autoencoder_tta_and_roundtrip(tmp_path, tiny, autoencoder):
    video = tiny[1][0]
    res = autoencoder.score_video(video, with_maps=True)
    assert res.maps.shape == (len(video), *SIZE) and np.all(np.isfinite(res.scores))
    autoencoder.save(tmp_path / "ae")
    loaded = load_detector(tmp_path / "ae")
    np.testing.assert_allclose(loaded.score_video(video).scores, res.scores, rtol=1e-4, atol=1e-4)
    # TTA maps: the average over the four views of maps brought back to the frame
    frames = np.asarray(video.frames(SIZE))[:4]
    loaded.config.tta = ("identity", "hflip", "vflip", "rot180")
    tta = loaded.component_maps(frames)["pixel"]
    per_view = []
    for view in loaded.config.tta:
        loaded.config.tta = (view,)
        per_view.append(loaded.component_maps(frames)["pixel"])
    np.testing.assert_allclose(tta, np.mean(per_view, axis=0), rtol=1e-4, atol=1e-5)


def test_scratch_encoder_with_tta_fits(tiny):
    cfg = AutoencoderConfig(size=SIZE, encoder="scratch", epochs=1, tta=("identity", "hflip", "vflip", "rot180"),
                            train_loss="l1", pixel_error="l1", power_transform=False)
    det = FrameAutoencoder(cfg).fit(tiny[0][:1])
    assert set(det.transforms) == {"pixel", "feature:enc2", "feature:enc3"}
    assert np.all(np.isfinite(det.score_video(tiny[1][0]).scores))


def test_configuration_errors():
    with pytest.raises(OddspotError, match="unknown"):
        AutoencoderConfig.from_dict({"pixel_wieght": 1.0})
    with pytest.raises(OddspotError, match="one weight per layer"):
        AutoencoderConfig(feature_weights=(1.0,))
    with pytest.raises(OddspotError, match="coreset_ratio"):
        MotionConfig(coreset_ratio=0.0)
    with pytest.raises(OddspotError, match="model.json"):
        load_detector("/nonexistent/run")


def test_autoencoder_is_reproducible_for_a_seed(tiny):
    torch.manual_seed(123)  # the global RNG state must not matter
    a = FrameAutoencoder(AutoencoderConfig(size=SIZE, epochs=1, seed=5)).fit(tiny[0][:1])
    torch.rand(10)
    b = FrameAutoencoder(AutoencoderConfig(size=SIZE, epochs=1, seed=5)).fit(tiny[0][:1])
    video = tiny[1][0]
    np.testing.assert_allclose(a.score_video(video).raw, b.score_video(video).raw, rtol=1e-5, atol=1e-6)
