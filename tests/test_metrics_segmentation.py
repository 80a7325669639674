"""Streamed confusion matrix and mIoU against scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix, jaccard_score

from oddspot.errors import OddspotError
from oddspot.metrics import ConfusionMatrix, UndefinedMetricWarning


def test_streamed_matrix_iou_and_ignore_index_match_sklearn():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 5, (6, 20, 30))
    pred = np.where(rng.random(target.shape) < 0.7, target, rng.integers(0, 5, target.shape))
    target[rng.random(target.shape) < 0.1] = 255
    cm = ConfusionMatrix(num_classes=6, ignore_index=255)
    for p, t in zip(pred, target):
        cm.update(p, t)
    r = cm.compute()
    keep = target != 255
    ref = confusion_matrix(target[keep], pred[keep], labels=range(6))
    assert np.array_equal(np.asarray(r["matrix"]), ref)
    iou = jaccard_score(target[keep], pred[keep], labels=range(5), average=None)
    assert np.allclose(r["iou"][:5], iou)
    assert np.isnan(r["iou"][5])  # class 5 never appears: absent, not zero
    assert r["miou"] == pytest.approx(iou.mean())
    assert r["pixel_accuracy"] == pytest.approx((pred[keep] == target[keep]).mean())
    assert r["n_pixels"] == keep.sum()


def test_torch_inputs_and_bad_classes():
    torch = pytest.importorskip("torch")
    cm = ConfusionMatrix(3)
    cm.update(torch.tensor([[0, 1], [2, 2]]), torch.tensor([[0, 1], [2, 1]]))
    assert cm.compute()["iou"] == pytest.approx([1.0, 0.5, 0.5])
    with pytest.raises(OddspotError, match="class 3 outside 0..2"):
        cm.update(np.array([0, 1]), np.array([0, 3]))
    with pytest.raises(OddspotError, match="pixels"):
        cm.update(np.array([0, 1]), np.array([0, 1, 2]))
    empty = ConfusionMatrix(3)
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(empty.compute()["miou"])
