"""Bootstrap intervals and per-group breakdowns of image-level metrics."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

from oddspot.errors import OddspotError
from oddspot.metrics import bootstrap_ci, defect_type_breakdown, size_breakdown
from oddspot.metrics.bootstrap import rowwise_metrics


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(2, 40), st.integers(1, 8))
def test_rowwise_metrics_equal_sklearn_with_ties(seed, m, levels):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, levels, (5, m)).astype(np.float64)
    labels = rng.random((5, m)) < 0.4
    got = rowwise_metrics(scores, labels)
    for i in range(5):
        y, s = labels[i], scores[i]
        if y.all() or not y.any():
            assert np.isnan(got["auroc"][i]) and np.isnan(got["ap"][i]) and np.isnan(got["f1_max"][i])
            continue
        p, r, _ = precision_recall_curve(y, s)
        with np.errstate(invalid="ignore"):
            f1 = np.nan_to_num(2 * p * r / (p + r)).max()
        assert got["auroc"][i] == pytest.approx(roc_auc_score(y, s), abs=1e-12)
        assert got["ap"][i] == pytest.approx(average_precision_score(y, s), abs=1e-12)
        assert got["f1_max"][i] == pytest.approx(f1, abs=1e-12)


def test_bootstrap_is_seeded_and_brackets_the_estimate():
    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.3
    scores = rng.normal(size=300) + labels
    a = bootstrap_ci(scores, labels, n=400, seed=7)
    b = bootstrap_ci(scores, labels, n=400, seed=7)
    c = bootstrap_ci(scores, labels, n=400, seed=8)
    assert a == b and a != c
    assert (a["n"], a["seed"], a["level"], a["n_degenerate"]) == (400, 7, 0.95, 0)
    lo, hi = a["auroc"]
    assert lo < roc_auc_score(labels, scores) < hi and hi - lo < 0.2
    assert a["ap"][0] < a["ap"][1] and a["f1_max"][0] < a["f1_max"][1]


def test_bootstrap_counts_single_class_resamples_and_rejects_bad_options():
    r = bootstrap_ci([0.1, 0.9, 0.5], [0, 1, 0], n=200, seed=0)
    assert 0 < r["n_degenerate"] < 200
    with pytest.raises(OddspotError, match="level"):
        bootstrap_ci([0.1, 0.9], [0, 1], level=1.5)
    with pytest.raises(OddspotError, match="unknown metrics"):
        bootstrap_ci([0.1, 0.9], [0, 1], metrics=("accuracy",))


def test_breakdowns_compare_each_group_with_all_good_images():
    scores = np.array([0.1, 0.2, 0.3, 0.9, 0.8, 0.25, 0.15, 0.7])
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    types = ["good", "good", "good", "crack", "crack", "scratch", "scratch", "hole"]
    areas = np.array([np.nan, np.nan, np.nan, 0.2, 0.05, 0.001, 0.002, np.nan])
    by_type = defect_type_breakdown(scores, labels, types)
    assert set(by_type) == {"crack", "scratch", "hole"}
    assert by_type["crack"] == {"auroc": 1.0, "ap": 1.0, "n": 2, "n_good": 3}
    sel = np.isin(types, ["good", "scratch"])
    assert by_type["scratch"]["auroc"] == pytest.approx(roc_auc_score(labels[sel], scores[sel]))
    by_size = size_breakdown(scores, labels, areas, edges=[0.01, 0.1])
    assert by_size["edges"] == [0.01, 0.1] and by_size["n_unsized"] == 1
    assert (by_size["small"]["n"], by_size["medium"]["n"], by_size["large"]["n"]) == (2, 1, 1)
    assert by_size["large"]["auroc"] == 1.0
    default = size_breakdown(scores, labels, areas)
    assert len(default["edges"]) == 2 and default["edges"][0] <= default["edges"][1]
    with pytest.raises(OddspotError, match="size_edges"):
        size_breakdown(scores, labels, areas, edges=[0.5, 0.1])
