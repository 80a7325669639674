"""The contract every registered `(task, kind)` keeps, checked by one parametrized suite.

In the spirit of scikit-learn's estimator checks: a kind registered in `oddspot.runs.registry.MODELS`
with a factory in `tests/model_cases.py` gets every check below, and a kind without one fails.

- saved and loaded by the same code (`save` -> `oddspot.runs.registry.load_model`);
- bit-identical predictions after loading in a fresh process that cannot unpickle;
- a tensor file whose hash does not match model.json is refused on one line (also at the CLI);
- model.json of format 2 with task, kind, config, state and postprocess;
- scores, maps, masks and decisions of an item do not depend on the other items of its call,
  nor on their order;
- the same seed fits the same model bit for bit; another seed is recorded in model.json and
  gives another model;
- unknown options, and every numeric option far out of range, NaN or of the wrong type, are
  one-line errors naming the option;
- an obvious anomaly is found: a minimum AUROC on a small fixture.
"""

from __future__ import annotations

import inspect
import json
import os
import subprocess
import sys
import types
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score

from oddspot.cli import cli
from oddspot.errors import OddspotError
from oddspot.runs.contract import MODEL_FILE, TENSORS_FILE
from oddspot.runs.registry import MODELS, build_model, load_model, model_class

from model_cases import FACTORIES, outputs, per_item, predict

HERE = Path(__file__).resolve().parent
CASES = sorted(MODELS)
IDS = [f"{t}-{k}" for t, k in CASES]
OTHER_SEED = 7
# The least AUROC each kind must reach on its fixture (random scores give 0.5). 0.8 unless listed: the
# road network of the fixture trains for one epoch on six scenes (its feature distance still finds the
# unknown objects), and the frame autoencoder trains for one epoch and cannot see motion.
MIN_AUROC = {("road", "deeplabv3plus"): 0.75, ("video", "autoencoder"): 0.65}
# Kinds whose fit makes no random choice (the other-seed check then only asks that the seed is recorded).
NO_RANDOMNESS: set[tuple[str, str]] = set()
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def test_every_registered_model_has_a_case():
    assert sorted(FACTORIES) == CASES, "add a factory for each registered (task, kind) to tests/model_cases.py"
    for key in CASES:
        assert "seed" in inspect.signature(FACTORIES[key]).parameters, f"the factory of {key} must take seed=..."
        assert is_dataclass(model_class(*key).config_class), f"{key}: config_class must be the config dataclass"


@pytest.fixture(autouse=True)
def same_threads():
    """Keep torch's thread count across each test (a CLI verb sets it): some kernels' rounding follows it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module", params=CASES, ids=IDS)
def saved(request, tmp_path_factory):
    task, kind = request.param
    tmp = tmp_path_factory.mktemp(f"{task}-{kind}")
    case = FACTORIES[(task, kind)](tmp)
    assert case.data is not None and case.data.parent == tmp, "a factory's Case names the dataset it made in tmp"
    folder = case.model.save(tmp / "run")
    return task, kind, case, Path(folder), outputs(predict(case.model, case.inputs))


def test_model_json_is_the_run_contract(saved):
    task, kind, _, folder, _ = saved
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == [MODEL_FILE, TENSORS_FILE]
    meta = json.loads((folder / MODEL_FILE).read_text())
    assert meta["format_version"] == 2 and (meta["task"], meta["kind"]) == (task, kind)
    assert isinstance(meta["oddspot_version"], str) and meta["oddspot_version"]
    assert isinstance(meta["config"], dict) and isinstance(meta["state"], dict)
    assert "postprocess" in meta


def test_fresh_process_predicts_bit_identically_without_unpickling(saved, tmp_path):
    _, _, case, folder, expected = saved
    out = tmp_path / "fresh.npz"
    env = {**os.environ, "PYTHONPATH": str(HERE)}
    threads = str(torch.get_num_threads())  # the same thread count: some kernels change with it
    done = subprocess.run([sys.executable, str(HERE / "model_cases.py"), str(folder), case.spec, str(out), threads],
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    with np.load(out) as got:
        assert sorted(got.files) == sorted(expected)
        for name in expected:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_same_code_loads_it_in_process(saved):
    _, _, case, folder, expected = saved
    got = outputs(predict(load_model(folder), case.inputs))
    assert sorted(got) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def test_tampered_tensor_file_is_refused_on_one_line(saved, tmp_path):
    task, _, _, folder, _ = saved
    copy = tmp_path / "run"
    copy.mkdir()
    for p in folder.iterdir():
        copy.joinpath(p.name).write_bytes(p.read_bytes())
    data = bytearray((copy / TENSORS_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / TENSORS_FILE).write_bytes(bytes(data))
    with pytest.raises(OddspotError, match="sha256 does not match") as info:
        load_model(copy)
    assert "\n" not in str(info.value)
    image = tmp_path / "x.png"
    from PIL import Image

    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(image)
    result = CliRunner().invoke(cli, [task, "predict", str(copy), str(image), "--out", str(tmp_path / "pred")])
    assert result.exit_code == 2, result.output
    assert result.output.strip().count("\n") == 0 and "sha256" in result.output


def _assert_same(got: dict[str, np.ndarray], expected: dict[str, np.ndarray], what: str) -> None:
    assert sorted(got) == sorted(expected), what
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=f"{what}: {name}")


def _batch_outputs(task: str, model: Any, inputs: Any, others: Any = None) -> list[tuple[str, list[dict]]]:
    """Each item's outputs predicted alone, with all the others (plus foreign items), in reverse order."""
    items = list(inputs)
    alone = [per_item(predict(model, [item]))[0] for item in items]
    if task == "video":  # other videos around and between the test videos
        mixed = per_item(predict(model, [others[0], *items, others[-1]]))[1:-1]
        reverse = per_item(predict(model, [others[-1], *items[::-1]]))[1:][::-1]
    else:
        mixed = per_item(predict(model, items))
        reverse = per_item(predict(model, items[::-1]))[::-1]
    return [("alone", alone), ("with the others", mixed), ("in reverse order", reverse)]


def _check_independent(runs: list[tuple[str, list[dict]]]) -> None:
    (_, expected), *rest = runs
    assert expected and all(len(got) == len(expected) for _, got in rest)
    for i, want in enumerate(expected):
        assert any(k.endswith("scores") for k in want), "the prediction holds no scores"
        for how, got in rest:
            _assert_same(got[i], want, f"item {i} {how}")


def test_outputs_do_not_depend_on_the_other_items_of_the_call(saved):
    """Scores, maps, masks and decisions of an item: alone, with all others, in reverse order (bit for bit)."""
    task, _, case, _, _ = saved
    others = None
    if task == "video":
        from oddspot.video.datasets import open_video_dataset

        others = open_video_dataset(case.data, "train")
    else:
        assert len(case.inputs) >= 2
    _check_independent(_batch_outputs(task, case.model, case.inputs, others))


def test_control_a_batch_dependent_model_fails_the_check():
    from oddspot.runs.prediction import Prediction

    class BatchNormalized:
        def predict(self, images):
            means = np.array([im.mean() for im in images])
            return Prediction(means - means.mean(), [np.full(im.shape[:2], m, np.float32) for im, m in zip(images, means)])

    images = [np.full((8, 8, 3), v, np.uint8) for v in (10, 20, 40)]
    with pytest.raises(AssertionError, match="item 0 with the others"):
        _check_independent(_batch_outputs("inspect", BatchNormalized(), images))


def _seeds(value: Any) -> list[Any]:
    """Every value stored under a key named `seed`, at any depth."""
    if isinstance(value, dict):
        return [v for k, item in value.items() for v in ([item] if k == "seed" else _seeds(item))]
    if isinstance(value, list):
        return [v for item in value for v in _seeds(item)]
    return []


def _without_timings(value: Any, tmp: Path) -> Any:
    """JSON state without wall-clock fields, with the fixture's own folder replaced (what a refit may change)."""
    if isinstance(value, dict):
        return {k: _without_timings(v, tmp) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [_without_timings(v, tmp) for v in value]
    return value.replace(str(tmp), "TMP") if isinstance(value, str) else value


def test_same_seed_same_model_other_seed_recorded_and_different(saved, tmp_path):
    task, kind, case, folder, expected = saved
    factory = FACTORIES[(task, kind)]
    default_seed = inspect.signature(factory).parameters["seed"].default
    first = case.model.to_record()
    again = factory(tmp_path / "again")
    second = again.model.to_record()
    assert second.config == first.config
    assert _without_timings(second.state, tmp_path / "again") == _without_timings(first.state, case.data.parent)
    assert second.postprocess == first.postprocess
    assert sorted(second.tensors) == sorted(first.tensors)
    for name, tensor in first.tensors.items():
        assert second.tensors[name].dtype == tensor.dtype
        np.testing.assert_array_equal(second.tensors[name], tensor, err_msg=name)
    _assert_same(outputs(predict(again.model, case.inputs)), expected, "same seed")

    other = factory(tmp_path / "other", seed=OTHER_SEED).model
    meta = json.loads((other.save(tmp_path / "other-run") / MODEL_FILE).read_text())
    recorded = _seeds(meta["config"]) + _seeds(meta["state"])
    assert OTHER_SEED in recorded and default_seed not in recorded, recorded
    assert default_seed in _seeds(first.config) + _seeds(first.state)
    if (task, kind) in NO_RANDOMNESS:
        return
    third = other.to_record().tensors
    assert any(third[n].shape != t.shape or not np.array_equal(third[n], t) for n, t in first.tensors.items()), \
        f"seeds {default_seed} and {OTHER_SEED} fit the same {task} {kind} model; list the kind in NO_RANDOMNESS if it has no random choice"


def _numeric_options(cls: type, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], type]]:
    """(path, int or float) of every numeric field of a config dataclass, nested configs included."""
    hints = typing.get_type_hints(cls)
    found = []
    for f in fields(cls):
        tp = hints[f.name]
        if typing.get_origin(tp) in (typing.Union, types.UnionType):
            args = [a for a in typing.get_args(tp) if a is not type(None)]
            tp = args[0] if len(args) == 1 else tp
        if is_dataclass(tp):
            found += _numeric_options(tp, (*path, f.name))
        elif tp in (int, float):
            found.append(((*path, f.name), tp))
    return found


def _nested(path: tuple[str, ...], value: Any) -> dict[str, Any]:
    for key in reversed(path):
        value = {key: value}
    return value


def _accepted_options(build: Any, config_class: type) -> list[str]:
    """The bad options `build` does not refuse with a one-line error naming them (empty when all are)."""
    problems = []
    numeric = _numeric_options(config_class)
    if not numeric:
        problems.append("the config has no numeric option")
    cases = [(("no_such",), 1)]
    for path, tp in numeric:
        bad = [10**12, -10**12, "12"] if tp is int else [1e12, -1e12, float("nan"), "0.5"]
        cases += [(path, value) for value in bad]
    for path, value in cases:
        try:
            build(_nested(path, value))
        except OddspotError as exc:
            if path[-1] not in str(exc) or "\n" in str(exc):
                problems.append(f"{'.'.join(path)}={value!r}: {exc}")
        else:
            problems.append(f"{'.'.join(path)}={value!r} accepted")
    return problems


@pytest.mark.parametrize("key", CASES, ids=IDS)
def test_unknown_and_out_of_range_options_are_one_line_errors(key):
    """Unknown keys, and every numeric option far out of range, NaN or text, nested configs included."""
    assert _accepted_options(lambda options: build_model(*key, options), model_class(*key).config_class) == []


def test_control_an_unchecked_option_fails_the_check():
    from dataclasses import dataclass

    from oddspot.configs import from_mapping

    @dataclass
    class Unchecked:
        size: int = 4

    problems = _accepted_options(lambda options: from_mapping(Unchecked, options, "control"), Unchecked)
    assert problems == ["size=1000000000000 accepted", "size=-1000000000000 accepted"]


@pytest.fixture(scope="module")
def clean_tiles(tmp_path_factory) -> list[np.ndarray]:
    """Normal brick tiles the inspect models never saw (another seed of the fixtures' generator)."""
    from oddspot.data.demo_dataset import build_demo_dataset
    from oddspot.data.image_io import list_images, read_image

    root = build_demo_dataset(tmp_path_factory.mktemp("clean"), ("brick",), n_train=1, n_test_good=8, n_test_bad=0,
                              tile=64, seed=2)
    return [read_image(p) for p in list_images(root / "brick" / "test" / "good")]


def _labelled_scores(task: str, case: Any, clean: list[np.ndarray]) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{level: (labels, scores)} on the kind's fixture with an obvious anomaly."""
    model = case.model
    if task == "inspect":  # a white 24 x 24 square pasted on normal tiles, vs the same tiles
        rng = np.random.default_rng(0)
        pasted, masks = [], []
        for image in clean:
            image, mask = image.copy(), np.zeros(image.shape[:2], bool)
            r, c = rng.integers(0, image.shape[0] - 24), rng.integers(0, image.shape[1] - 24)
            image[r:r + 24, c:c + 24] = 255
            mask[r:r + 24, c:c + 24] = True
            pasted.append(image)
            masks.append(mask)
        pred = model.predict(clean + pasted)
        images = np.repeat([0, 1], len(clean)), pred.scores
        pixels = np.concatenate([m.ravel() for m in masks]), np.concatenate([m.ravel() for m in pred.maps[len(clean):]])
        return {"image": images, "pixel": pixels}
    if task == "road":  # the toy streets' unknown objects, every valid test pixel
        from oddspot.data.streethazards import ANOMALY_CLASS, IGNORE_INDEX, load_split

        labels, scores = [], []
        for sample in load_split(case.data, "test").iter_samples():
            valid = sample.labels != IGNORE_INDEX
            labels.append((sample.labels == ANOMALY_CLASS)[valid])
            scores.append(model.predict([sample.image]).maps[0][valid])
        return {"pixel": (np.concatenate(labels), np.concatenate(scores))}
    preds = model.predict(case.inputs)  # video: the synthetic events, every test frame
    return {"frame": (np.concatenate([v.labels for v in case.inputs]), np.concatenate([p.normalized for p in preds]))}


def _check_auroc(found: dict[str, tuple[np.ndarray, np.ndarray]], floor: float, what: str) -> None:
    for level, (labels, scores) in found.items():
        labels = np.asarray(labels, bool)
        assert labels.any() and not labels.all(), level
        auroc = roc_auc_score(labels, scores)
        # inspect pixel maps localise, but coarsely where a cascade's gate decides: a looser floor
        least = min(floor, 0.7) if level == "pixel" and what.startswith("inspect") else floor
        assert auroc >= least, f"{what}: {level} AUROC {auroc:.3f} < {least}"


def test_an_obvious_anomaly_is_found(saved, clean_tiles):
    task, kind, case, _, _ = saved
    _check_auroc(_labelled_scores(task, case, clean_tiles), MIN_AUROC.get((task, kind), 0.8), f"{task} {kind}")


def test_control_a_model_blind_to_the_anomaly_fails_the_check(clean_tiles):
    from oddspot.runs.prediction import Prediction

    class Blind:  # the more white pixels, the lower the score: the pasted squares rank last
        def predict(self, images):
            return Prediction(np.array([-float((im == 255).mean()) for im in images]),
                              [np.zeros(im.shape[:2], np.float32) for im in images])

    with pytest.raises(AssertionError, match="image AUROC 0.000"):
        _check_auroc(_labelled_scores("inspect", types.SimpleNamespace(model=Blind()), clean_tiles), 0.8, "inspect blind")
