"""Decoding of every common image flavour, masks, and the MVTec / folder readers."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from oddspot.data import read_image, read_mask
from oddspot.data.mvtec import read_folder, read_mvtec
from oddspot.errors import OddspotError


@pytest.mark.parametrize("mode", ["L", "LA", "RGBA", "P", "I;16", "RGB", "CMYK"])
def test_every_mode_decodes_to_rgb_uint8(tmp_path, mode):
    rgb = (np.random.default_rng(0).random((12, 10, 3)) * 255).astype(np.uint8)
    img = Image.fromarray(rgb)
    if mode == "I;16":
        img = Image.fromarray(rgb[..., 0].astype(np.uint16) * 257)
    elif mode == "P":
        img = img.quantize(16)
    else:
        img = img.convert(mode)
    suffix = ".jpg" if mode == "CMYK" else ".png"
    path = tmp_path / f"x{suffix}"
    img.save(path)
    out = read_image(path)
    assert out.shape == (12, 10, 3) and out.dtype == np.uint8


def test_sixteen_bit_is_scaled_not_clipped(tmp_path):
    arr = np.full((4, 4), 65535, np.uint16)
    Image.fromarray(arr).save(tmp_path / "w.png")
    assert read_image(tmp_path / "w.png").min() == 255


def test_truncated_image_names_the_file(tmp_path):
    path = tmp_path / "broken.png"
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(path)
    path.write_bytes(path.read_bytes()[:40])
    with pytest.raises(OddspotError, match="broken.png"):
        read_image(path)


def test_mask_is_bool_and_size_checked(tmp_path):
    m = np.zeros((8, 6), np.uint8)
    m[2:4, 1:3] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    mask = read_mask(tmp_path / "m.png")
    assert mask.dtype == bool and mask.sum() == 4
    with pytest.raises(OddspotError, match="m.png"):
        read_mask(tmp_path / "m.png", shape=(8, 7))


def test_mvtec_reader_lists_train_test_and_masks(tiny_mvtec):
    refs = read_mvtec(tiny_mvtec, "brick")
    assert len(refs["train"]) == 10 and len(refs["test"]) == 9
    bad = [r for r in refs["test"] if r.label == 1]
    assert len(bad) == 6 and all(r.mask_path is not None and r.mask_path.exists() for r in bad)
    sample = bad[0].load()
    assert sample.mask is not None and sample.mask.any()


def test_unknown_category_lists_known_ones(tiny_mvtec):
    with pytest.raises(OddspotError, match="brick"):
        read_mvtec(tiny_mvtec, "carpet")


def test_folder_layout_matches_masks_by_stem(tmp_path):
    for d in ("good", "bad", "masks"):
        (tmp_path / d).mkdir()
    img = np.zeros((8, 8, 3), np.uint8)
    Image.fromarray(img).save(tmp_path / "good" / "a.png")
    Image.fromarray(img).save(tmp_path / "bad" / "b.png")
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(tmp_path / "masks" / "b_mask.png")
    refs = read_folder(tmp_path / "good", tmp_path / "bad", tmp_path / "masks")
    assert refs["test"][0].mask_path.name == "b_mask.png"


def test_results_are_written_with_usual_permissions(tmp_path):
    import os

    from oddspot.files import write_json

    write_json(tmp_path / "a.json", {"x": 1})
    umask = os.umask(0)
    os.umask(umask)
    assert (tmp_path / "a.json").stat().st_mode & 0o777 == 0o666 & ~umask


def test_mvtec_reader_skips_hidden_files(tiny_mvtec, tmp_path):
    import shutil

    root = tmp_path / "copy"
    shutil.copytree(tiny_mvtec, root)
    (root / "brick" / "train" / "good" / "._000.png").write_bytes(b"AppleDouble metadata, not an image")
    (root / "brick" / "test" / "good" / ".DS_Store.png").write_bytes(b"")
    refs = read_mvtec(root, "brick")
    assert len(refs["train"]) == 10 and len(refs["test"]) == 9


def test_recursive_listing_follows_linked_folders_once_and_names_what_it_skips(tmp_path):
    from oddspot.data.image_io import is_image_file, list_images, visible_files

    real = tmp_path / "elsewhere"
    real.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(real / "a.png")
    (real / "clip.gif").write_bytes(b"GIF89a")
    top = tmp_path / "top"
    top.mkdir()
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(top / "b.png")
    (top / "linked").symlink_to(real, target_is_directory=True)
    (real / "loop").symlink_to(top, target_is_directory=True)  # a link back up the tree: walked once
    (top / ".DS_Store").write_bytes(b"x")
    assert [p.relative_to(top).as_posix() for p in list_images(top, recursive=True)] == ["b.png", "linked/a.png"]
    assert [p.name for p in visible_files(top, recursive=True) if not is_image_file(p)] == ["clip.gif"]
    assert [p.name for p in list_images(top)] == ["b.png"]


def test_predict_names_the_files_it_does_not_read(tmp_path):
    from oddspot.inspect.scoring import collect_inputs

    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(tmp_path / "a.png")
    (tmp_path / "b.gif").write_bytes(b"GIF89a")
    (tmp_path / "notes.txt").write_text("x")
    said: list[str] = []
    assert [p.name for p, _ in collect_inputs([tmp_path], said.append)] == ["a.png"]
    assert len(said) == 1 and "skipped 2 files" in said[0] and "1 .gif, 1 .txt" in said[0]
