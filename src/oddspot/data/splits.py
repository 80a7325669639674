"""Seeded split manifests (JSON), written once and reused, never silently regenerated.

Protocols:
- "validation": train = 80% of train/good; validation = the other 20% plus 30% of the anomalous
  test images (per defect type); test = all test/good plus the remaining anomalous images.
- "standard": the published MVTec AD protocol: fit on all train/good, evaluate on all of test,
  no validation split.
A dataset with an official validation split of normal images (MVTec AD 2, MVTec LOCO AD: the
listing's "validation") keeps all of train for training under both protocols; its validation
images are the validation split's normal images ("validation" adds 30% of the anomalous test
images to them, as above; "standard" uses them alone, for calibration only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from oddspot.choices import PROTOCOLS
from oddspot.data.mvtec import SampleRef
from oddspot.errors import OddspotError
from oddspot.files import read_json, write_json

MANIFEST_VERSION = 1


def make_manifest(refs: dict[str, list[SampleRef]], root: Path, protocol: str, seed: int = 0,
                  train_frac: float = 0.8, val_anomalous_frac: float = 0.3) -> dict[str, Any]:
    """Assign every sample of a category to train / validation / test under `protocol`."""
    if protocol not in PROTOCOLS:
        raise OddspotError(f"--split {protocol!r} unknown; use one of {', '.join(PROTOCOLS)}")
    train_refs, test_refs = refs["train"], refs["test"]
    keys_train = [r.key(root) for r in train_refs]
    official = sorted(r.key(root) for r in refs.get("validation", []))
    if protocol == "standard":
        split = {"train": keys_train, "validation": official, "test": [r.key(root) for r in test_refs]}
    else:
        rng = np.random.default_rng(seed)
        if official:  # the dataset's own validation images replace the 20% held out of train
            train, validation = sorted(keys_train), list(official)
        else:
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


def read_manifest(path: Path, refs: dict[str, list[SampleRef]], root: Path, protocol: str) -> dict[str, Any]:
    """The manifest at `path`, checked: its version, its protocol is `protocol`, and it names only files
    of `refs`, each in one part only (a file in two parts would leak training data into the test)."""
    manifest = read_json(path, "delete it to regenerate the split")
    version = manifest.get("manifest_version")
    if isinstance(version, bool) or version != MANIFEST_VERSION:
        raise OddspotError(f"{path}: manifest_version {version!r:.40} unsupported (this oddspot reads {MANIFEST_VERSION}); "
                           "delete it to regenerate the split")
    if manifest.get("protocol") != protocol:
        raise OddspotError(
            f"{path}: manifest is for --split {manifest.get('protocol')}, not {protocol}; "
            "use the same --split or another --out folder"
        )
    for part in ("train", "validation", "test"):
        keys = manifest.get(part)
        if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
            raise OddspotError(f"{path}: field {part} must be a list of file names; delete it to regenerate the split")
    seen: set[str] = set()
    for part in ("train", "validation", "test"):
        for k in manifest[part]:
            if k in seen:
                raise OddspotError(f"{path}: {k} is listed twice (again in {part}); a file belongs to one part only, "
                                   "delete it to regenerate the split")
            seen.add(k)
    known = {r.key(root) for part in refs.values() for r in part}
    missing = [k for part in ("train", "validation", "test") for k in manifest[part] if k not in known]
    if missing:
        raise OddspotError(f"{path}: manifest lists {len(missing)} files absent from {root} (first: {missing[0]})")
    return manifest


def load_or_create_manifest(path: Path, refs: dict[str, list[SampleRef]], root: Path, protocol: str,
                            seed: int = 0) -> dict[str, Any]:
    """Reuse the manifest at `path` if it exists (checking its protocol), else create and write it."""
    if path.exists():
        return read_manifest(path, refs, root, protocol)
    manifest = make_manifest(refs, root, protocol, seed)
    write_json(path, manifest)
    return manifest


def fit_manifest(existing: Path, refs: dict[str, list[SampleRef]], root: Path, protocol: str, seed: int = 0,
                 new_split: bool = False) -> tuple[dict[str, Any], str]:
    """The split of a fit into a folder that may already hold one at `existing`, and what was done:
    "drawn" (there was none), "reused" (same protocol and, for a seeded protocol, the same seed) or
    "redrawn" (`new_split`). Any other existing split is a one-line error: a refit never silently
    reuses a split drawn with another seed, nor silently replaces it. Nothing is written here."""
    if not existing.exists():
        return make_manifest(refs, root, protocol, seed), "drawn"
    if new_split:
        return make_manifest(refs, root, protocol, seed), "redrawn"
    manifest = read_json(existing, "pass --new-split to draw a new split, or fit into a new --out folder")
    old = (manifest.get("protocol"), manifest.get("seed"))
    if old[0] != protocol or (protocol != "standard" and (isinstance(old[1], bool) or old[1] != seed)):
        raise OddspotError(f"{existing}: the split there was drawn with --split {old[0]} --seed {old[1]}, not "
                           f"--split {protocol} --seed {seed}; pass --new-split to draw a new one, or fit into a "
                           "new --out folder")
    return read_manifest(existing, refs, root, protocol), "reused"


def select(refs: dict[str, list[SampleRef]], root: Path, keys: list[str]) -> list[SampleRef]:
    """The SampleRefs named by manifest keys, in manifest order."""
    by_key = {r.key(root): r for part in refs.values() for r in part}
    return [by_key[k] for k in keys]
