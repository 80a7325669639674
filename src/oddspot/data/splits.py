"""Seeded split manifests (JSON), written once and reused, never silently regenerated.

Protocols:
- "validation": train = 80% of train/good; validation = the other 20% plus 30% of the anomalous
  test images (per defect type); test = all test/good plus the remaining anomalous images.
- "standard": the published MVTec AD protocol: fit on all train/good, evaluate on all of test,
  no validation split.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from oddspot.data.mvtec import SampleRef
from oddspot.errors import OddspotError
from oddspot.files import read_json, write_json

PROTOCOLS = ("validation", "standard")
MANIFEST_VERSION = 1


def make_manifest(refs: dict[str, list[SampleRef]], root: Path, protocol: str, seed: int = 0,
                  train_frac: float = 0.8, val_anomalous_frac: float = 0.3) -> dict[str, Any]:
    """Assign every sample of a category to train / validation / test under `protocol`."""
    if protocol not in PROTOCOLS:
        raise OddspotError(f"--split {protocol!r} unknown; use one of {', '.join(PROTOCOLS)}")
    train_refs, test_refs = refs["train"], refs["test"]
    keys_train = [r.key(root) for r in train_refs]
    if protocol == "standard":
        split = {"train": keys_train, "validation": [], "test": [r.key(root) for r in test_refs]}
    else:
        rng = np.random.default_rng(seed)
        order = rng.permutation(len(keys_train))
        n_train = max(1, int(round(train_frac * len(keys_train))))
        train = sorted(keys_train[i] for i in order[:n_train])
        validation = sorted(keys_train[i] for i in order[n_train:])
        test = sorted(r.key(root) for r in test_refs if r.label == 0)
        for defect in sorted({r.defect_type for r in test_refs if r.label == 1}):
            keys = sorted(r.key(root) for r in test_refs if r.label == 1 and r.defect_type == defect)
            perm = rng.permutation(len(keys))
            n_val = int(round(val_anomalous_frac * len(keys)))
            validation += [keys[i] for i in perm[:n_val]]
            test += [keys[i] for i in perm[n_val:]]
        split = {"train": train, "validation": sorted(validation), "test": sorted(test)}
    return {"manifest_version": MANIFEST_VERSION, "protocol": protocol, "seed": seed, **split}


def load_or_create_manifest(path: Path, refs: dict[str, list[SampleRef]], root: Path, protocol: str,
                            seed: int = 0) -> dict[str, Any]:
    """Reuse the manifest at `path` if it exists (checking its protocol), else create and write it."""
    if path.exists():
        manifest = read_json(path, "delete it to regenerate the split")
        if manifest.get("protocol") != protocol:
            raise OddspotError(
                f"{path}: manifest is for --split {manifest.get('protocol')}, not {protocol}; "
                "use the same --split or another --out folder"
            )
        known = {r.key(root) for part in refs.values() for r in part}
        missing = [k for part in ("train", "validation", "test") for k in manifest[part] if k not in known]
        if missing:
            raise OddspotError(f"{path}: manifest lists {len(missing)} files absent from {root} (first: {missing[0]})")
        return manifest
    manifest = make_manifest(refs, root, protocol, seed)
    write_json(path, manifest)
    return manifest


def select(refs: dict[str, list[SampleRef]], root: Path, keys: list[str]) -> list[SampleRef]:
    """The SampleRefs named by manifest keys, in manifest order."""
    by_key = {r.key(root): r for part in refs.values() for r in part}
    return [by_key[k] for k in keys]
