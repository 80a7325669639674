"""Figures the README states, measured: the report's size over 200 test images, and the share of the
textbook coreset loop's distances that the greedy coreset computes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from oddspot.data.demo_dataset import build_demo_dataset, texture_photo

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def test_a_report_over_200_test_images_stays_under_1_mb(tmp_path):
    """The real pipeline on 200 test tiles of 160 px (the demo's size), the whole stored gallery, default thumbnails."""
    from oddspot import inspect
    from oddspot.report import write_report

    data = build_demo_dataset(tmp_path / "data", ("brick",), n_train=4, n_test_good=80, n_test_bad=120, tile=160, seed=0)
    inspect.fit(data, "brick", tmp_path / "run", options={"image_size": 64, "coreset_ratio": 0.25}, split="standard")
    metrics = inspect.evaluate(tmp_path / "run", data, "brick", tmp_path / "eval", bootstrap=0, warn=lambda m: None)
    assert metrics["run"]["n_test"] == 200
    notes: list[str] = []
    report = write_report(tmp_path / "eval", top_k=12, warn=notes.append)  # all the gallery evaluate stored
    html = report.read_text()
    assert html.count('<div class="card">') >= 24, "the gallery (12 per group) is in the report"
    assert report.stat().st_size < 1_000_000, f"{report.stat().st_size / 1e6:.2f} MB"
    assert not notes, notes


def _tiles(n: int, size: int) -> list[np.ndarray]:
    """Random crops of the brick photo (as `benchmarks/patchcore.py` makes them)."""
    photo = texture_photo("brick")
    rng = np.random.default_rng(0)
    ys, xs = rng.integers(0, photo.shape[0] - size, n), rng.integers(0, photo.shape[1] - size, n)
    return [np.ascontiguousarray(photo[y:y + size, x:x + size]) for y, x in zip(ys, xs)]


def test_the_coreset_computes_a_fraction_of_the_textbook_distances():
    """README: the textbook loop computes N x k point-center distances, ours about a third of them at the
    benchmark's size (200 images); on 40 images of 224 px with a 10% coreset it stays under 45%."""
    from oddspot.detectors import PatchCore

    model = PatchCore(image_size=224, coreset_ratio=0.1).fit(_tiles(40, 224))
    st = model.state
    textbook = st["n_train_patches"] * st["memory_bank_size"]
    assert (st["n_train_patches"], st["memory_bank_size"]) == (40 * 28 * 28, 3136)
    share = st["coreset_distance_evaluations"] / textbook
    assert 0.2 < share < 0.45, f"{share:.1%} of the textbook loop's distances"
