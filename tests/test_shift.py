"""Shift generator: mask alignment per geometric transform, severity ordering, manifest round trip."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

from oddspot.data.image_io import read_image, read_mask
from oddspot.data.mvtec import read_mvtec
from oddspot.data.shift import (
    FAMILIES,
    apply_shift,
    draw_params,
    geometric_matrix,
    read_shift_manifest,
    shift_dataset,
)
from oddspot.errors import OddspotError

H = W = 96


def disk_image(cy: float, cx: float, r: float) -> tuple[np.ndarray, np.ndarray]:
    """A white disk on a black background, and its mask (known analytically)."""
    yy, xx = np.mgrid[0:H, 0:W]
    mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r**2
    image = np.repeat((mask * 255).astype(np.uint8)[..., None], 3, axis=2)
    return image, mask


def centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)


def expected_center(params: dict, source: tuple[float, float]) -> np.ndarray:
    a, b = geometric_matrix(params, (H, W))
    return np.linalg.solve(a, np.asarray(source) - b)


GEOMETRIC_CASES = {
    # translation moves content by (dy, dx) image sides: +9.6 px down, -4.8 px left
    "translation": ({"translation": {"dy": 0.1, "dx": -0.05}}, (30.0 + 9.6, 60.0 - 4.8)),
    # 90 degrees counter-clockwise: a point right of the centre goes above it
    "rotation": ({"rotation": {"degrees": 90.0}}, (47.5 - 20.0, 47.5)),
    # a centred crop keeping side 0.8 zooms in: offsets from the centre grow by 1 / 0.8
    "crop": ({"crop": {"area": 0.64, "side": 0.8, "center_y": 0.0, "center_x": 0.0}}, (47.5 - 15 / 0.8, 47.5 + 10 / 0.8)),
}
SOURCES = {"translation": (30.0, 60.0), "rotation": (47.5, 67.5), "crop": (32.5, 57.5)}


@pytest.mark.parametrize("name", sorted(GEOMETRIC_CASES))
def test_mask_stays_aligned_under_each_geometric_transform(name):
    params, analytic = GEOMETRIC_CASES[name]
    image, mask = disk_image(*SOURCES[name], r=9)
    out, out_mask = apply_shift(image, mask, {"seed": 0, **params})
    assert out_mask.dtype == bool and set(np.unique(out_mask)) <= {False, True}
    # the disk lands where the transform says, analytically and by the matrix
    np.testing.assert_allclose(centroid(out_mask), analytic, atol=0.6)
    np.testing.assert_allclose(expected_center(params, SOURCES[name]), analytic, atol=1e-6)
    # image and mask moved together: the bright region is the mask (up to a 1-px rim of interpolation)
    bright = out[..., 0] >= 128
    iou = (bright & out_mask).sum() / (bright | out_mask).sum()
    assert iou > 0.9
    np.testing.assert_allclose(centroid(bright), centroid(out_mask), atol=0.5)


def test_mask_aligned_under_combined_random_geometry():
    image, mask = disk_image(40, 50, 10)
    for seed in range(5):
        params = draw_params(seed, "severe", only="geometric")
        out, out_mask = apply_shift(image, mask, params)
        np.testing.assert_allclose(centroid(out_mask), expected_center(params, (40, 50)), atol=0.6)
        bright = out[..., 0] >= 128
        assert (bright & out_mask).sum() / (bright | out_mask).sum() > 0.9


def test_photometric_shift_leaves_mask_untouched():
    image, mask = disk_image(40, 50, 10)
    params = draw_params(3, "severe", only="photometric")
    out, out_mask = apply_shift(image, mask, params)
    assert np.array_equal(out_mask, mask)
    assert not np.array_equal(out, image)


def textured(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    base = rng.integers(60, 200, size=(12, 12, 3)).astype(np.float64)
    return np.clip(np.kron(base, np.ones((8, 8, 1))) + rng.normal(0, 10, (H, W, 3)), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("only", [None, *FAMILIES])
def test_severe_shifts_image_statistics_more_than_mild(only):
    images = [textured(s) for s in range(8)]

    def change(severity: str) -> float:
        diffs = []
        for i, img in enumerate(images):
            out, _ = apply_shift(img, None, draw_params(100 + i, severity, only))
            x, y = img.astype(float), out.astype(float)
            # pixel-wise change plus the change of global statistics (mean, contrast)
            diffs.append(np.abs(x - y).mean() + abs(x.mean() - y.mean()) + abs(x.std() - y.std()))
        return float(np.mean(diffs))

    mild, moderate, severe = change("mild"), change("moderate"), change("severe")
    assert mild < moderate < severe


def test_seed_of_image_i_is_base_plus_i_and_draws_are_reproducible():
    assert draw_params(7, "mild") == draw_params(7, "mild")
    assert draw_params(7, "mild") != draw_params(8, "mild")
    assert draw_params(7, "mild")["seed"] == 7
    # the same draws, scaled: severe rotation = 3 x mild rotation for the same seed
    assert math.isclose(draw_params(7, "severe")["rotation"]["degrees"], 3 * draw_params(7, "mild")["rotation"]["degrees"])


def test_only_restricts_to_one_family():
    p = draw_params(1, "moderate", only="geometric")
    assert set(p) == {"seed", "rotation", "crop", "translation"}
    assert set(draw_params(1, only="blur")) == {"seed", "blur"}
    with pytest.raises(OddspotError, match="--only"):
        draw_params(1, only="fisheye")
    with pytest.raises(OddspotError, match="--severity"):
        draw_params(1, severity="extreme")


def test_illumination_on_about_half_the_images():
    hits = sum("illumination" in draw_params(s, only="illumination") for s in range(400))
    assert 160 < hits < 240


def test_dataset_copy_and_manifest_round_trip(tiny_mvtec, tmp_path):
    out = tmp_path / "shifted"
    manifest = shift_dataset(tiny_mvtec, out, severity="moderate", seed=5)
    on_disk = read_shift_manifest(out)
    assert on_disk == json.loads(json.dumps(manifest))
    refs, shifted_refs = read_mvtec(tiny_mvtec, "brick"), read_mvtec(out, "brick")
    # same file names in every split, so split manifests keyed by relative path still apply
    for part in ("train", "test"):
        assert [r.path.relative_to(out) for r in shifted_refs[part]] == [r.path.relative_to(tiny_mvtec) for r in refs[part]]
    entries = on_disk["images"]
    assert [e["index"] for e in entries] == list(range(len(entries)))
    assert all(e["params"]["seed"] == 5 + e["index"] for e in entries)
    # every shifted file is reproduced exactly from the original and its recorded parameters
    for e in entries[::3] + [e for e in entries if e["mask"]][:3]:
        image = read_image(tiny_mvtec / e["path"])
        mask = read_mask(tiny_mvtec / e["mask"]) if e["mask"] else None
        again, again_mask = apply_shift(image, mask, e["params"])
        assert np.array_equal(again, read_image(out / e["path"]))
        if e["mask"]:
            shifted_mask = read_mask(out / e["mask"])
            assert np.array_equal(again_mask, shifted_mask) and shifted_mask.any()
    assert (out / "dataset.json").exists()


def test_unreadable_image_is_reported_and_skipped(tiny_mvtec, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(tiny_mvtec, data)
    (data / "brick" / "train" / "good" / "zz_broken.png").write_bytes(b"not a png")
    warnings: list[str] = []
    manifest = shift_dataset(data, tmp_path / "out", severity="mild", warn=warnings.append)
    assert len(warnings) == 1 and "zz_broken.png" in warnings[0]
    assert [e["path"] for e in manifest["errors"]] == ["brick/train/good/zz_broken.png"]
    assert not (tmp_path / "out" / "brick" / "train" / "good" / "zz_broken.png").exists()


def test_cli_shift(tiny_mvtec, tmp_path):
    from oddspot.cli import cli

    out = tmp_path / "cli_shift"
    result = CliRunner().invoke(cli, ["shift", str(tiny_mvtec), "--out", str(out), "--severity", "severe",
                                      "--only", "illumination", "--seed", "3"])
    assert result.exit_code == 0, result.output
    manifest = read_shift_manifest(out)
    assert manifest["severity"] == "severe" and manifest["only"] == "illumination" and manifest["seed"] == 3
    bad = CliRunner().invoke(cli, ["shift", str(tmp_path / "nowhere"), "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "error:" in bad.output
