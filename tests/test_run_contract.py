"""The run contract on its own: what model.json holds, and every way a folder is refused."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest
from click.testing import CliRunner

from oddspot import __version__
from oddspot.cli import cli
from oddspot.configs import from_mapping
from oddspot.errors import OddspotError
from oddspot.runs.contract import FORMAT_VERSION, MODEL_FILE, TENSORS_FILE, Record, load_record, save_record


def _record() -> Record:
    rng = np.random.default_rng(0)
    return Record("inspect", "patchcore", {"image_size": 64}, {"n": 3}, {"strategy": "f1"},
                  {"bank": rng.normal(size=(5, 4)).astype(np.float32), "index": np.arange(3)})


def test_folder_holds_model_json_v2_and_one_tensor_file(tmp_path):
    save_record(tmp_path, _record())
    assert sorted(p.name for p in tmp_path.iterdir()) == [MODEL_FILE, TENSORS_FILE]
    meta = json.loads((tmp_path / MODEL_FILE).read_text())
    assert meta["format_version"] == FORMAT_VERSION == 2
    assert meta["oddspot_version"] == __version__
    assert (meta["task"], meta["kind"]) == ("inspect", "patchcore")
    assert meta["postprocess"] == {"strategy": "f1"}
    info = meta["files"][TENSORS_FILE]
    assert info["size"] == (tmp_path / TENSORS_FILE).stat().st_size and len(info["sha256"]) == 64
    back = load_record(tmp_path, "inspect", "patchcore")
    assert back.config == {"image_size": 64} and back.state == {"n": 3}
    np.testing.assert_array_equal(back.tensors["bank"], _record().tensors["bank"])
    assert back.tensors["index"].dtype == np.int64


def _tamper(folder, how):
    path = folder / TENSORS_FILE
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[-1] ^= 1
    elif how == "truncate":
        data = data[: len(data) // 2]
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["flip", "truncate"])
def test_changed_tensor_file_is_refused(tmp_path, how):
    save_record(tmp_path, _record())
    _tamper(tmp_path, how)
    with pytest.raises(OddspotError, match="sha256 does not match"):
        load_record(tmp_path)


def _rewrite(folder, **changes):
    meta = json.loads((folder / MODEL_FILE).read_text())
    meta.update(changes)
    (folder / MODEL_FILE).write_text(json.dumps(meta))


@pytest.mark.parametrize("changes, message", [
    ({"format_version": 1}, "oddspot upgrade"),
    ({"format_version": 3}, "unsupported"),
    ({"format_version": "2"}, "unsupported"),
    ({"task": "audio"}, "task 'audio' unknown"),
    ({"config": [1, 2]}, "field config must be an object"),
    ({"kind": 7}, "field kind must be text"),
    ({"postprocess": "high"}, "postprocess must be an object or null"),
    ({"files": {}}, "must hold its sha256 and size"),
])
def test_bad_model_json_fields_are_one_line_errors(tmp_path, changes, message):
    save_record(tmp_path, _record())
    _rewrite(tmp_path, **changes)
    with pytest.raises(OddspotError, match=message) as info:
        load_record(tmp_path)
    assert "\n" not in str(info.value)


def test_missing_field_and_bad_json(tmp_path):
    save_record(tmp_path, _record())
    meta = json.loads((tmp_path / MODEL_FILE).read_text())
    del meta["state"]
    (tmp_path / MODEL_FILE).write_text(json.dumps(meta))
    with pytest.raises(OddspotError, match="field state missing"):
        load_record(tmp_path)
    (tmp_path / MODEL_FILE).write_text("{not json")
    with pytest.raises(OddspotError, match="not valid JSON"):
        load_record(tmp_path)


def test_non_finite_tensor_is_refused(tmp_path):
    rec = _record()
    rec.tensors["bank"][0, 0] = np.nan
    save_record(tmp_path, rec)
    with pytest.raises(OddspotError, match="NaN or infinite"):
        load_record(tmp_path)


def test_wrong_task_or_kind_is_named(tmp_path):
    save_record(tmp_path, _record())
    with pytest.raises(OddspotError, match="holds a inspect model, not a road model"):
        load_record(tmp_path, "road")
    with pytest.raises(OddspotError, match="holds a 'patchcore' model, not 'padim'"):
        load_record(tmp_path, "inspect", "padim")


def test_record_tensor_access_is_checked(tmp_path):
    save_record(tmp_path, _record())
    rec = load_record(tmp_path)
    assert rec.tensor("bank", ndim=2, dtype=np.float32).shape == (5, 4)
    for kwargs, message in (({"ndim": 3}, "3"), ({"dtype": np.float64}, "float64")):
        with pytest.raises(OddspotError, match=message):
            rec.tensor("bank", **kwargs)
    with pytest.raises(OddspotError, match="'nothing' missing"):
        rec.tensor("nothing")


def test_not_a_run_folder(tmp_path):
    with pytest.raises(OddspotError, match="no such run folder"):
        load_record(tmp_path / "absent")
    with pytest.raises(OddspotError, match="not a saved oddspot model"):
        load_record(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(OddspotError, match="format 1"):
        load_record(tmp_path)


def test_upgrade_verb_refuses_format_2_and_strangers_on_one_line(tmp_path):
    save_record(tmp_path / "run", _record())
    runner = CliRunner()
    result = runner.invoke(cli, ["upgrade", str(tmp_path / "run")])
    assert result.exit_code == 2 and "already format 2" in result.output
    result = runner.invoke(cli, ["upgrade", str(tmp_path / "nothing")])
    assert result.exit_code == 2 and len(result.output.strip().splitlines()) == 1


def test_usage_errors_are_one_line():
    result = CliRunner().invoke(cli, ["--no-such-option"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")


@dataclass
class _Inner:
    rate: float = 0.5


@dataclass
class _Config:
    size: int = 8
    ratio: float = 0.1
    name: str = "a"
    flag: bool = False
    layers: tuple[str, ...] = ("x",)
    pair: tuple[int, int] = (1, 2)
    maybe: int | None = None
    inner: _Inner = field(default_factory=_Inner)

    def __post_init__(self) -> None:
        if self.size < 1:
            raise OddspotError(f"size must be >= 1, got {self.size}")


def test_strict_config_reader_converts_what_it_should():
    cfg = from_mapping(_Config, {"size": 3, "ratio": 1, "layers": ["a", "b"], "pair": [3, 4], "maybe": None,
                                 "inner": {"rate": 2}}, "cfg.yaml")
    assert cfg.ratio == 1.0 and isinstance(cfg.ratio, float)
    assert cfg.layers == ("a", "b") and cfg.pair == (3, 4) and cfg.inner == _Inner(2.0)


@pytest.mark.parametrize("values, message", [
    ({"sise": 3}, "unknown option"),
    ({"size": "3"}, "size: expected an integer"),
    ({"size": True}, "size: expected an integer"),
    ({"size": 2.5}, "size: expected an integer"),
    ({"ratio": "abc"}, "ratio: expected a number"),
    ({"ratio": float("nan")}, "ratio: expected a finite number"),
    ({"ratio": float("inf")}, "ratio: expected a finite number"),
    ({"name": 3}, "name: expected text"),
    ({"flag": 1}, "flag: expected true or false"),
    ({"layers": "abc"}, "layers: expected a list"),
    ({"pair": [1, 2, 3]}, "pair: expected 2 values"),
    ({"maybe": "x"}, "maybe: expected an integer"),
    ({"inner": {"rate": "fast"}}, "inner: rate: expected a number"),
    ({"size": 0}, "cfg.yaml: size must be >= 1"),
])
def test_strict_config_reader_refuses_on_one_line(values, message):
    with pytest.raises(OddspotError, match=message) as info:
        from_mapping(_Config, values, "cfg.yaml")
    assert str(info.value).startswith("cfg.yaml") and "\n" not in str(info.value)
