"""Inspect models on the run contract: one folder, calibration inside, checked tensors, 0.1 folders upgraded."""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from safetensors.numpy import save_file

from oddspot import inspect
from oddspot.data.mvtec import read_mvtec
from oddspot.detectors import Cascade, PaDiM, PatchCore
from oddspot.errors import OddspotError
from oddspot.files import write_json
from oddspot.runs.contract import Record, load_record, save_record
from oddspot.runs.registry import load_model
from oddspot.runs.upgrade import upgrade

FAST = {"image_size": 64, "coreset_ratio": 0.25, "batch_size": 4}
GATE = {"image_size": 32, "coreset_ratio": 0.25, "batch_size": 4}


@pytest.fixture(scope="module")
def samples(tiny_mvtec):
    refs = read_mvtec(tiny_mvtec, "brick")
    return [r.load() for r in refs["train"]], [r.load() for r in refs["test"]]


@pytest.fixture(scope="module")
def models(samples):
    """One calibrated model of every inspect kind (validation = the tiny test split)."""
    train, test = samples
    made = {"patchcore": PatchCore(**FAST), "padim": PaDiM(image_size=64, n_features=40, batch_size=4),
            "cascade": Cascade(localizer_options=FAST, gate_options=GATE)}
    for model in made.values():
        model.fit(train)
        assert inspect.calibrate_model(model, test) is not None
    return made


def same_prediction(a, b) -> None:
    assert np.array_equal(a.scores, b.scores) and np.array_equal(a.normalized, b.normalized)
    assert np.array_equal(a.decisions, b.decisions)
    assert all(np.array_equal(x, y) for x, y in zip(a.maps, b.maps)) and len(a.maps) == len(b.maps)
    assert all(np.array_equal(x, y) for x, y in zip(a.masks, b.masks)) and len(a.masks) == len(b.masks)


# -- format 2 ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", ["patchcore", "padim", "cascade"])
def test_saved_folder_holds_everything_and_predicts_identically(models, samples, tmp_path, kind):
    model, test = models[kind], samples[1]
    model.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.json", "model.safetensors"]
    meta = json.loads((tmp_path / "model.json").read_text())
    assert (meta["task"], meta["kind"], meta["format_version"]) == ("inspect", kind, 2)
    assert meta["postprocess"] == model.postprocess.to_dict() and meta["state"]["map_display_max"] > 0
    again = load_model(tmp_path, "inspect")
    assert type(again) is type(model) and again.postprocess.to_dict() == model.postprocess.to_dict()
    same_prediction(again.predict(test), model.predict(test))


def test_cascade_nests_its_parts_in_one_record(models):
    record = models["cascade"].to_record()
    assert {"gate.memory_bank", "localizer.memory_bank"} == set(record.tensors)
    assert record.config["gate_options"]["image_size"] == 32 and record.config["localizer_options"]["image_size"] == 64
    assert set(record.state) >= {"gate", "localizer", "thresholds", "map_display_max"}


def test_calibration_from_model_json_is_applied_by_predict(models, samples):
    model, test = models["patchcore"], samples[1]
    cal = model.postprocess
    pred = model.predict(test)  # Samples are accepted as well as arrays
    assert np.array_equal(pred.normalized, cal.image(pred.scores)) and np.array_equal(pred.decisions, cal.decide(pred.scores))
    assert all(np.array_equal(m, a >= cal.pixel_threshold) for m, a in zip(pred.masks, pred.maps))
    no_maps = model.predict([s.image for s in test], maps=False)
    assert no_maps.maps is None and no_maps.masks is None and np.array_equal(no_maps.decisions, pred.decisions)
    bare = PatchCore.from_record(Record(**{**vars(model.to_record()), "postprocess": None}), backbone=model.backbone)
    raw = bare.predict(test[:2])
    assert raw.normalized is None and raw.decisions is None and raw.masks is None


def _edit_json(folder: Path, edit) -> None:
    meta = json.loads((folder / "model.json").read_text())
    edit(meta)
    (folder / "model.json").write_text(json.dumps(meta))


@pytest.mark.parametrize("kind, edit, needle", [
    ("patchcore", lambda m: m["state"].update(feature_dim=7), "memory_bank"),
    ("patchcore", lambda m: m["config"].update(coreset_ratio=3), "coreset_ratio"),
    ("patchcore", lambda m: m["config"].update(extra=1), "unknown option"),
    ("patchcore", lambda m: m["postprocess"]["image"].update(low=1e9), "postprocess.image"),
    ("patchcore", lambda m: m["state"].update(map_display_max="big"), "map_display_max"),
    ("padim", lambda m: m["state"].update(grid=[3, 3]), "'mean'"),
    ("padim", lambda m: m["state"].update(n_features=41), "'channels'"),
    ("cascade", lambda m: m["state"]["thresholds"].pop("low"), "thresholds"),
    ("cascade", lambda m: m["state"]["gate"].update(memory_bank_size=1), "gate"),
    ("cascade", lambda m: m["config"].update(localizer="knn"), "localizer"),
])
def test_inconsistent_folder_is_a_one_line_error(models, tmp_path, kind, edit, needle):
    models[kind].save(tmp_path)
    _edit_json(tmp_path, edit)
    with pytest.raises(OddspotError, match=needle) as info:
        load_model(tmp_path, "inspect", backbone=models[kind].backbone)
    assert "\n" not in str(info.value) and str(tmp_path) in str(info.value)


def test_wrong_dtype_or_missing_tensor_is_refused(models, tmp_path):
    record = models["patchcore"].to_record()
    record.tensors = {"memory_bank": record.tensors["memory_bank"].astype(np.float64)}
    save_record(tmp_path / "f64", record)
    with pytest.raises(OddspotError, match="float32"):
        load_model(tmp_path / "f64", backbone=models["patchcore"].backbone)
    record.tensors = {"bank": record.tensors["memory_bank"]}
    save_record(tmp_path / "renamed", record)
    with pytest.raises(OddspotError, match="'memory_bank' missing"):
        load_model(tmp_path / "renamed", backbone=models["patchcore"].backbone)


def test_unfitted_model_cannot_be_saved(tmp_path, models):
    with pytest.raises(OddspotError, match="unfitted"):
        PatchCore(backbone=models["patchcore"].backbone, **FAST).save(tmp_path)


# -- format 1 (oddspot 0.1) ---------------------------------------------------------------------

def write_v1(model, folder: Path, calibration: bool = True) -> None:
    """Write `model` exactly as oddspot 0.1 saved it (model.json format 1 + its own tensor files)."""
    folder.mkdir(parents=True, exist_ok=True)
    record = model.to_record()
    if model.kind == "cascade":
        write_v1(model.gate, folder / "gate", calibration=False)
        write_v1(model.localizer, folder / "localizer", calibration=False)
        state = {**model.state, "gate": dict(model.gate.state), "localizer": dict(model.localizer.state)}
        config = asdict(model.config)  # 0.1 kept the user's gate / localizer options here
    else:
        name = "memory_bank.safetensors" if model.kind == "patchcore" else "padim.safetensors"
        save_file(record.tensors, str(folder / name))
        state, config = model.state, asdict(model.config)
    write_json(folder / "model.json", {"format_version": 1, "oddspot_version": "0.1.0", "detector": model.kind,
                                       "config": config, "state": state})
    if calibration and model.postprocess is not None:
        write_json(folder / "calibration.json", model.postprocess.to_dict())


@pytest.mark.parametrize("kind", ["patchcore", "padim", "cascade"])
def test_v1_folder_is_refused_then_upgraded_in_place(models, samples, tmp_path, kind):
    model, test = models[kind], samples[1]
    folder = tmp_path / "run"
    write_v1(model, folder)
    write_json(folder / "run.json", {"split": "validation", "seed": 0})
    with pytest.raises(OddspotError, match="oddspot upgrade") as info:
        load_model(folder)
    assert "format 1" in str(info.value) and "\n" not in str(info.value)
    assert upgrade(folder) == folder
    assert sorted(p.name for p in folder.iterdir()) == ["model.json", "model.safetensors", "run.json"]
    again = load_model(folder, "inspect")
    assert again.kind == kind and again.postprocess.to_dict() == model.postprocess.to_dict()
    same_prediction(again.predict(test), model.predict(test))
    with pytest.raises(OddspotError, match="already format 2"):
        upgrade(folder)


def test_v1_upgrade_into_another_folder_keeps_the_original(models, samples, tmp_path):
    model = models["patchcore"]
    write_v1(model, tmp_path / "old", calibration=False)
    before = sorted(p.name for p in (tmp_path / "old").iterdir())
    upgrade(tmp_path / "old", tmp_path / "new")
    assert sorted(p.name for p in (tmp_path / "old").iterdir()) == before == ["memory_bank.safetensors", "model.json"]
    record = load_record(tmp_path / "new", "inspect", "patchcore")
    assert record.postprocess is None and np.array_equal(record.tensors["memory_bank"], model.memory_bank)


def test_damaged_v1_folder_is_a_one_line_error(models, tmp_path):
    write_v1(models["padim"], tmp_path)
    (tmp_path / "padim.safetensors").unlink()
    with pytest.raises(OddspotError, match="padim.safetensors: missing"):
        upgrade(tmp_path)
    assert (tmp_path / "model.json").is_file() and not (tmp_path / "model.safetensors").exists()


def test_upgrade_cli(models, samples, tmp_path):
    from oddspot.cli import cli

    write_v1(models["cascade"], tmp_path / "run")
    refused = CliRunner().invoke(cli, ["inspect", "predict", str(tmp_path / "run"), samples[1][0].meta["path"],
                                       "-o", str(tmp_path / "p")])
    assert refused.exit_code == 2 and "oddspot upgrade" in refused.output
    res = CliRunner().invoke(cli, ["upgrade", str(tmp_path / "run")])
    assert res.exit_code == 0, res.output
    assert not (tmp_path / "run" / "gate").exists() and not (tmp_path / "run" / "calibration.json").exists()
    shutil.rmtree(tmp_path / "p", ignore_errors=True)
    ok = CliRunner().invoke(cli, ["inspect", "predict", str(tmp_path / "run"), samples[1][0].meta["path"],
                                  "-o", str(tmp_path / "p")])
    assert ok.exit_code == 0, ok.output
