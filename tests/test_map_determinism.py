"""An image's anomaly map is as independent of its batch as its score: bit-identical alone, or at any
position of a full batch of other images (issue: maps once differed by ~3e-5 with their position)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oddspot.data.demo_dataset import build_demo_dataset
from oddspot.data.mvtec import read_mvtec
from oddspot.detectors import Cascade, PaDiM, PatchCore
from oddspot.neighbors import KNNIndex
from oddspot.imaging import gaussian_blur

BATCH = 8
OPTIONS = {"image_size": 128, "batch_size": BATCH}  # big enough for faiss to use matrix products


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    root = build_demo_dataset(tmp_path_factory.mktemp("maps"), ("brick",), n_train=8, n_test_good=4, n_test_bad=5,
                              tile=80, seed=3)
    refs = read_mvtec(root, "brick")
    return [r.load().image for r in refs["train"]], [r.load().image for r in refs["test"]]


@pytest.fixture(scope="module")
def two_threads():
    """Several threads: the batched kernels that made maps depend on their batch split work by thread."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=["patchcore", "padim", "cascade"])
def model(request, images, two_threads):
    train, test = images
    if request.param == "patchcore":
        return PatchCore(coreset_ratio=0.25, **OPTIONS).fit(train)
    if request.param == "padim":
        return PaDiM(n_features=24, **OPTIONS).fit(train)
    cascade = Cascade(gate_options={"image_size": 64, "batch_size": BATCH, "coreset_ratio": 0.25},
                      localizer_options={"coreset_ratio": 0.25, **OPTIONS}).fit(train)
    cascade.fit_gate(test, np.array([0] * 4 + [1] * 5))
    return cascade


def test_a_map_does_not_depend_on_its_batch_or_position(model, images):
    test = images[1]
    for i in (0, len(test) - 1):
        image, alone = test[i], model.predict([test[i]])
        others = [x for j, x in enumerate(test) if j != i][: BATCH - 1]
        for pos in range(BATCH):
            pred = model.predict(others[:pos] + [image] + others[pos:])
            assert pred.scores[pos] == alone.scores[0], (i, pos)
            np.testing.assert_array_equal(pred.maps[pos], alone.maps[0], err_msg=f"image {i} at position {pos}")


def test_knn_neighbours_of_a_query_do_not_depend_on_the_other_queries():
    rng = np.random.default_rng(0)
    bank = rng.standard_normal((500, 64)).astype(np.float32)
    queries = bank[rng.integers(0, 500, 2000)] + 0.3 * rng.standard_normal((2000, 64)).astype(np.float32)
    index = KNNIndex(bank)
    dist, idx = index.search(queries, 2)  # 2000 queries: faiss uses matrix products, one query alone does not
    for q in range(0, 2000, 97):
        d1, i1 = index.search(queries[q:q + 1], 2)
        assert np.array_equal(d1[0], dist[q]) and np.array_equal(i1[0], idx[q])
    exact = np.sqrt(((queries[:, None].astype(np.float64) - bank[None]) ** 2).sum(-1))
    np.testing.assert_allclose(dist, np.sort(exact, axis=1)[:, :2], rtol=1e-6)


def test_blur_of_a_map_does_not_depend_on_the_maps_it_is_passed_with():
    maps = torch.from_numpy(np.random.default_rng(1).random((9, 40, 56), np.float32))
    together = gaussian_blur(maps, 3.0)
    for i in range(9):
        assert torch.equal(gaussian_blur(maps[i:i + 1], 3.0)[0], together[i])
