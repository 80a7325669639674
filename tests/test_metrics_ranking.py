"""Streaming ranking metrics against scikit-learn: exact values, any chunking, honest bounds."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sklearn.metrics import (
    auc,
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from oddspot.errors import OddspotError
from oddspot.metrics import RANKING_METRICS, BinaryRankingMetrics, UndefinedMetricWarning

TOL = 1e-9


def streetheazards_fpr_at_recall(y_true: np.ndarray, y_score: np.ndarray, recall_level: float = 0.95) -> float:
    """The StreetHazards / anomaly-seg `fpr_and_fdr_at_recall`, copied in its logic."""
    desc = np.argsort(y_score, kind="mergesort")[::-1]
    y_score, y_true = y_score[desc], y_true[desc].astype(np.float64)
    distinct = np.where(np.diff(y_score))[0]
    threshold_idxs = np.r_[distinct, y_true.size - 1]
    tps = np.cumsum(y_true)[threshold_idxs]
    fps = 1 + threshold_idxs - tps
    recall = tps / tps[-1]
    last_ind = tps.searchsorted(tps[-1])
    sl = slice(last_ind, None, -1)
    recall, fps = np.r_[recall[sl], 1], np.r_[fps[sl], 0]
    cutoff = np.argmin(np.abs(recall - recall_level))
    return fps[cutoff] / np.sum(np.logical_not(y_true))


def reference(y: np.ndarray, s: np.ndarray) -> dict[str, float]:
    """Every ranking metric computed in memory with scikit-learn (drop_intermediate=False)."""
    s = s.astype(np.float64)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    precision, recall, _ = precision_recall_curve(y, s)
    with np.errstate(invalid="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))
    return {
        "auroc": roc_auc_score(y, s),
        "ap": average_precision_score(y, s),
        "aupr_trapezoid": auc(recall, precision),
        "fpr95_first": fpr[np.argmax(tpr >= 0.95)],
        "fpr95_nearest": streetheazards_fpr_at_recall(y, s),
        "f1_max": f1.max(),
    }


def feed(metric: BinaryRankingMetrics, s: np.ndarray, y: np.ndarray, cuts: list[int], valid=None) -> None:
    bounds = [0, *sorted(c % (len(s) + 1) for c in cuts), len(s)]
    for a, b in zip(bounds[:-1], bounds[1:]):
        metric.update(s[a:b], y[a:b], None if valid is None else valid[a:b])


@st.composite
def labelled_scores(draw, min_size: int = 2, max_size: int = 300):
    n = draw(st.integers(min_size, max_size))
    kind = draw(st.sampled_from(["ties", "float32", "float64", "constant", "tiny-gaps"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    if kind == "ties":
        s = rng.integers(-3, draw(st.integers(-2, 6)), n).astype(np.float32) * np.float32(0.25)
    elif kind == "float32":
        s = rng.normal(size=n).astype(np.float32)
    elif kind == "float64":
        s = rng.normal(size=n) * 10.0 ** rng.integers(-30, 30)
    elif kind == "constant":
        s = np.full(n, draw(st.sampled_from([0.0, -1.5, 3e38])), np.float32)
    else:
        s = 1.0 + rng.integers(0, 5, n) * 2.0**-52
    s[rng.random(n) < 0.1] = -0.0 if kind != "tiny-gaps" else s[0]
    y = rng.random(n) < draw(st.sampled_from([0.02, 0.3, 0.5, 0.9]))
    y[rng.integers(0, n)] = True
    y[rng.integers(0, n)] = False
    assume_both = y.any() and not y.all()
    cuts = draw(st.lists(st.integers(0, n), max_size=6))
    return s, y, cuts, assume_both


@settings(max_examples=150, deadline=None)
@given(labelled_scores(), st.integers(1, 64))
def test_exact_metrics_equal_sklearn_in_any_chunking(data, block_size):
    s, y, cuts, both = data
    assume(both)
    m = BinaryRankingMetrics(block_size=block_size)
    feed(m, s, y, cuts)
    got = m.compute()
    ref = reference(y, s)
    for name in RANKING_METRICS:
        assert got[name] == pytest.approx(ref[name], abs=TOL), name
        assert got["error_bound"][name] == 0.0
    assert got["exact"] and m.exact
    assert (got["n_pos"], got["n_neg"]) == (int(y.sum()), int((~y).sum()))
    one_shot = BinaryRankingMetrics()
    one_shot.update(s, y)
    assert one_shot.compute() == got
    at = m.at_threshold(got["f1_max_threshold"])
    assert at["f1"] == pytest.approx(got["f1_max"], abs=TOL)
    assert got["f1_max_threshold"] in set(s.astype(np.float64).tolist())


@settings(max_examples=120, deadline=None)
@given(labelled_scores(min_size=20, max_size=400), st.integers(1, 40), st.integers(1, 30), st.integers(10, 12))
def test_binned_mode_stays_within_its_bound_and_ignores_chunking(data, cap, block_size, log_bins):
    s, y, cuts, both = data
    assume(both)
    m = BinaryRankingMetrics(max_exact_values=cap, max_bins=2**log_bins, block_size=block_size)
    feed(m, s, y, cuts)
    got = m.compute()
    ref = reference(y, s)
    for name in RANKING_METRICS:
        assert abs(got[name] - ref[name]) <= got["error_bound"][name] + TOL, name
    one_shot = BinaryRankingMetrics(max_exact_values=cap, max_bins=2**log_bins, block_size=block_size)
    one_shot.update(s, y)
    assert one_shot.compute() == got


def test_hash_and_sort_counting_paths_agree_with_sklearn():
    rng = np.random.default_rng(8)
    quantized = np.round(rng.random(40_000) * 50) / 50  # few distinct scores: counted by hashing
    continuous = rng.normal(size=40_000)  # all distinct: counted by sorting
    s = np.concatenate([quantized, continuous, quantized[:20_000]]).astype(np.float32)
    y = rng.random(s.size) < 0.3
    m = BinaryRankingMetrics(block_size=10_000)
    m.update(s, y)
    got = m.compute()
    assert m.exact
    assert got["auroc"] == pytest.approx(roc_auc_score(y, s), abs=TOL)
    assert got["ap"] == pytest.approx(average_precision_score(y, s), abs=TOL)
    chunked = BinaryRankingMetrics(block_size=10_000)
    feed(chunked, s, y, [7, 33_333, 50_001, 99_999])
    assert chunked.compute() == got


def test_binned_float32_keeps_full_resolution_where_it_can():
    rng = np.random.default_rng(1)
    y = rng.random(50_000) < 0.2
    steps = rng.integers(0, 2**15, y.size) + 40 * y
    s = (1 + steps * 2.0**-23).astype(np.float32)  # one top-level bucket: 2**19 float32 values
    m = BinaryRankingMetrics(max_exact_values=500, block_size=1000)
    m.update(s, y)
    got = m.compute()
    assert not m.exact
    assert got["exact"] and got["error_bound"]["auroc"] == 0.0
    assert got["auroc"] == pytest.approx(roc_auc_score(y, s), abs=TOL)
    assert got["ap"] == pytest.approx(average_precision_score(y, s), abs=TOL)
    assert got["f1_max_threshold"] in set(s.astype(np.float64).tolist())


@pytest.mark.parametrize("threads", [1, 2])
def test_large_binned_tables_count_through_radix_groups(threads):
    rng = np.random.default_rng(7)
    s = rng.normal(size=600_000)
    y = rng.random(s.size) < 0.1
    s[y] += 1
    m = BinaryRankingMetrics(max_exact_values=5_000, max_bins=2**18, block_size=2**15, threads=threads)
    m.update(s[:300_000], y[:300_000])
    m.update(s[300_000:], y[300_000:])
    got = m.compute()
    assert not m.exact and (got["n_pos"], got["n_neg"]) == (int(y.sum()), int((~y).sum()))
    ref = reference(y, s)
    for name in RANKING_METRICS:
        assert abs(got[name] - ref[name]) <= got["error_bound"][name] + TOL, name
    assert got["error_bound"]["auroc"] < 1e-4
    for t in np.quantile(s, [0.1, 0.5, 0.93]):
        at = m.at_threshold(t)
        tn, fp, fn, tp = confusion_matrix(y, s >= t, labels=[False, True]).ravel()
        truth = {"precision": tp / (tp + fp), "recall": tp / (tp + fn), "f1": 2 * tp / (2 * tp + fp + fn)}
        for name, true in truth.items():
            assert abs(at[name] - true) <= at["error_bound"][name] + TOL
    single = BinaryRankingMetrics(max_exact_values=5_000, max_bins=2**18, block_size=2**15)
    single.update(s, y)
    assert single.compute() == got


def test_memory_is_bounded_by_the_caps():
    rng = np.random.default_rng(2)
    m = BinaryRankingMetrics(max_exact_values=10_000, max_bins=2**14, block_size=2**14)
    sizes = []
    for _ in range(8):
        s = rng.normal(size=100_000)
        m.update(s, rng.random(s.size) < 0.05)
        sizes.append(m.nbytes)
    assert not m.exact
    assert max(sizes) <= (2**14 + 2**16) * 24 + 3 * 2**16 * 8
    assert sizes[-1] == sizes[2]
    r = m.compute()
    assert r["error_bound"]["auroc"] < 1e-3 and not r["exact"]


def test_valid_mask_equals_filtering_and_nan_is_allowed_where_invalid():
    rng = np.random.default_rng(3)
    s = rng.normal(size=(4, 30, 20)).astype(np.float32)
    y = rng.random(s.shape) < 0.3
    valid = rng.random(s.shape) < 0.7
    s[~valid & (rng.random(s.shape) < 0.5)] = np.nan
    m = BinaryRankingMetrics()
    m.update(s, y, valid)
    filtered = BinaryRankingMetrics()
    filtered.update(s[valid], y[valid])
    assert m.compute() == filtered.compute()
    assert m.compute()["auroc"] == pytest.approx(roc_auc_score(y[valid], s[valid]), abs=TOL)


def test_torch_tensors_of_any_float_dtype():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    s = rng.normal(size=(3, 50)).astype(np.float32)
    y = rng.random(s.shape) < 0.4
    for dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
        t = torch.from_numpy(s).to(dtype)
        m = BinaryRankingMetrics()
        m.update(t, torch.from_numpy(y))
        widened = t.float().numpy() if dtype in (torch.float16, torch.bfloat16) else t.numpy()
        assert m.compute()["auroc"] == pytest.approx(roc_auc_score(y.ravel(), widened.ravel()), abs=TOL)


def test_scores_are_never_transformed():
    logits = np.array([-40.0, -35.0, 30.0, 35.0, 36.0])
    y = np.array([0, 1, 0, 1, 1])
    m = BinaryRankingMetrics()
    m.update(logits, y)
    # a float32 sigmoid would tie 30, 35 and 36 (all 1.0) and give AUROC 2/3 instead of 5/6
    assert m.compute()["auroc"] == pytest.approx(5 / 6, abs=TOL)
    assert m.compute()["f1_max_threshold"] == -35.0


def test_negative_zero_ties_with_zero():
    m = BinaryRankingMetrics()
    m.update(np.array([0.0, -0.0], np.float32), np.array([1, 0]))
    assert m.compute()["auroc"] == 0.5


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 60), st.booleans(), st.integers(0, 2**32 - 1), st.lists(st.integers(0, 60), max_size=4))
def test_single_class_streams_give_nan_with_a_warning_never_a_number(n, positive, seed, cuts):
    rng = np.random.default_rng(seed)
    s = rng.integers(0, 4, n).astype(np.float32)
    y = np.full(n, positive)
    m = BinaryRankingMetrics(block_size=3)
    feed(m, s, y, cuts)
    with pytest.warns(UndefinedMetricWarning):
        r = m.compute()
    assert np.isnan(r["auroc"]) and np.isnan(r["fpr95_first"]) and np.isnan(r["fpr95_nearest"])
    if positive:  # every threshold has precision 1: AP and F1-max are 1, as scikit-learn says
        assert r["ap"] == 1.0 and r["f1_max"] == 1.0
        assert average_precision_score(y, s) == pytest.approx(1.0, abs=TOL)
    else:  # no positive: scikit-learn returns AP 0 with a warning; we refuse to make up a number
        assert np.isnan(r["ap"]) and np.isnan(r["f1_max"]) and np.isnan(r["aupr_trapezoid"])


@pytest.mark.parametrize("targets", [[1, 1, 1], [0, 0, 0]])
def test_single_class_gives_nan_with_a_warning(targets):
    m = BinaryRankingMetrics()
    m.update(np.array([0.1, 0.5, 0.9]), np.array(targets))
    with pytest.warns(UndefinedMetricWarning):
        r = m.compute()
    assert np.isnan(r["auroc"]) and np.isnan(r["fpr95_first"]) and np.isnan(r["fpr95_nearest"])
    if targets[0] == 1:
        assert r["ap"] == 1.0 and r["f1_max"] == 1.0
    else:
        assert np.isnan(r["ap"]) and np.isnan(r["f1_max"])


def test_constant_and_tiny_inputs():
    m = BinaryRankingMetrics()
    m.update(np.full(10, 3.0), np.array([1, 0, 0, 1, 0, 0, 0, 0, 0, 0]))
    r = m.compute()
    assert r["auroc"] == 0.5 and r["ap"] == pytest.approx(0.2) and r["fpr95_first"] == 1.0
    m = BinaryRankingMetrics()
    m.update(np.array([0.3, 0.7]), np.array([False, True]))
    r = m.compute()
    assert (r["auroc"], r["ap"], r["fpr95_first"], r["f1_max"], r["f1_max_threshold"]) == (1.0, 1.0, 0.0, 1.0, 0.7)


def test_bad_inputs_are_one_line_errors():
    m = BinaryRankingMetrics()
    with pytest.raises(OddspotError, match="compute: no valid scores"):
        m.compute()
    with pytest.raises(OddspotError, match="NaN"):
        m.update(np.array([0.1, np.nan]), np.array([0, 1]))
    with pytest.raises(OddspotError, match="targets must be bool or 0/1"):
        m.update(np.array([0.1, 0.2]), np.array([0, 255]))
    with pytest.raises(OddspotError, match="shape"):
        m.update(np.zeros(3), np.zeros(4))
    with pytest.raises(OddspotError, match="dtype"):
        m.update(np.array(["a", "b"]), np.array([0, 1]))
    m.update(np.zeros(0), np.zeros(0))
    with pytest.raises(OddspotError):
        m.compute()


def test_at_threshold_matches_sklearn_confusion_matrix():
    rng = np.random.default_rng(5)
    s = rng.integers(0, 20, 500).astype(np.float64)
    y = rng.random(500) < 0.3
    m = BinaryRankingMetrics()
    m.update(s, y)
    for t in (-1.0, 0.0, 7.0, 7.5, 19.0):
        got = m.at_threshold(t)
        tn, fp, fn, tp = confusion_matrix(y, s >= t, labels=[False, True]).ravel()
        assert (got["tp"], got["fp"], got["tn"], got["fn"]) == (tp, fp, tn, fn)
        assert got["exact"] and got["accuracy"] == pytest.approx((tp + tn) / 500)
        if tp + fp:
            assert got["precision"] == pytest.approx(tp / (tp + fp))
    with pytest.warns(UndefinedMetricWarning):
        assert np.isnan(m.at_threshold(100.0)["precision"])


def test_curves_are_downsampled_and_keep_their_ends():
    rng = np.random.default_rng(6)
    s = rng.normal(size=20_000)
    y = rng.random(s.size) < 0.5
    s[y] += 1
    m = BinaryRankingMetrics()
    m.update(s, y)
    c = m.curves(max_points=200)
    roc, pr = c["roc"], c["pr"]
    assert len(roc["fpr"]) <= 200 and len(pr["recall"]) <= 200
    assert (roc["fpr"][0], roc["tpr"][0], roc["fpr"][-1], roc["tpr"][-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(roc["fpr"]) >= 0) and np.all(np.diff(roc["tpr"]) >= 0)
    assert np.trapezoid(roc["tpr"], roc["fpr"]) == pytest.approx(m.compute()["auroc"], abs=2e-3)


def test_reset_forgets_everything():
    m = BinaryRankingMetrics(max_exact_values=5, block_size=4)
    m.update(np.arange(100.0), np.arange(100) % 2)
    assert not m.exact
    m.reset()
    assert m.exact
    m.update(np.array([1.0, 2.0]), np.array([0, 1]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert m.compute()["auroc"] == 1.0
