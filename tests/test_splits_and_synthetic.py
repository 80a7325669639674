"""Split manifests are seeded, disjoint and reused; synthetic defects come with exact masks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from oddspot.data.mvtec import read_mvtec
from oddspot.data.splits import load_or_create_manifest, make_manifest
from oddspot.data.synthetic import KINDS, synthesize_anomaly
from oddspot.errors import OddspotError


def test_validation_protocol_is_disjoint_and_seeded(tiny_mvtec):
    root = tiny_mvtec / "brick"
    refs = read_mvtec(tiny_mvtec, "brick")
    a = make_manifest(refs, root, "validation", seed=3)
    b = make_manifest(refs, root, "validation", seed=3)
    assert a == b
    parts = [set(a[k]) for k in ("train", "validation", "test")]
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert len(a["train"]) == 8 and sum(k.startswith("train/") for k in a["validation"]) == 2
    assert all(k.startswith("test/") for k in a["test"])


def test_standard_protocol_uses_everything(tiny_mvtec):
    refs = read_mvtec(tiny_mvtec, "brick")
    m = make_manifest(refs, tiny_mvtec / "brick", "standard")
    assert len(m["train"]) == 10 and m["validation"] == [] and len(m["test"]) == 9


def test_manifest_is_reused_not_regenerated(tiny_mvtec, tmp_path):
    root = tiny_mvtec / "brick"
    refs = read_mvtec(tiny_mvtec, "brick")
    path = tmp_path / "split.json"
    first = load_or_create_manifest(path, refs, root, "validation", seed=0)
    edited = dict(first, train=first["train"][:-1], validation=first["validation"] + first["train"][-1:])
    path.write_text(json.dumps(edited))
    assert load_or_create_manifest(path, refs, root, "validation", seed=99) == edited
    with pytest.raises(OddspotError, match="standard"):
        load_or_create_manifest(path, refs, root, "standard")


@pytest.mark.parametrize("kind", KINDS)
def test_synthetic_defect_changes_only_masked_pixels(kind):
    rng = np.random.default_rng(5)
    image = (np.random.default_rng(1).random((64, 64, 3)) * 255).astype(np.uint8)
    foreign = np.full((80, 80, 3), 7, np.uint8)
    out, mask, used = synthesize_anomaly(image, rng, kind=kind, foreign=foreign)
    assert used == kind and mask.dtype == bool and 0 < mask.mean() < 0.2
    assert np.array_equal(out[~mask], image[~mask])
    assert np.abs(out[mask].astype(int) - image[mask].astype(int)).mean() > 5


def test_synthetic_defects_are_seeded():
    image = np.full((48, 48, 3), 100, np.uint8)
    a = synthesize_anomaly(image, np.random.default_rng(2))
    b = synthesize_anomaly(image, np.random.default_rng(2))
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_demo_dataset_is_identical_across_processes(tmp_path):
    """Python's hash seed changes set order between processes; the dataset must not depend on it."""
    import hashlib
    import os
    import subprocess
    import sys

    digests = []
    for hash_seed in ("1", "2"):
        out = tmp_path / hash_seed
        code = ("import sys; from oddspot.data.demo_dataset import build_demo_dataset; "
                "build_demo_dataset(sys.argv[1], ('grass',), n_train=1, n_test_good=1, n_test_bad=6, tile=48)")
        subprocess.run([sys.executable, "-c", code, str(out)], check=True, env={**os.environ, "PYTHONHASHSEED": hash_seed})
        files = sorted(p for p in out.rglob("*.png"))
        digests.append([(p.relative_to(out).as_posix(), hashlib.sha256(p.read_bytes()).hexdigest()) for p in files])
    assert digests[0] == digests[1]
