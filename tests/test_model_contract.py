"""The contract every registered `(task, kind)` keeps, checked by one parametrized suite.

- saved and loaded by the same code (`save` -> `oddspot.runs.registry.load_model`);
- bit-identical predictions after loading in a fresh process that cannot unpickle;
- a tensor file whose hash does not match model.json is refused on one line (also at the CLI);
- model.json of format 2 with task, kind, config, state and postprocess.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from oddspot.cli import cli
from oddspot.errors import OddspotError
from oddspot.runs.contract import MODEL_FILE, TENSORS_FILE
from oddspot.runs.registry import MODELS, load_model

from model_cases import FACTORIES, outputs, predict

HERE = Path(__file__).resolve().parent
CASES = sorted(MODELS)
pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_thread")]


def test_every_registered_model_has_a_case():
    assert sorted(FACTORIES) == CASES, "add a factory for each registered (task, kind) to tests/model_cases.py"


@pytest.fixture(scope="module", params=CASES, ids=[f"{t}-{k}" for t, k in CASES])
def saved(request, tmp_path_factory):
    task, kind = request.param
    tmp = tmp_path_factory.mktemp(f"{task}-{kind}")
    case = FACTORIES[(task, kind)](tmp)
    folder = case.model.save(tmp / "run")
    return task, kind, case, Path(folder), outputs(predict(case.model, case.inputs))


def test_model_json_is_the_run_contract(saved):
    task, kind, _, folder, _ = saved
    assert sorted(p.name for p in folder.iterdir() if p.is_file()) == [MODEL_FILE, TENSORS_FILE]
    meta = json.loads((folder / MODEL_FILE).read_text())
    assert meta["format_version"] == 2 and (meta["task"], meta["kind"]) == (task, kind)
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
