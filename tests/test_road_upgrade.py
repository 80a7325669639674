"""Road runs written by oddspot 0.1 (format 1): refused with the upgrade hint, then converted exactly."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pytest
from safetensors.torch import save as st_save

from oddspot.data.streethazards import load_split
from oddspot.data.toy_streets import ToyStreetConfig, generate_toy_streets
from oddspot.errors import OddspotError
from oddspot.road.estimator import RoadModel
from oddspot.road.scorer import SCORE_NAMES
from oddspot.runs.registry import load_model
from oddspot.runs.upgrade import upgrade
from test_road_estimator import quick_model

pytestmark = pytest.mark.usefixtures("one_thread")


def write_v1(folder, model: RoadModel) -> None:
    """Write `model` as oddspot 0.1 wrote a finished road run (the same files, names and fields)."""
    folder.mkdir(parents=True)
    scorer, cfg = model.scorer, model.config

    def dump(path, obj):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(obj, indent=2) + "\n")

    (folder / "model.safetensors").write_bytes(st_save(model.network.inference_state_dict()))
    dump(folder / "config.json", {
        "format_version": 1, "kind": "oddspot.road", "oddspot_version": "0.1.0",
        "model": {**cfg.model.to_dict(), "extra": {}}, "data": "toy", "classes": ["unlabeled"] * 13,
        "train": cfg.train.to_dict(), "seed": cfg.train.seed, "class_weights": [1.0] * 13,
        "best": {"epoch": 1, "miou": 0.1, "iou": {}}})
    dump(folder / "history.json", {"epochs": []})
    dump(folder / "state" / "last.json", {"format_version": 1, "epoch": 0})
    dump(folder / "train_summary.json", {"run": str(folder), "best_epoch": 1, "oddspot_version": "0.1.0"})
    s = folder / "scores"
    sml, maha, fusion = scorer.sml, scorer.mahalanobis, scorer.fusion
    dump(s / "sml.json", {"format_version": 1, "score": "sml", "num_classes": sml.num_classes, "min_pixels": sml.min_pixels,
                          "mean": sml.mean.tolist(), "std": sml.std.tolist(), "counts": sml.counts,
                          "fallback_classes": sml.fallback_classes})
    (s / "mahalanobis.safetensors").write_bytes(st_save({"means": maha.means, "precision": maha.precision}))
    dump(s / "mahalanobis.json", {"format_version": 1, "score": "mahalanobis", "num_classes": maha.num_classes,
                                  "pixels_per_class": maha.pixels_per_class, "seed": maha.seed,
                                  "shrinkage": maha.shrinkage, "ignore_index": maha.ignore_index,
                                  "counts": maha.counts, "fitted_on": "training pixels"})
    dump(s / "fusion.json", {"format_version": 1, "score": "fusion", "components": list(fusion.COMPONENTS),
                             "temperature": fusion.temperature, "sigma": fusion.sigma, "mean": fusion.mean,
                             "std": fusion.std, "weights": fusion.weights, "weight_source": fusion.weight_source,
                             "n_fit_pixels": fusion.n_fit, "fitted_on": "validation pixels"})
    dump(s / "scores.json", {"format_version": 1, "config": asdict(cfg.scores), "scores": list(SCORE_NAMES),
                             "thresholds": scorer.thresholds})


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    root = tmp_path_factory.mktemp("toy")
    generate_toy_streets(root, ToyStreetConfig(height=48, width=96, n_train=3, n_val=2, n_test=2, seed=4))
    return root


def test_v1_run_is_refused_then_upgraded_bit_identically(toy, tmp_path):
    model = quick_model(toy)
    folder = tmp_path / "run"
    write_v1(folder, model)
    for load in (RoadModel.load, load_model):
        with pytest.raises(OddspotError, match=r"oddspot 0.1 \(format 1\); convert it with `oddspot upgrade"):
            load(folder)

    upgrade(folder)
    names = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert names == ["history.json", "model.json", "model.safetensors", "state/last.json"]
    back = RoadModel.load(folder, device="cpu")
    assert back.state["upgraded_from"] == {"oddspot_version": "0.1.0", "format_version": 1}
    assert back.config.to_dict() == model.config.to_dict()

    test = load_split(toy, "test")
    images = [test[i].image for i in range(len(test))]
    a, b = model.predict(images), back.predict(images)
    assert np.array_equal(a.scores, b.scores)
    assert all(np.array_equal(x, y) for x, y in zip(a.maps, b.maps))
    assert all(np.array_equal(x, y) for x, y in zip(a.masks, b.masks))
    assert b.normalized is None and b.decisions is None  # 0.1 had no image threshold
    for name, maps in model.score_maps(images).items():
        assert all(np.array_equal(x, y) for x, y in zip(maps, back.score_maps(images, (name,))[name])), name
    with pytest.raises(OddspotError, match="already format 2"):
        upgrade(folder)


def test_damaged_v1_runs_are_not_touched(toy, tmp_path):
    model = quick_model(toy)
    folder = tmp_path / "run"
    write_v1(folder, model)
    (folder / "scores" / "fusion.json").unlink()
    with pytest.raises(OddspotError, match="fusion.json: file not found"):
        upgrade(folder)
    assert (folder / "config.json").exists() and not (folder / "model.json").exists()
    other = tmp_path / "other"
    write_v1(other, model)
    weights = {k: v for k, v in model.network.inference_state_dict().items() if k != "classifier.bias"}
    (other / "model.safetensors").write_bytes(st_save(weights))
    with pytest.raises(OddspotError, match="missing tensor network.classifier.bias"):
        upgrade(other)
    assert (other / "config.json").exists()
