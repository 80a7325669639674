"""PatchCore and PaDiM against plain references: kNN mean, top-k, eq. 7, per-position Gaussians,
Mahalanobis maps. Each comparison has a control: a perturbed implementation must fail it.

The detectors run on a tiny seeded convolutional backbone (stride 8 and 16), so the maths under
test is exercised on real patch features in milliseconds; maps are compared unblurred
(blur_sigma 0), against a reference bilinear upsampling of the reference patch grid.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from oddspot.detectors.padim import PaDiM
from oddspot.detectors.patchcore import PatchCore
from oddspot.features import Backbone

import references as ref

pytestmark = pytest.mark.usefixtures("one_thread")

SIZE = 64
F32 = {"rtol": 1e-6, "atol": 1e-6}  # float32 arithmetic in the implementation, float64 in the reference


class TinyNet(nn.Module):
    """Two strided convolutions: 'stage3' at stride 8, 'stage5' at stride 16."""

    def __init__(self) -> None:
        super().__init__()
        self.stage3 = nn.Conv2d(3, 6, 8, stride=8)
        self.stage5 = nn.Conv2d(6, 4, 2, stride=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.stage5(self.stage3(x))


@pytest.fixture(scope="module")
def backbone() -> Backbone:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return Backbone("tiny", TinyNet())


@pytest.fixture(scope="module")
def images() -> tuple[list[np.ndarray], list[np.ndarray]]:
    rng = np.random.default_rng(0)
    train, test = ([rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8) for _ in range(n)] for n in (6, 3))
    return train, test


# --- PatchCore -----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def patchcore(backbone, images) -> PatchCore:
    train, _ = images
    return PatchCore(image_size=SIZE, coreset_ratio=0.25, batch_size=4, blur_sigma=0.0, backbone=backbone).fit(train)


def variant(model: PatchCore, **changes) -> PatchCore:
    """The fitted model's memory bank under other scoring settings."""
    other = PatchCore(replace(model.config, **changes), backbone=model.backbone)
    other.memory_bank = model.memory_bank
    return other


def check_patchcore(model: PatchCore, images: list[np.ndarray], k: int, scoring: str, topk: int = 0, b: int = 0) -> None:
    """Scores and maps of `model` equal the reference for k neighbours and the given image scoring."""
    pred = model.predict(images)
    bank = model.memory_bank.astype(np.float64)
    for i, image in enumerate(images):
        feats = model.patch_features([image])[0]  # the model's own features, h x w x C
        h, w, c = feats.shape
        queries = feats.reshape(-1, c)
        patch = ref.knn_mean(queries, bank, k)
        if scoring == "max":
            expected = patch.max()
        elif scoring == "topk_mean":
            expected = ref.topk_mean(patch, topk)
        else:
            expected = ref.patchcore_reweighted(patch, queries, bank, b)
        np.testing.assert_allclose(pred.scores[i], expected, **F32, err_msg=f"image {i} score")
        np.testing.assert_allclose(pred.maps[i], ref.bilinear_upsample(patch.reshape(h, w), image.shape[:2]), **F32,
                                   err_msg=f"image {i} map")


@pytest.mark.parametrize("k", [1, 3])
def test_patch_scores_are_the_mean_distance_to_k_nearest_entries(patchcore, images, k):
    check_patchcore(variant(patchcore, num_neighbors=k), images[1], k, "max")


def test_control_knn_with_one_neighbour_too_many_fails(patchcore, images):
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        check_patchcore(variant(patchcore, num_neighbors=4), images[1], 3, "max")


@pytest.mark.parametrize("topk", [1, 5, 10_000])
def test_topk_mean_is_the_mean_of_the_largest_patch_scores(patchcore, images, topk):
    check_patchcore(variant(patchcore, scoring="topk_mean", topk=topk), images[1], 1, "topk_mean", topk=topk)


def test_control_topk_with_one_patch_too_many_fails(patchcore, images):
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        check_patchcore(variant(patchcore, scoring="topk_mean", topk=6), images[1], 1, "topk_mean", topk=5)


@pytest.mark.parametrize(("k", "b"), [(1, 1), (1, 4), (3, 4), (1, 1024)])
def test_reweighted_score_is_patchcore_eq7(patchcore, images, k, b):
    model = variant(patchcore, scoring="reweighted", reweight_neighbors=b, num_neighbors=k)
    check_patchcore(model, images[1], k, "reweighted", b=min(b, len(patchcore.memory_bank)))


def test_control_eq7_with_one_neighbour_too_many_fails(patchcore, images):
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        check_patchcore(variant(patchcore, scoring="reweighted", reweight_neighbors=5), images[1], 1, "reweighted", b=4)


def test_reweighting_weight_lies_in_zero_one(patchcore, images):
    """With m* in its own neighbourhood the softmax weight is a probability: 0 <= s <= s*."""
    for k in (1, 3):
        plain = variant(patchcore, num_neighbors=k).predict(images[1], maps=False).scores
        weighted = variant(patchcore, scoring="reweighted", reweight_neighbors=4, num_neighbors=k)
        scores = weighted.predict(images[1], maps=False).scores
        assert np.all(scores >= 0) and np.all(scores <= plain), k


# --- PaDiM ---------------------------------------------------------------------------------------

EPS = 0.01


def padim_features(model: PaDiM, image: np.ndarray) -> np.ndarray:
    """P x d features of one image: the backbone's stride-8 layer at the model's kept channels, row-major positions."""
    bb = model.backbone
    with torch.no_grad():
        x = bb.model.stage3(bb.preprocess_batch([image], model.config.image_size, model.config.batch_size))[0]
    x = x.numpy()[model.channels]
    return x.reshape(x.shape[0], -1).T


@pytest.fixture(scope="module")
def padim(backbone, images) -> PaDiM:
    train, _ = images
    return PaDiM(layers=("stage3",), n_features=4, image_size=SIZE, batch_size=4, blur_sigma=0.0,
                 regularization=EPS, backbone=backbone).fit(train)


@pytest.fixture(scope="module")
def gaussians(padim, images) -> tuple[np.ndarray, np.ndarray]:
    train, _ = images
    return ref.padim_gaussians(np.stack([padim_features(padim, img) for img in train]), EPS)


def check_padim_fit(model: PaDiM, means: np.ndarray, covs: np.ndarray) -> None:
    np.testing.assert_allclose(model.mean, means, **F32)
    precision = np.linalg.inv(covs)
    np.testing.assert_allclose(model.inv_cov, precision, rtol=1e-6, atol=1e-6 * np.abs(precision).max())


def check_padim_maps(model: PaDiM, images: list[np.ndarray], means: np.ndarray, covs: np.ndarray) -> None:
    pred = model.predict(images)
    h, w = model.state["grid"]
    for i, image in enumerate(images):
        grid = ref.mahalanobis_grid(padim_features(model, image), means, covs).reshape(h, w)
        expected = ref.bilinear_upsample(grid, image.shape[:2])
        np.testing.assert_allclose(pred.maps[i], expected, **F32, err_msg=f"image {i} map")
        np.testing.assert_allclose(pred.scores[i], expected.max(), **F32, err_msg=f"image {i} score")


def test_padim_fits_one_gaussian_per_position_with_eps_identity(padim, gaussians):
    assert padim.channels.size == 4 and padim.mean.shape == (64, 4)
    check_padim_fit(padim, *gaussians)


def test_control_padim_without_eps_fails(padim, images, gaussians):
    config = replace(padim.config)
    config.regularization = 0.0  # the perturbed implementation drops "+ eps I"
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        check_padim_fit(PaDiM(config, backbone=padim.backbone).fit(images[0]), *gaussians)


def test_padim_maps_are_mahalanobis_distances(padim, images, gaussians):
    check_padim_maps(padim, images[1], *gaussians)


def test_control_padim_euclidean_map_fails(padim, images, gaussians):
    euclidean = PaDiM(padim.config, backbone=padim.backbone)
    identity = np.broadcast_to(np.eye(4, dtype=np.float32), padim.inv_cov.shape).copy()
    euclidean.set_fitted(padim.mean, identity, padim.channels, padim.state, None)
    with pytest.raises(AssertionError, match="Not equal to tolerance"):
        check_padim_maps(euclidean, images[1], *gaussians)
