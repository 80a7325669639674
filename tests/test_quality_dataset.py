"""The quality benchmark's dataset generator, its defect families, its halves, and the selection rule."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

from oddspot.data.defects import FAMILIES, MIN_CHANGE, make_defect
from oddspot.data.mvtec import read_mvtec
from oddspot.errors import OddspotError
from oddspot.data.quality_dataset import (
    CATEGORIES, HALVES, HOLDOUT_SOURCES, OBJECTS, SOURCES, TEXTURES, build_quality_dataset, half_of, photo,
)

SMALL = dict(n_train=2, n_test_good=2, n_test_bad=len(FAMILIES), n_predict=2, tile=64)


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path, Path]:
    """Two categories (a texture and the drawn object) built twice with seed 3; the texture once with seed 4."""
    return tuple(build_quality_dataset(tmp_path_factory.mktemp(name), cats, seed=seed, **SMALL)
                 for name, cats, seed in (("a", ("gravel", "horse"), 3), ("b", ("gravel", "horse"), 3), ("c", ("gravel",), 4)))


def test_generator_is_deterministic_per_seed(built):
    a, b, c = built
    files_a, files_b, files_c = _files(a), _files(b), _files(c)
    assert files_a == files_b
    assert {k for k in files_a if k.startswith("gravel/")} == {k for k in files_c if k.startswith("gravel/")}
    assert files_a["gravel/train/good/000.png"] != files_c["gravel/train/good/000.png"]


def test_mvtec_layout_with_masks_exactly_on_defective_images(built):
    root = built[0]
    for category in ("gravel", "horse"):
        refs = read_mvtec(root, category)
        assert len(refs["train"]) == SMALL["n_train"]
        test = refs["test"]
        assert sorted({r.defect_type for r in test}) == sorted(("good", *FAMILIES))  # every family appears
        for ref in test:
            sample = ref.load()
            assert sample.image.shape == (64, 64, 3)
            if ref.label == 0:
                assert sample.mask is None or not sample.mask.any()
                assert not (root / category / "ground_truth" / "good").exists()
            else:
                assert sample.mask is not None and sample.mask.any(), ref.path
        assert len(list((root / category / "predict").glob("*.jpg"))) == SMALL["n_predict"]


@pytest.mark.parametrize("family", FAMILIES)
def test_each_family_changes_its_mask_and_nothing_else(family):
    image = np.ascontiguousarray(photo("gravel")[:96, :96])
    foreign = photo("coffee")
    out, mask = make_defect(image, np.random.default_rng(7), family, foreign=foreign)
    assert out.dtype == np.uint8 and out.shape == image.shape and mask.shape == image.shape[:2] and mask.any()
    change = np.abs(out.astype(int) - image.astype(int)).max(axis=2)
    assert change[mask].mean() >= MIN_CHANGE
    if family == "stain":  # soft edges: outside the mask the tint is under half its strength
        assert change[~mask].max() <= change[mask].max()
    else:
        assert not change[~mask].any()


def test_missing_part_is_cut_from_the_object():
    image = np.full((64, 64, 3), 200, np.uint8)
    within = np.zeros((64, 64), bool)
    within[16:48, 16:48] = True
    image[within] = (120, 78, 45)
    out, mask = make_defect(image, np.random.default_rng(1), "missing", within=within)
    assert mask.any() and (mask & within).sum() >= 0.3 * mask.sum()
    assert np.abs(out[mask & within].astype(int) - 200).max() <= 12  # the part shows the background now


def test_halves_are_fixed_disjoint_and_balanced():
    assert HALVES == {"selection": ("brick", "gravel", "ihc", "astronaut", "chelsea", "horse"),
                      "confirmation": ("grass", "hubble", "retina", "camera", "coffee", "rocket"),
                      "holdout": ("cell", "moon", "clock", "coins", "motorcycle")}
    sel, conf, hold = (set(HALVES[k]) for k in ("selection", "confirmation", "holdout"))
    assert not sel & conf and not (sel | conf) & hold and sel | conf | hold == set(CATEGORIES)
    for half in (sel, conf):
        assert len(half & set(TEXTURES)) == len(half & set(OBJECTS)) == 3
    assert {half_of(c) for c in sel} == {"selection"} and half_of("moon") == "holdout"


def test_holdout_leaves_the_first_twelve_as_they_were():
    # a category's random stream is its index in CATEGORIES, and defects paste foreign photos from SOURCES:
    # the holdout comes last and is no foreign source, so the 12 categories' images did not change with it
    assert CATEGORIES[:12] == TEXTURES + OBJECTS
    assert not set(HOLDOUT_SOURCES) & set(SOURCES)


def test_holdout_categories_build_in_the_mvtec_layout(tmp_path):
    root = build_quality_dataset(tmp_path, ("moon", "motorcycle"), seed=0, **SMALL)  # a grey texture; a stereo pair's left view
    for category in ("moon", "motorcycle"):
        refs = read_mvtec(root, category)
        assert sorted({r.defect_type for r in refs["test"]}) == sorted(("good", *FAMILIES))
        assert all(r.load().image.shape == (64, 64, 3) for r in refs["train"])


def _benchmark():
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "quality.py"
    spec = importlib.util.spec_from_file_location("quality_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def test_selection_rule_on_a_hand_made_table():
    q = _benchmark()
    S = q.Setting

    def row(auroc: float, aupro: float, ips: float) -> dict[str, float]:
        return {"image_auroc": auroc, "image_ap": 1.0, "pixel_auroc": 1.0, "aupro": aupro, "fit_ips": 10.0,
                "predict_ips": ips}

    best_slow = S(coreset_ratio=0.1)
    best_fast = S(image_size=256)
    tie_slower = S(image_size=256, scoring="topk_mean")
    worse_fast = S()
    means = {best_slow: row(1.0, 0.99, 20.0), best_fast: row(0.99, 0.97, 60.0), tie_slower: row(0.99, 0.97, 55.0),
             worse_fast: row(0.98, 0.95, 80.0)}
    assert q.choose(means, 50.0) == best_fast  # best_slow is better but too slow; the tie goes to the faster
    assert q.choose(means, 10.0) == best_slow
    assert q.choose(means, 100.0) == worse_fast  # none is fast enough: the fastest
    table = {("brick", worse_fast): row(0.9, 0.8, 40.0), ("gravel", worse_fast): row(1.0, 1.0, 60.0)}
    assert q.half_means(table, ["brick", "gravel"], worse_fast)["image_auroc"] == pytest.approx(0.95)


def test_post_hoc_bound_takes_each_metric_at_its_best_setting_per_category():
    q = _benchmark()
    a, b = q.Setting(), q.Setting(coreset_ratio=0.1)
    table = {("brick", a): {"image_auroc": 1.0, "aupro": 0.8}, ("brick", b): {"image_auroc": 0.9, "aupro": 0.9},
             ("grass", a): {"image_auroc": 0.7, "aupro": 0.5}, ("grass", b): {"image_auroc": 0.8, "aupro": 0.4}}
    bound = q.post_hoc_bound(table, ["brick", "grass"], [a, b])
    assert bound == {"image_auroc": pytest.approx(0.9), "aupro": pytest.approx(0.7)}  # (1.0 + 0.8) / 2, (0.9 + 0.5) / 2


def test_speeds_rescaled_to_the_reference_per_category():
    q = _benchmark()
    other = q.Setting(coreset_ratio=0.1)
    table = {("brick", q.LIBRARY_DEFAULT): {"predict_ips": 10.0}, ("brick", other): {"predict_ips": 5.0},
             ("grass", q.LIBRARY_DEFAULT): {"predict_ips": 20.0}, ("grass", other): {"predict_ips": 30.0}}
    out = q.rescaled(table, 60.0)
    assert [out[k]["predict_ips"] for k in table] == [60.0, 30.0, 60.0, 90.0]
    assert [out[k]["predict_ips_raw"] for k in table] == [10.0, 5.0, 20.0, 30.0]
    assert q.rescaled(table, None)[("grass", other)]["predict_ips"] == 30.0
    paired = {**table, ("grass", other): {"predict_ips": 30.0, "default_ips": 15.0}}  # timed beside the default
    assert q.rescaled(paired, 60.0)[("grass", other)]["predict_ips"] == 120.0


@pytest.mark.parametrize("bad", [{"n_train": 0}, {"tile": 16}, {"n_test_bad": -1}, {"seed": 1.5}])
def test_bad_sizes_are_one_line_errors(bad, tmp_path):
    with pytest.raises(OddspotError):
        build_quality_dataset(tmp_path, ("brick",), **{**SMALL, **bad})
    with pytest.raises(OddspotError, match="unknown category"):
        half_of("carpet")


def test_stride4_example_config_builds_the_benchmarks_pick():
    from oddspot.cli.common import read_yaml_mapping
    from oddspot.detectors.patchcore_head import PatchCoreConfig

    path = Path(__file__).resolve().parents[1] / "examples" / "patchcore_stride4.yaml"
    config = PatchCoreConfig(**read_yaml_mapping(path))
    assert (config.backbone, config.layers, config.image_size, config.coreset_ratio, config.scoring) == (
        "efficientnet_lite0", ["stage2", "stage3"], 192, 0.01, "topk_mean")


def test_family_aurocs_rank_each_family_against_the_good_images(tmp_path):
    q = _benchmark()
    rows = ["path,label,defect_type,score", "a,0,good,1.0", "b,0,good,3.0", "c,1,scratch,4.0", "d,1,scratch,2.0",
            "e,1,blur,3.0"]
    (tmp_path / "scores.csv").write_text("\n".join(rows) + "\n")
    # scratch: 4 beats both goods, 2 beats one -> 3/4; blur: 3 beats 1 and ties 3 -> 1.5/2
    assert q.family_aurocs(tmp_path / "scores.csv") == {"blur": 0.75, "scratch": 0.75}
