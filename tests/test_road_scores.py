"""Pixel anomaly scores: pure functions against numpy, fitted scores fitted only on what `fit` saw."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oddspot.errors import OddspotError
from oddspot.imaging import gaussian_blur
from oddspot.road.scores import Fusion, Mahalanobis, StandardizedMaxLogit, energy, entropy, max_logit, msp
from oddspot.road.thresholds import choose_threshold, threshold_sensitivity

RNG = np.random.default_rng(0)
LOGITS = (RNG.standard_normal((2, 5, 6, 7)) * 3).astype(np.float64)


pytestmark = pytest.mark.usefixtures("one_thread")


def _softmax(x):
    e = np.exp(x - x.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def test_pure_scores_match_numpy():
    p = _softmax(LOGITS)
    np.testing.assert_allclose(msp(LOGITS), 1 - p.max(1), rtol=1e-12)
    np.testing.assert_allclose(max_logit(LOGITS), -LOGITS.max(1), rtol=1e-12)
    for t in (1.0, 2.5):
        m = LOGITS.max(1, keepdims=True)
        ref = -t * (np.log(np.exp((LOGITS - m) / t).sum(1)) + m[:, 0] / t)
        np.testing.assert_allclose(energy(LOGITS, temperature=t), ref, rtol=1e-12)
    np.testing.assert_allclose(entropy(LOGITS), -(p * np.log(p)).sum(1), rtol=1e-10)
    out = max_logit(torch.from_numpy(LOGITS.astype(np.float32)))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 6, 7)
    np.testing.assert_allclose(entropy(LOGITS[0], dim=0), -(p[0] * np.log(p[0])).sum(0), rtol=1e-10)
    with pytest.raises(OddspotError):
        energy(LOGITS, temperature=0)


def test_larger_means_more_anomalous():
    confident = np.array([[10.0, 0, 0]]).reshape(1, 3, 1, 1)
    flat = np.zeros((1, 3, 1, 1))
    for fn in (msp, max_logit, energy, entropy):
        assert fn(flat).item() > fn(confident).item(), fn.__name__


def test_sml_matches_numpy_and_only_uses_fit_data():
    sml = StandardizedMaxLogit(5, min_pixels=1)
    fit_logits = torch.from_numpy(LOGITS)
    sml.partial_fit(fit_logits[:1])
    sml.partial_fit(fit_logits[1:])
    sml.finalize()
    ml, pred = LOGITS.max(1).ravel(), LOGITS.argmax(1).ravel()
    for c in range(5):
        sel = pred == c
        if sel.sum():
            assert sml.mean[c].item() == pytest.approx(ml[sel].mean(), rel=1e-5)
            assert sml.std[c].item() == pytest.approx(ml[sel].std(), rel=1e-4, abs=1e-5)
    before = (sml.mean.clone(), sml.std.clone())
    other = torch.from_numpy(RNG.standard_normal((3, 5, 4, 4)) * 10 + 50)
    s = sml(other)
    assert torch.equal(sml.mean, before[0]) and torch.equal(sml.std, before[1])
    # a pixel's score does not depend on the batch it is scored in
    torch.testing.assert_close(sml(other[:1]), s[:1])
    om, op = other.max(1)
    ref = -(om - before[0].double()[op]) / before[1].double()[op]
    torch.testing.assert_close(s, ref, rtol=1e-5, atol=1e-5)
    back = StandardizedMaxLogit.fitted(sml.mean.clone(), sml.std.clone(), 1, sml.counts, sml.fallback_classes)
    assert torch.equal(back(other), s)


def test_sml_rare_class_falls_back_and_unfitted_errors():
    logits = torch.zeros(1, 3, 10, 10)
    logits[:, 0] = torch.linspace(0, 1, 100).view(10, 10)
    logits[0, 1, 0, 0] = 5.0
    sml = StandardizedMaxLogit(3, min_pixels=5)
    with pytest.raises(OddspotError, match="not fitted"):
        sml(logits)
    sml.partial_fit(logits)
    sml.finalize()
    assert sml.fallback_classes == [1, 2]
    assert sml.counts == [99, 1, 0]


def _features(n=2, d=4, h=6, w=8, seed=1):
    r = np.random.default_rng(seed)
    labels = r.integers(0, 3, (n, h, w))
    feats = r.standard_normal((n, d, h, w)) + labels[:, None] * np.arange(1, d + 1)[None, :, None, None]
    return torch.from_numpy(feats.astype(np.float32)), torch.from_numpy(labels)


def test_mahalanobis_matches_numpy_tied_covariance():
    feats, labels = _features()
    labels[0, 0, 0] = 255
    m = Mahalanobis(3, pixels_per_class=10_000, shrinkage=0.0)
    m.partial_fit(feats, labels)
    m.finalize()
    x = feats.permute(0, 2, 3, 1).reshape(-1, 4).double().numpy()
    y = labels.reshape(-1).numpy()
    keep = y != 255
    x, y = x[keep], y[keep]
    mus = np.stack([x[y == c].mean(0) for c in range(3)])
    cov = sum(((x[y == c] - mus[c]).T @ (x[y == c] - mus[c])) for c in range(3)) / len(x)
    np.testing.assert_allclose(m.means.numpy(), mus, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(m.precision.numpy(), np.linalg.inv(cov), rtol=1e-3, atol=1e-4)
    test, _ = _features(n=1, seed=7)
    q = test.permute(0, 2, 3, 1).reshape(-1, 4).double().numpy()
    prec = np.linalg.inv(cov)
    d2 = np.stack([np.einsum("ij,jk,ik->i", q - mus[c], prec, q - mus[c]) for c in range(3)], 1)
    np.testing.assert_allclose(m(test).reshape(-1).numpy(), np.sqrt(d2.min(1)), rtol=1e-3, atol=1e-3)
    assert m(test, size=(12, 16)).shape == (1, 12, 16)


def test_mahalanobis_subsampling_is_seeded_and_fit_only():
    feats, labels = _features(n=3, h=10, w=10)

    def fit(seed):
        m = Mahalanobis(3, pixels_per_class=5, seed=seed)
        m.partial_fit(feats, labels)
        return m.finalize()

    a, b, c = fit(0), fit(0), fit(1)
    assert a.counts == [15, 15, 15]
    torch.testing.assert_close(a.means, b.means)
    assert not torch.allclose(a.means, c.means)
    test, _ = _features(n=2, seed=9)
    before = a.means.clone()
    s = a(test)
    assert torch.equal(a.means, before)
    torch.testing.assert_close(a(test[1:]), s[1:])
    back = Mahalanobis.fitted(3, a.means.clone(), a.precision.clone(), a.counts)
    assert torch.equal(back(test), s)


def test_fusion_normalisation_weights_and_smoothing():
    r = np.random.default_rng(2)
    comps = np.c_[r.normal(3, 2, 500), r.normal(-1, 0.5, 500)]
    f = Fusion(temperature=1.0, sigma=0.0).fit(comps)
    np.testing.assert_allclose(f.mean, comps.mean(0))
    np.testing.assert_allclose(f.std, comps.std(0))
    assert f.weights == [1.0, 1.0] and "equal" in f.weight_source
    # with anomalous validation pixels the weights are learned: the informative component dominates
    y = np.zeros(500, bool)
    y[:50] = True
    comps2 = comps.copy()
    comps2[:50, 1] += 3.0
    g = Fusion(sigma=0.0).fit(comps2, y)
    assert g.weights[1] > 3 * abs(g.weights[0]) and "logistic" in g.weight_source
    np.testing.assert_allclose(g.mean, comps2[~y].mean(0))
    logits = torch.from_numpy(LOGITS[:, :, :, :]).float()
    dist = torch.rand(2, 6, 7)
    out = f(logits, dist)
    e = energy(logits)
    ref = (e - f.mean[0]) / f.std[0] + (dist - f.mean[1]) / f.std[1]
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    back = Fusion.fitted(f.temperature, f.sigma, f.mean, f.std, f.weights, f.weight_source, f.n_fit)
    assert torch.equal(back(logits, dist), out)
    # smoothing is linear and a constant map stays constant
    smooth = Fusion(sigma=1.5).fit(comps)
    torch.testing.assert_close(gaussian_blur(torch.full((1, 9, 9), 2.0), 1.5), torch.full((1, 9, 9), 2.0))
    sm = smooth(logits, dist)
    assert sm.shape == (2, 6, 7) and sm.std() < ((e - e.mean()) / e.std() + (dist - dist.mean()) / dist.std()).std()


def test_thresholds_and_sensitivity():
    r = np.random.default_rng(4)
    neg = r.normal(0, 1, 10_000)
    t = choose_threshold(neg, None, target_fpr=0.05)
    assert (neg >= t["threshold"]).mean() == pytest.approx(0.05, abs=2e-4)
    assert t["n_anomalous"] == 0 and "fpr" in t["rule"]
    s = np.r_[neg[:200], r.normal(2, 1, 50)]
    y = np.r_[np.zeros(200, bool), np.ones(50, bool)]
    t2 = choose_threshold(s, y)
    best = max((2 * ((s >= v) & y).sum() / ((s >= v).sum() + y.sum()), v) for v in s)
    assert t2["validation_f1"] == pytest.approx(best[0]) and t2["threshold"] == pytest.approx(best[1])

    class Fake:
        def at_threshold(self, th):
            flagged = s >= th
            tp = (flagged & y).sum()
            return {"precision": tp / max(flagged.sum(), 1), "recall": tp / y.sum(), "f1": 2 * tp / (flagged.sum() + y.sum())}

    rows = threshold_sensitivity(Fake(), t2["threshold"], 0.5, offsets=(-1, 0, 1))
    assert [r_["threshold"] for r_ in rows] == pytest.approx([t2["threshold"] - 0.5, t2["threshold"], t2["threshold"] + 0.5])
    assert rows[0]["recall"] >= rows[1]["recall"] >= rows[2]["recall"]
    assert rows[1]["f1"] == pytest.approx(best[0])
