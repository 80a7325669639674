"""Shared fixtures: a tiny MVTec-layout dataset made by the project's own generator."""

from __future__ import annotations

import os
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import pytest
import torch

os.environ.setdefault("ODDSPOT_QUIET", "1")
torch.set_num_threads(2)


@pytest.fixture(scope="session")
def tiny_mvtec(tmp_path_factory) -> Path:
    """One category ('brick'), 10 train, 3 good + 6 defective test tiles of 64 px."""
    from oddspot.data.demo_dataset import build_demo_dataset

    root = tmp_path_factory.mktemp("mvtec")
    return build_demo_dataset(root, ("brick",), n_train=10, n_test_good=3, n_test_bad=6, tile=64, seed=1)


@pytest.fixture(scope="session")
def small_options() -> dict:
    """PatchCore options that keep tests fast."""
    return {"image_size": 64, "coreset_ratio": 0.25, "batch_size": 4}


@pytest.fixture(scope="module")
def one_thread():
    """Tiny tensors run fastest on one thread, and a busy CI machine does not stall a thread team."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
