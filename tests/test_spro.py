"""sPRO (MVTec LOCO AD): the streaming metric against a brute-force reference, its saturation rule, the
LOCO regions read from defects_config.json, and the record `evaluate` writes for a LOCO category."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dataset_fixtures import LOCO_DEFECTS, make_loco
from PIL import Image

from oddspot.data import loco
from oddspot.data.layouts import open_dataset
from oddspot.errors import OddspotError
from oddspot.metrics import InspectionEvaluator
from oddspot.metrics.spro import SPRO, saturated_weights


def _reference(goods, defects, limit):
    """sPRO area up to `limit` by brute force: one curve point per distinct score, from (0, 0)."""
    neg = np.concatenate([g.ravel() for g in goods])
    regions = [(amap[mask], min(sat, mask.sum())) for amap, regs in defects for mask, sat in regs]  # capped at the area
    thresholds = np.unique(np.concatenate([neg] + [r for r, _ in regions]))[::-1]
    xs = [0.0] + [float((neg >= t).mean()) for t in thresholds]
    ys = [0.0] + [float(np.mean([min((r >= t).sum() / s, 1.0) for r, s in regions])) for t in thresholds]
    area = 0.0
    for x0, x1, y0, y1 in zip(xs[:-1], xs[1:], ys[:-1], ys[1:]):
        if x1 <= limit:
            area += (x1 - x0) * (y0 + y1) / 2
        else:
            if x0 < limit:
                area += (limit - x0) * (y0 + y0 + (y1 - y0) * (limit - x0) / (x1 - x0)) / 2
            break
    return area / limit


def _case(seed: int):
    rng = np.random.default_rng(seed)
    goods = [rng.integers(0, 12, (9, 11)).astype(np.float32) for _ in range(3)]  # many ties
    defects = []
    for _ in range(4):
        amap = rng.integers(0, 16, (9, 11)).astype(np.float32)
        regs = []
        for _ in range(int(rng.integers(1, 4))):  # regions may overlap
            mask = np.zeros((9, 11), bool)
            y, x = rng.integers(0, 6), rng.integers(0, 8)
            mask[y:y + int(rng.integers(1, 4)), x:x + int(rng.integers(1, 4))] = True
            area = int(mask.sum())
            regs.append((mask, float(rng.choice([area, max(1.0, area * 0.4), 2.5]))))
        defects.append((amap, regs))
    return goods, defects


@pytest.mark.parametrize("seed", range(4))
def test_spro_equals_a_brute_force_reference_and_merges_exactly(seed):
    goods, defects = _case(seed)
    whole, left, right = SPRO((0.05, 0.3, 1.0)), SPRO((0.05, 0.3, 1.0)), SPRO((0.05, 0.3, 1.0))
    for i, g in enumerate(goods):
        whole.update_good(g)
        (left if i % 2 else right).update_good(g)
    for i, (amap, regs) in enumerate(defects):
        whole.update_defective(amap, regs)
        (right if i % 2 else left).update_defective(amap, regs)
    got = whole.compute()
    assert got["exact"] and got["n_regions"] == sum(len(r) for _, r in defects) and got["n_good_images"] == 3
    for limit in (0.05, 0.3, 1.0):
        assert got["auc"][f"{limit:g}"] == pytest.approx(_reference(goods, defects, limit), abs=1e-12)
    assert left.merge(right).compute() == got


def test_saturation_gives_full_credit_once_enough_region_pixels_are_found():
    amap = np.zeros((20, 20), np.float32)
    region = np.zeros((20, 20), bool)
    region[:10, :10] = True
    amap[:2, :5] = 1.0  # 10 of the region's 100 pixels, above every good pixel
    good = np.zeros((20, 20), np.float32)
    saturated, plain = SPRO((0.05,)), SPRO((0.05,))
    for state, sat in ((saturated, 10.0), (plain, 100.0)):
        state.update_good(good)
        state.update_defective(amap, [(region, sat)])
    assert saturated.compute()["auc"]["0.05"] == pytest.approx(1.0)
    # unsaturated: PRO 0.1 at FPR 0, then a straight line to (1, 1), cut at 0.05
    assert plain.compute()["auc"]["0.05"] == pytest.approx((0.1 + (0.1 + 0.9 * 0.05)) / 2)


def test_a_saturation_past_the_area_is_capped_and_groups_must_be_distinct():
    amap = np.zeros((6, 6), np.float32)
    region = np.zeros((6, 6), bool)
    region[:2, :2] = True
    amap[region] = 1.0
    capped = SPRO((0.05,))
    capped.update_good(np.zeros((6, 6), np.float32))
    capped.update_defective(amap, [(region, 400.0)])  # 4 px region: found whole, it saturates
    assert capped.compute()["auc"]["0.05"] == pytest.approx(1.0)
    with pytest.raises(OddspotError, match="saturation True"):
        capped.update_defective(amap, [(region, True)])
    for groups in (("all",), ("a", "a")):
        with pytest.raises(OddspotError, match="distinct names other than 'all'"):
            InspectionEvaluator(bootstrap=0, spro_groups=groups)


def test_weights_of_a_region_sum_to_its_saturated_overlap_whatever_the_ties():
    scores = np.array([3, 1, 3, 2, 2, 2, 0], np.float32)
    region = np.array([0, 0, 0, 0, 1, 1, 1])
    w = saturated_weights(scores, region, np.array([2.5, 3.0]))
    assert w[region == 0].sum() == pytest.approx(1.0) and w[region == 1].sum() == pytest.approx(1.0)
    assert w[[0, 2]].sum() == pytest.approx(2 / 2.5)  # the two top pixels of region 0, tied
    assert w[1] == 0.0  # beyond the saturation


def test_loco_regions_take_their_saturation_from_defects_config(tmp_path):
    root = make_loco(tmp_path / "loco")
    d = open_dataset(root)
    config = loco.defects_config(root / "breakfast_box")
    two = next(r for r in d.refs["test"] if r.key(d.root) == "test/structural_anomalies/001.png")
    regions = loco.spro_regions(two.mask_paths, config, (32, 32))
    areas = [int(m.sum()) for m, _ in regions]
    assert [s for _, s in regions] == [1.0 * areas[0], 20.0]  # 255: relative 1; 254: absolute 20 px
    assert [s for _, s in loco.spro_regions(two.mask_paths, [], (32, 32))] == [float(a) for a in areas]
    small = [{**LOCO_DEFECTS[1], "saturation_threshold": 10_000}]  # absolute, larger than the region: capped at its area
    assert loco.spro_regions(two.mask_paths[1:], small, (32, 32))[0][1] == float(areas[1])

    mixed = np.zeros((32, 32), np.uint8)
    mixed[:2, :2], mixed[5:7, 5:7] = 255, 243
    Image.fromarray(mixed).save(two.mask_paths[0])
    with pytest.raises(OddspotError, match="000.png: has several values"):
        loco.spro_regions(two.mask_paths, config, (32, 32))
    mixed[5:7, 5:7] = 255
    Image.fromarray(np.where(mixed > 0, 7, 0).astype(np.uint8)).save(two.mask_paths[0])
    with pytest.raises(OddspotError, match="pixel value 7 is not listed in defects_config.json"):
        loco.spro_regions(two.mask_paths, config, (32, 32))


@pytest.mark.parametrize("entry, needle", [
    ({"saturation_threshold": float("nan"), "relative_saturation": False}, "saturation_threshold nan"),
    ({"saturation_threshold": 1.5, "relative_saturation": True}, "saturation_threshold 1.5 .*<= 1"),
    ({"saturation_threshold": -3, "relative_saturation": False}, "saturation_threshold -3"),
    ({"saturation_threshold": 5, "relative_saturation": "yes"}, "relative_saturation 'yes'"),
])
def test_defects_config_saturation_values_are_checked(tmp_path, entry, needle):
    root = make_loco(tmp_path / "loco", n_logical=1, n_structural=1, size=8)
    bad = [{**LOCO_DEFECTS[0], **entry}, *LOCO_DEFECTS[1:]]
    (root / "breakfast_box" / "defects_config.json").write_text(json.dumps(bad))
    with pytest.raises(OddspotError, match=f"'missing_almonds': {needle}"):
        open_dataset(root)
    (root / "breakfast_box" / "defects_config.json").write_text(json.dumps([LOCO_DEFECTS[0]] * 2))
    with pytest.raises(OddspotError, match="pixel_value 255 is listed twice"):
        open_dataset(root)
    (root / "breakfast_box" / "defects_config.json").write_text("[]")
    with pytest.raises(OddspotError, match="expected a list of"):
        open_dataset(root)


@pytest.mark.filterwarnings("ignore::oddspot.metrics.undefined.UndefinedMetricWarning")
def test_evaluator_computes_spro_per_family_and_rejects_bad_regions_without_changing():
    ev = InspectionEvaluator(bootstrap=0, spro_groups=loco.FAMILIES)
    rng = np.random.default_rng(0)
    mask = np.zeros((8, 8), bool)
    mask[:3, :3] = True
    for _ in range(3):
        ev.add(0.1, 0, rng.random((8, 8)), None, "good")
    ev.add(0.9, 1, rng.random((8, 8)) + mask, mask, "logical_anomalies", regions=[(mask, 4.0)])
    before = ev.compute()
    outside = np.zeros((8, 8), bool)
    outside[7, 7] = True
    for regions, needle in (([(outside, 1.0)], "non-empty part"), (None, "needs its sPRO regions"),
                            ([(mask, float("inf"))], "saturation inf")):
        with pytest.raises(OddspotError, match=needle):
            ev.add(0.9, 1, rng.random((8, 8)), mask, "structural_anomalies", regions=regions)
    with pytest.raises(OddspotError, match="not an sPRO group"):
        ev.add(0.9, 1, rng.random((8, 8)), mask, "scratch", regions=[(mask, 1.0)])
    after = ev.compute()
    assert json.dumps(after) == json.dumps(before)  # NaN-safe equality
    spro = after["pixel"]["spro"]
    assert set(spro) == {"all", *loco.FAMILIES} and spro["all"]["auc"]["0.05"] == pytest.approx(1.0)
    assert spro["logical_anomalies"] == spro["all"] and spro["structural_anomalies"]["n_regions"] == 0
    with pytest.raises(OddspotError, match="computes no sPRO"):
        InspectionEvaluator(bootstrap=0).add(0.9, 1, rng.random((8, 8)), mask, "x", regions=[(mask, 1.0)])
