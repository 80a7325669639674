"""`merge(other)` of every streaming metric state: any partition of the items, merged in any order,
computes exactly (bit for bit) what one process that saw every item computes, while the state is exact.

Controls show that the comparison can fail: a dropped or doubled partition, and rows averaged in
another order, give different numbers; binned merges keep every result within its error bound.
"""

from __future__ import annotations

import random
import struct
import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from oddspot.errors import OddspotError
from oddspot.metrics import (
    AUPRO,
    BinaryRankingMetrics,
    ConfusionMatrix,
    InspectionEvaluator,
    PerImageMetrics,
    ScoreTable,
    UndefinedMetricWarning,
)

SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def same(a, b) -> bool:
    """Bit-for-bit equality of nested results (NaN equals NaN, -0.0 differs from 0.0)."""
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(same(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()
    if isinstance(a, (float, np.floating)):
        return isinstance(b, (float, np.floating)) and struct.pack("<d", float(a)) == struct.pack("<d", float(b))
    return type(a) is type(b) and a == b


def test_same_is_strict():
    assert same({"a": [1.0, float("nan")]}, {"a": [1.0, float("nan")]})
    assert not same(0.0, -0.0)
    assert not same(0.1 + 0.2, 0.3)
    assert not same({"a": 1}, {"a": 1.0})


def quiet(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UndefinedMetricWarning)
        return fn(*args, **kwargs)


def merged(states: list, order: list[int], shape: str):
    """Merge `states` in `order`, sequentially or as a balanced tree."""
    items = [states[i] for i in order]
    if shape == "chain":
        first = items[0]
        for s in items[1:]:
            first.merge(s)
        return first
    while len(items) > 1:
        items = [a.merge(b) for a, b in zip(items[0::2], items[1::2])] + ([items[-1]] if len(items) % 2 else [])
    return items[0]


# random images: scores quantized (ties), float32 or float64, a few pixels per image
@st.composite
def images(draw, min_images: int = 1, max_images: int = 12):
    n = draw(st.integers(min_images, max_images))
    dtype = draw(st.sampled_from([np.float32, np.float64]))
    levels = draw(st.sampled_from([4, 50, 10**6]))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        h, w = rng.integers(2, 9), rng.integers(2, 9)
        scores = (rng.integers(0, levels, (h, w)) / levels + rng.normal(0, 0.3, (h, w)) * (levels > 100)).astype(dtype)
        target = rng.random((h, w)) < rng.uniform(0.0, 0.5)
        out.append((scores, target))
    return out


@st.composite
def partitions(draw, n: int):
    """(part of each item, merge order of the parts, merge shape, chunk size)."""
    k = draw(st.integers(1, min(n, 5)))
    parts = draw(st.lists(st.integers(0, k - 1), min_size=n, max_size=n))
    used = sorted(set(parts))
    order = draw(st.permutations(used))
    return parts, list(order), draw(st.sampled_from(["chain", "tree"]))


def _ranking_results(m: BinaryRankingMetrics) -> dict:
    return {"compute": quiet(m.compute), "at": quiet(m.at_threshold, 0.5), "curves": m.curves(50)}


@SETTINGS
@given(data=st.data())
def test_ranking_merge_equals_one_process(data):
    imgs = data.draw(images())
    parts, order, shape = data.draw(partitions(len(imgs)))
    block = data.draw(st.sampled_from([2**20, 7]))
    whole = BinaryRankingMetrics(block_size=block)
    for s, t in imgs:
        whole.update(s, t)
    states = {p: BinaryRankingMetrics(block_size=block) for p in set(parts)}
    for (s, t), p in zip(imgs, parts):
        states[p].update(s, t)
    one = merged([states[p] for p in sorted(states)], [sorted(states).index(p) for p in order], shape)
    assert one.exact
    assert same(_ranking_results(one), _ranking_results(whole))


@SETTINGS
@given(data=st.data())
def test_aupro_merge_equals_one_process(data):
    imgs = data.draw(images())
    parts, order, shape = data.draw(partitions(len(imgs)))
    whole = AUPRO()
    for s, t in imgs:
        whole.update(s, t)
    states = {p: AUPRO() for p in set(parts)}
    for (s, t), p in zip(imgs, parts):
        states[p].update(s, t)
    keys = sorted(states)
    one = merged([states[p] for p in keys], [keys.index(p) for p in order], shape)
    assert same(quiet(one.compute), quiet(whole.compute))
    assert same(quiet(one.curve, 50), quiet(whole.curve, 50))


@SETTINGS
@given(data=st.data())
def test_confusion_matrix_merge_equals_one_process(data):
    n = data.draw(st.integers(1, 10))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1)))
    maps = [(rng.integers(0, 4, (3, 5)), rng.integers(0, 5, (3, 5))) for _ in range(n)]
    parts, order, shape = data.draw(partitions(n))
    whole = ConfusionMatrix(4, ignore_index=4)
    for p, t in maps:
        whole.update(p, t)
    states = {k: ConfusionMatrix(4, ignore_index=4) for k in set(parts)}
    for (p, t), k in zip(maps, parts):
        states[k].update(p, t)
    keys = sorted(states)
    one = merged([states[k] for k in keys], [keys.index(k) for k in order], shape)
    assert same(quiet(one.compute), quiet(whole.compute))


@SETTINGS
@given(data=st.data())
def test_per_image_merge_equals_one_process(data):
    imgs = data.draw(images(max_images=20))
    parts, order, shape = data.draw(partitions(len(imgs)))
    whole = PerImageMetrics()
    for s, t in imgs:
        whole.update(s, t)  # default keys: the insertion index
    states = {p: PerImageMetrics() for p in set(parts)}
    for i, ((s, t), p) in enumerate(zip(imgs, parts)):
        states[p].update(s, t, key=i)
    keys = sorted(states)
    one = merged([states[p] for p in keys], [keys.index(p) for p in order], shape)
    assert same(quiet(one.compute), quiet(whole.compute))


@st.composite
def inspection_items(draw):
    n = draw(st.integers(2, 16))
    rng = np.random.default_rng(draw(st.integers(0, 2**31 - 1)))
    items = []
    for i in range(n):
        label = int(rng.random() < 0.5)
        mask = (rng.random((6, 6)) < 0.3) if label else np.zeros((6, 6), bool)
        amap = (rng.integers(0, 30, (6, 6)) / 30 + mask * rng.random()).astype(np.float32)
        kind = "good" if not label else ["crack", "hole"][i % 2]
        items.append((float(amap.max() + rng.normal(0, 0.1)), label, amap, mask if label else None, kind))
    return items


def _inspection_results(ev: InspectionEvaluator) -> dict:
    return {"compute": quiet(ev.compute, image_threshold=0.6, pixel_threshold=0.5), "curves": quiet(ev.curves, 40)}


@SETTINGS
@given(data=st.data())
def test_inspection_evaluator_merge_equals_one_process(data):
    items = data.draw(inspection_items())
    parts, order, shape = data.draw(partitions(len(items)))
    whole = InspectionEvaluator(bootstrap=20, seed=3)
    for item in items:
        whole.add(*item)
    states = {p: InspectionEvaluator(bootstrap=20, seed=3) for p in set(parts)}
    for i, (item, p) in enumerate(zip(items, parts)):
        states[p].add(*item, key=i)
    keys = sorted(states)
    one = merged([states[p] for p in keys], [keys.index(p) for p in order], shape)
    assert same(_inspection_results(one), _inspection_results(whole))


def test_string_keys_order_like_sorted_paths():
    rng = np.random.default_rng(0)
    items = [(float(rng.random()), i % 2, None, None, "good" if i % 2 == 0 else "crack") for i in range(12)]
    paths = [f"img_{i:02d}.png" for i in range(12)]
    whole = InspectionEvaluator(bootstrap=30)
    for item, path in sorted(zip(items, paths), key=lambda x: x[1]):
        whole.add(*item, key=path)
    a, b = InspectionEvaluator(bootstrap=30), InspectionEvaluator(bootstrap=30)
    for i in random.Random(1).sample(range(12), 12):  # shuffled, split in two
        (a if i % 3 else b).add(*items[i], key=paths[i])
    assert same(quiet(b.merge(a).compute), quiet(whole.compute))


# controls: the comparison above fails when the merge is wrong -------------------------------------

def _ranking(imgs) -> BinaryRankingMetrics:
    m = BinaryRankingMetrics()
    for s, t in imgs:
        m.update(s, t)
    return m


def test_control_dropped_or_doubled_partition_differs():
    rng = np.random.default_rng(5)
    imgs = [(rng.random((4, 4)), rng.random((4, 4)) < 0.3) for _ in range(6)]
    whole = quiet(_ranking(imgs).compute)
    assert same(quiet(_ranking(imgs[:3]).merge(_ranking(imgs[3:])).compute), whole)
    assert not same(quiet(_ranking(imgs[:3]).compute), whole)
    part = _ranking(imgs[3:])
    assert not same(quiet(_ranking(imgs[:3]).merge(part).merge(part).compute), whole)


def test_control_unordered_rows_change_the_mean():
    """Without keys putting rows in one order, the mean over per-image rows differs in its last bits."""
    values = [0.1, 0.7, 1e-3, 0.3333333333333333, 0.9, 1.0 / 7, 0.5, 2.0 / 3] * 3
    rows = np.asarray(values)
    rng = random.Random(0)
    differs = False
    for _ in range(200):
        perm = rng.sample(range(rows.size), rows.size)
        differs |= not same(float(np.mean(rows[perm])), float(np.mean(rows)))
    assert differs


def test_duplicate_keys_and_mismatched_settings_are_refused():
    a, b = PerImageMetrics(), PerImageMetrics()
    s, t = np.array([0.1, 0.9]), np.array([0, 1])
    a.update(s, t)
    b.update(s, t)  # both default to key 0
    with pytest.raises(OddspotError, match="key 0"):
        a.merge(b)
    with pytest.raises(OddspotError, match="fpr_limit"):
        AUPRO(0.3).merge(AUPRO(0.2))
    with pytest.raises(OddspotError, match="classes"):
        ConfusionMatrix(3).merge(ConfusionMatrix(4))
    with pytest.raises(OddspotError, match="settings"):
        InspectionEvaluator(seed=1).merge(InspectionEvaluator(seed=2))
    with pytest.raises(OddspotError, match="weighted"):
        ScoreTable().merge(ScoreTable(weighted=True))
    with pytest.raises(OddspotError, match="key must be"):
        PerImageMetrics().update(s, t, key=1.5)


# binned tables: merges stay within the reported bounds --------------------------------------------

def _stream(seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    y = rng.random(n) < 0.2
    return (rng.normal(0, 1, n) + 1.5 * y).astype(np.float32), y


@pytest.mark.parametrize("mix", ["exact+binned", "binned+exact", "binned+binned"])
def test_binned_merges_stay_within_their_bounds(mix):
    parts = [_stream(seed, 6000) for seed in (1, 2)]
    exact = BinaryRankingMetrics()
    for s, y in parts:
        exact.update(s, y)
    truth = exact.compute()

    def state(i: int, binned: bool) -> BinaryRankingMetrics:
        m = BinaryRankingMetrics(max_exact_values=500 if binned else 2**22, max_bins=2048 * (i + 1), block_size=1000)
        m.update(*parts[i])
        assert m.exact is not binned
        return m

    first, second = {"exact+binned": (False, True), "binned+exact": (True, False), "binned+binned": (True, True)}[mix]
    m = state(0, first).merge(state(1, second))
    assert not m.exact
    got = m.compute()
    assert got["n_pos"] == truth["n_pos"] and got["n_neg"] == truth["n_neg"]
    for name in ("auroc", "ap", "fpr95_first"):
        assert abs(got[name] - truth[name]) <= got["error_bound"][name] + 1e-12, name


def test_exact_merge_past_the_limit_switches_to_binned():
    a, b = BinaryRankingMetrics(max_exact_values=800, block_size=100), BinaryRankingMetrics(max_exact_values=800, block_size=100)
    a.update(*_stream(1, 500))
    b.update(*_stream(2, 500))
    assert a.exact and b.exact
    a.merge(b)
    assert not a.exact and a.compute()["n_pos"] + a.compute()["n_neg"] == 1000


def test_merge_leaves_the_other_state_unchanged():
    a, b = _ranking([_stream(1, 300)]), _ranking([_stream(2, 300)])
    before = quiet(b.compute)
    a.merge(b)
    assert same(quiet(b.compute), before)
