"""`oddspot compare`: paired bootstrap of two evaluations, checked against a slow hand loop."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner
from sklearn.metrics import average_precision_score, roc_auc_score

from oddspot.cli import cli
from oddspot.errors import OddspotError
from oddspot.metrics import AUPRO
from oddspot.metrics.bootstrap import PixelStats, resample_indices
from oddspot.metrics.paired import p_value, paired_image_bootstrap
from oddspot.records.compare import compare
from oddspot.records.evaluation import write_csv, write_metrics, write_pixel_stats


def f1_max(y, s):
    best = 0.0
    for t in np.unique(s):
        pred = s >= t
        tp = np.sum(pred & y)
        best = max(best, 2 * tp / (pred.sum() + y.sum()))
    return best


def fake_evaluation(folder, keys, labels, scores, maps=None, masks=None):
    """An evaluation record as `oddspot evaluate` writes it (only the files compare reads)."""
    folder.mkdir(parents=True, exist_ok=True)
    write_metrics(folder, "inspect", {"image": {}, "pixel": {"aupro_fpr_limit": 0.3}})
    write_csv(folder / "scores.csv", ["path", "label", "defect_type", "score"],
              [(k, int(y), "good" if y == 0 else "crack", float(s)) for k, y, s in zip(keys, labels, scores)])
    if maps is not None:
        stats = PixelStats()
        for a, m in zip(maps, masks):
            stats.add(a, m)
        write_pixel_stats(folder, stats, keys)
    return folder


def data(n=30, seed=0):
    rng = np.random.default_rng(seed)
    labels = (np.arange(n) % 3 != 0).astype(int)
    a = np.round(rng.random(n) + 0.5 * labels, 2)
    b = np.round(rng.random(n) + 0.2 * labels, 2)
    masks = []
    for i in range(n):
        m = np.zeros((8, 8), bool)
        if labels[i]:
            m[i % 5:i % 5 + 2, 2:5] = True
        masks.append(m)
    maps_a = [np.round((rng.random((8, 8)) + 0.5 * m) * 16).astype(np.float32) / 16 for m in masks]
    maps_b = [np.round((rng.random((8, 8)) + 0.2 * m) * 16).astype(np.float32) / 16 for m in masks]
    keys = [f"test/{'good' if y == 0 else 'crack'}/{i:03d}.png" for i, y in enumerate(labels)]
    return keys, labels, a, b, maps_a, maps_b, masks


def pixel_reference(maps, masks, index):
    s = np.concatenate([maps[i].ravel() for i in index])
    y = np.concatenate([masks[i].ravel() for i in index])
    if y.all() or not y.any():
        return {"auroc": np.nan, "ap": np.nan, "aupro": np.nan}
    pro = AUPRO(0.3)
    pro.update(np.stack([maps[i] for i in index]), np.stack([masks[i] for i in index]))
    return {"auroc": roc_auc_score(y, s), "ap": average_precision_score(y, s), "aupro": pro.compute()["aupro"]}


def test_paired_bootstrap_equals_a_slow_reference_on_30_images(tmp_path):
    keys, labels, a, b, maps_a, maps_b, masks = data()
    n, seed = 25, 3
    fa = fake_evaluation(tmp_path / "a", keys, labels, a, maps_a, masks)
    fb = fake_evaluation(tmp_path / "b", keys, labels, b, maps_b, masks)
    got = {(r["level"], r["metric"]): r for r in compare(fa, fb, n=n, seed=seed)["rows"]}
    y = labels.astype(bool)
    # the resamples, drawn as the library draws them (one seeded generator, whole blocks)
    image_idx = next(resample_indices(30, n, seed, n))
    pixel_idx = next(resample_indices(30, n, seed, n))
    ref: dict[tuple[str, str], list[float]] = {k: [] for k in got}
    for r in range(n):
        i = image_idx[r]
        if y[i].all() or not y[i].any():
            for m in ("auroc", "ap", "f1_max"):
                ref[("image", m)].append(np.nan)
        else:
            ref[("image", "auroc")].append(roc_auc_score(y[i], a[i]) - roc_auc_score(y[i], b[i]))
            ref[("image", "ap")].append(average_precision_score(y[i], a[i]) - average_precision_score(y[i], b[i]))
            ref[("image", "f1_max")].append(f1_max(y[i], a[i]) - f1_max(y[i], b[i]))
        pa, pb = pixel_reference(maps_a, masks, pixel_idx[r]), pixel_reference(maps_b, masks, pixel_idx[r])
        for m in ("auroc", "ap", "aupro"):
            ref[("pixel", m)].append(pa[m] - pb[m])
    full = np.arange(30)
    point = {("image", "auroc"): roc_auc_score(y, a) - roc_auc_score(y, b),
             ("image", "ap"): average_precision_score(y, a) - average_precision_score(y, b),
             ("image", "f1_max"): f1_max(y, a) - f1_max(y, b)}
    pa, pb = pixel_reference(maps_a, masks, full), pixel_reference(maps_b, masks, full)
    point.update({("pixel", m): pa[m] - pb[m] for m in ("auroc", "ap", "aupro")})
    for key, row in got.items():
        d = np.asarray(ref[key])
        finite = d[~np.isnan(d)]
        assert row["difference"] == pytest.approx(point[key], abs=1e-12), key
        assert row["ci"] == pytest.approx(list(np.percentile(finite, [2.5, 97.5])), abs=1e-12), key
        below, above = np.sum(finite <= 0), np.sum(finite >= 0)
        assert row["p_value"] == pytest.approx(min(1.0, 2 * min(1 + below, 1 + above) / (1 + finite.size))), key
        assert row["n_used"] == finite.size


def test_identical_evaluations_differ_by_exactly_zero_with_p_1(tmp_path):
    keys, labels, a, _, maps_a, _, masks = data(seed=1)
    fa = fake_evaluation(tmp_path / "a", keys, labels, a, maps_a, masks)
    fb = fake_evaluation(tmp_path / "b", keys[::-1], labels[::-1], a[::-1], maps_a[::-1], masks[::-1])  # other order
    result = compare(fa, fb, tmp_path / "out", n=200, seed=5)
    assert len(result["rows"]) == 6
    for row in result["rows"]:
        assert row["difference"] == 0.0 and row["ci"] == [0.0, 0.0] and row["p_value"] == 1.0
        assert row["verdict"].startswith("no evidence of a difference")
    saved = json.loads((tmp_path / "out" / "comparison.json").read_text())
    assert saved["bootstrap"] == {"n": 200, "level": 0.95, "seed": 5, "method": "paired percentile, items resampled"}
    assert (tmp_path / "out" / "comparison.csv").read_text().startswith("level,metric,a,b,difference")


def test_a_clear_difference_gets_a_verdict_for_a():
    rng = np.random.default_rng(0)
    y = np.arange(60) % 2 == 0
    a = y + 0.1 * rng.random(60)
    b = rng.random(60)
    rows = {r["metric"]: r for r in paired_image_bootstrap(a, b, y, n=500, seed=0)}
    assert rows["auroc"]["better"] == "A" and rows["auroc"]["p_value"] < 0.01
    assert rows["auroc"]["verdict"].startswith("A is better on image AUROC: +")
    assert p_value(np.array([1.0, 2.0, -1.0])) == pytest.approx(2 * 2 / 4)


def test_different_test_sets_are_a_one_line_error(tmp_path):
    keys, labels, a, b, *_ = data(n=9)
    fa = fake_evaluation(tmp_path / "a", keys, labels, a)
    fb = fake_evaluation(tmp_path / "b", keys[:-1] + ["other.png"], labels, b)
    with pytest.raises(OddspotError, match="has no row for 'test/crack/008.png'"):
        compare(fa, fb)
    flipped = labels.copy()
    flipped[1] = 1 - flipped[1]
    fc = fake_evaluation(tmp_path / "c", keys, flipped, b)
    with pytest.raises(OddspotError, match="test/crack/001.png' has label 0"):
        compare(fa, fc)
    result = CliRunner().invoke(cli, ["compare", str(fa), str(fc)])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1


def test_cli_prints_a_table_and_notes_missing_pixel_statistics(tmp_path):
    keys, labels, a, b, *_ = data(n=12)
    fa = fake_evaluation(tmp_path / "a", keys, labels, a)
    fb = fake_evaluation(tmp_path / "b", keys, labels, b)
    result = CliRunner().invoke(cli, ["compare", str(fa), str(fb), "-n", "100", "-o", str(tmp_path / "out")])
    assert result.exit_code == 0, result.output
    assert "image auroc" in result.output and "no pixel-level comparison" in result.output
    assert (tmp_path / "out" / "comparison.json").exists()


def test_video_frames_are_keyed_by_video_and_frame(tmp_path):
    rng = np.random.default_rng(2)
    folders = []
    for name in ("a", "b"):
        folder = tmp_path / name
        folder.mkdir()
        write_metrics(folder, "video", {"frame": {}})
        write_csv(folder / "scores.csv", ["video", "frame", "label", "score"],
                  [(v, f, int(f >= 5), float(rng.random() + (f >= 5))) for v in ("01", "02") for f in range(10)])
        folders.append(folder)
    result = compare(*folders, n=50)
    assert result["n_items"] == 20 and "correlated" in result["notes"][0]
