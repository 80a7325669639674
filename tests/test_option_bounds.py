"""Every numeric option of every command has a type and a bounded range, floats are finite, and
out-of-range option and config values are one-line errors (exit code 2), never a traceback."""

from __future__ import annotations

from collections.abc import Iterator

import click
import pytest
import yaml
from click.testing import CliRunner

from oddspot.cli import cli


def commands(group: click.Group = cli, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], click.Command]]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield (*path, name), command


NUMERIC = [(" ".join(path), param) for path, command in commands() for param in command.params
           if isinstance(param.type, (click.types.IntParamType, click.types.FloatParamType))]


def test_the_walk_finds_the_options():
    names = {(where, p.name) for where, p in NUMERIC}
    assert {("inspect predict", "batch"), ("road fit", "lr"), ("report", "thumb"), ("video data", "frames"),
            ("inspect predict", "max_pixels"), ("experiment", "threads")} <= names


@pytest.mark.parametrize("where, param", NUMERIC, ids=[f"{w} --{p.name}" for w, p in NUMERIC])
def test_every_numeric_option_is_bounded_and_finite(where, param):
    kind = param.type
    assert isinstance(kind, click.types._NumberRangeBase), f"{where} --{param.name}: give it an IntRange or FiniteFloat"
    assert kind.min is not None and kind.max is not None, f"{where} --{param.name}: bound both ends"
    if isinstance(kind, click.types.FloatParamType):
        for bad in ("nan", "inf", "-inf"):
            with pytest.raises(click.BadParameter):
                kind.convert(bad, param, None)


@pytest.mark.parametrize("args, needle", [
    (["fit", "DATA", "-c", "brick", "-o", "OUT", "--seed", "-1"], "--seed"),
    (["fit", "DATA", "-c", "brick", "-o", "OUT", "--calibration", "fixed", "--threshold", "nan"], "--threshold"),
    (["fit", "DATA", "-c", "brick", "-o", "OUT", "--calibration", "fixed", "--threshold", "inf"], "--threshold"),
    (["fit", "DATA", "-c", "brick", "-o", "OUT", "--pixel-threshold", "nan"], "--pixel-threshold"),
    (["predict", "RUN", "DATA", "-o", "OUT", "--batch", "100000"], "--batch"),
    (["predict", "RUN", "DATA", "-o", "OUT", "--max-pixels", "0"], "--max-pixels"),
    (["report", "OUT", "--thumb", "100000"], "--thumb"),
    (["report", "OUT", "--top", "-3"], "--top"),
    (["road", "fit", "DATA", "-o", "OUT", "--lr", "nan"], "--lr"),
    (["road", "fit", "DATA", "-o", "OUT", "--batch-size", "100000"], "--batch-size"),
    (["video", "fit", "DATA", "-o", "OUT", "--sigma", "inf"], "--sigma"),
    (["video", "data", "-o", "OUT", "--train-videos", "0"], "--train-videos"),
    (["experiment", "CONFIG", "--threads", "0"], "--threads"),
    (["shift", "DATA", "-o", "OUT", "--seed", "-1"], "--seed"),
])
def test_bad_option_values_are_one_line_errors(tiny_mvtec, tmp_path, args, needle):
    fill = {"DATA": str(tiny_mvtec), "OUT": str(tmp_path / "out"), "RUN": str(tmp_path / "run"),
            "CONFIG": str(tmp_path / "c.yaml")}
    result = CliRunner().invoke(cli, [fill.get(a, a) for a in args])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert needle in lines[0], lines[0]


@pytest.mark.parametrize("options, needle", [
    ({"image_size": 8}, "image_size 8 out of range"),
    ({"coreset_ratio": "abc"}, "coreset_ratio"),
    ({"batch_size": 100000}, "batch_size 100000 out of range"),
    ({"blur_sigma": float("nan")}, "blur_sigma"),
])
def test_bad_config_values_are_one_line_errors(tiny_mvtec, tmp_path, options, needle):
    config = tmp_path / "options.yaml"
    config.write_text(yaml.safe_dump(options))
    result = CliRunner().invoke(cli, ["fit", str(tiny_mvtec), "-c", "brick", "-o", str(tmp_path / "run"),
                                      "--config", str(config)])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "options.yaml" in lines[0] and needle in lines[0], lines[0]


@pytest.mark.parametrize("text, needle", [
    ("image_size: 64\ncoreset_ratio: 0.25\nimage_size: 96\n", "key 'image_size' given twice (line 3)"),
    ("gate_options: {image_size: 64, image_size: 32}\n", "key 'image_size' given twice"),
])
def test_a_key_given_twice_in_a_config_is_a_one_line_error(tiny_mvtec, tmp_path, text, needle):
    """PyYAML alone keeps the last of two equal keys; a config that says two things is refused instead."""
    config = tmp_path / "options.yaml"
    config.write_text(text)
    result = CliRunner().invoke(cli, ["fit", str(tiny_mvtec), "-c", "brick", "-o", str(tmp_path / "run"),
                                      "--config", str(config)])
    lines = [ln for ln in result.output.splitlines() if ln.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error:"), result.output
    assert "options.yaml" in lines[0] and needle in lines[0], lines[0]


def test_exponent_numbers_without_a_dot_are_numbers():
    """`1e-3` is a float in YAML 1.2 but text in PyYAML's YAML 1.1; a config means the number."""
    from oddspot.configs import load_yaml

    assert load_yaml("a: 1e-3\nb: -2E3\nc: 1.5\nd: 7\ne: 1e\nf: '1e-3'\n") == {
        "a": 1e-3, "b": -2000.0, "c": 1.5, "d": 7, "e": "1e", "f": "1e-3"}
