"""Video maths against plain references: TTA views and their inversion (also inside the autoencoder's
averaged maps), temporal Gaussian smoothing, and the train-statistics standardization and threshold.
Each comparison has a control: a perturbed implementation must fail it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import oddspot.video.autoencoder as autoencoder
import oddspot.video.postprocess as postprocess
from oddspot.video.autoencoder import FrameAutoencoder
from oddspot.video.postprocess import ScorePostprocessor, temporal_smooth
from oddspot.video.tta import VIEWS, apply_view, invert_view

import references as ref

pytestmark = pytest.mark.usefixtures("one_thread")

RNG = np.random.default_rng(0)
EXACT = {"rtol": 1e-12, "atol": 1e-12}  # float64 in both
F32 = {"rtol": 1e-6, "atol": 1e-6}

# --- TTA views ------------------------------------------------------------------------------------


def check_views(apply_fn, invert_fn) -> None:
    """Each view moves pixels as its definition says, and a map seen on a view goes back where it came from."""
    batch = RNG.normal(size=(2, 3, 5, 7))  # N x C x H x W, odd sides so that no pixel is its own mirror
    frame = RNG.integers(0, 256, (5, 7, 3), dtype=np.uint8)  # H x W x 3
    for view in VIEWS:
        expected = np.stack([np.stack([ref.apply_view(ch, view) for ch in img]) for img in batch])
        np.testing.assert_array_equal(apply_fn(batch, view), expected, err_msg=view)
        np.testing.assert_array_equal(apply_fn(torch.from_numpy(batch), view).numpy(), expected, err_msg=view)
        np.testing.assert_array_equal(apply_fn(frame, view, spatial=(0, 1)), ref.apply_view(frame, view), err_msg=view)
        seen = batch[:, 0] ** 2  # any map computed on the view (N x H x W)
        back = np.stack([ref.unview(m, view) for m in seen])
        np.testing.assert_array_equal(invert_fn(seen, view), back, err_msg=view)
        np.testing.assert_array_equal(invert_fn(torch.from_numpy(seen), view).numpy(), back, err_msg=view)


def test_views_and_inversion_match_reference():
    check_views(apply_view, invert_view)


def test_control_inversion_with_swapped_axes_fails():
    swapped = {"hflip": "vflip", "vflip": "hflip"}
    with pytest.raises(AssertionError, match="not equal"):
        check_views(apply_view, lambda x, view, spatial=(-2, -1): invert_view(x, swapped.get(view, view), spatial))


SIZE = (16, 24)


@pytest.fixture(scope="module")
def autoencoders() -> tuple[FrameAutoencoder, FrameAutoencoder]:
    """The same untrained scratch autoencoder (seeded weights) with all four TTA views and with none."""
    models = []
    for views in (VIEWS, ("identity",)):
        model = FrameAutoencoder(size=SIZE, encoder="scratch", tta=views, seed=0)
        model.encoder.eval()
        model.decoder.eval()
        models.append(model)
    for a, b in zip(models[0]._tensors().values(), models[1]._tensors().values()):
        assert torch.equal(a, b)
    return models[0], models[1]


def check_tta_maps(tta: FrameAutoencoder, plain: FrameAutoencoder) -> None:
    """TTA maps = the mean over views of the view-free model's maps on each view, put back in place."""
    frames = RNG.integers(0, 256, (3, *SIZE, 3), dtype=np.uint8)
    got = tta.component_maps(frames)
    per_view = {v: plain.component_maps(np.stack([ref.apply_view(f, v) for f in frames])) for v in VIEWS}
    for c in tta.components:
        expected = np.mean([[ref.unview(m, v) for m in per_view[v][c]] for v in VIEWS], axis=0)
        np.testing.assert_allclose(got[c], expected, **F32, err_msg=c)


def test_autoencoder_tta_maps_average_the_inverted_views(autoencoders):
    check_tta_maps(*autoencoders)


def test_control_autoencoder_without_inversion_fails(autoencoders, monkeypatch):
    monkeypatch.setattr(autoencoder, "invert_view", lambda x, view, spatial=(-2, -1): x)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        check_tta_maps(*autoencoders)


# --- temporal smoothing ---------------------------------------------------------------------------

SERIES = [RNG.normal(size=40), RNG.normal(size=3), np.array([2.0])]


def check_smoothing(fn) -> None:
    for scores in SERIES:
        for sigma in (0.0, 0.5, 1.0, 3.0, 7.3):
            np.testing.assert_allclose(fn(scores, sigma), ref.gaussian_smooth(scores, sigma), **EXACT,
                                       err_msg=f"{scores.size} frames, sigma {sigma}")


def test_temporal_smoothing_matches_reference():
    check_smoothing(temporal_smooth)


def test_control_smoothing_with_mirrored_edges_fails(monkeypatch):
    real = postprocess.gaussian_filter1d
    monkeypatch.setattr(postprocess, "gaussian_filter1d", lambda s, sigma, mode: real(s, sigma, mode="mirror"))
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        check_smoothing(temporal_smooth)


# --- standardization with training statistics, and the decision threshold ------------------------

TRAIN = [RNG.normal(3.0, 2.0, 50), RNG.normal(4.0, 1.0, 30), RNG.normal(3.5, 1.5, 7)]
TEST = [RNG.normal(6.0, 3.0, 25), RNG.normal(3.0, 1.0, 12)]


def check_postprocessor(post: ScorePostprocessor, sigma: float, q: float) -> None:
    mu, std = ref.train_standardization(TRAIN, sigma)
    np.testing.assert_allclose([post.mean, post.std], [mu, std], **EXACT)
    normalized_train = [(v - mu) / std for video in TRAIN for v in ref.gaussian_smooth(video, sigma)]
    threshold = ref.quantile(normalized_train, q)
    np.testing.assert_allclose(post.threshold, threshold, **EXACT)
    for video in TEST:  # each test video alone, with the training statistics only
        expected = (ref.gaussian_smooth(video, sigma) - mu) / std
        out = post(video)
        np.testing.assert_allclose(out, expected, **EXACT)
        np.testing.assert_array_equal(post.decide(out), out >= post.threshold)


@pytest.mark.parametrize(("sigma", "q"), [(0.0, 0.995), (2.0, 0.9), (3.0, 0.5)])
def test_standardization_and_threshold_match_reference(sigma, q):
    check_postprocessor(ScorePostprocessor(sigma=sigma, threshold_quantile=q).fit(TRAIN), sigma, q)


def test_control_standardization_with_sample_std_fails(monkeypatch):
    monkeypatch.setattr(postprocess.Standardizer, "fit",
                        classmethod(lambda cls, v: cls(float(np.mean(v)), float(np.std(v, ddof=1)))))
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        check_postprocessor(ScorePostprocessor(sigma=2.0, threshold_quantile=0.9).fit(TRAIN), 2.0, 0.9)
