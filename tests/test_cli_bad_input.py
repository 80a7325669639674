"""The README's promise for every verb of every task: bad input is one line on stderr, `error: ...`,
and exit code 2, click's own usage errors (unknown option, missing argument) included.

One table holds, for every command of the CLI, a missing path, an unknown option, a missing
argument, an out-of-range value and an unreadable config (or why the verb has no such input).
The table runs in-process; one row per verb also runs through the installed `oddspot` entry point.
A verb added without rows fails `test_every_verb_has_every_kind_of_bad_input`.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from oddspot.cli import cli

KINDS = ("missing path", "unknown option", "missing argument", "out of range", "unreadable config")
ENTRY_POINT = Path(sys.executable).with_name("oddspot")

# Placeholders, filled in by `paths`: MISSING (no such path), DATA (an empty folder), RUN (a folder with no
# model), IMAGE (a PNG), OUT (a fresh output folder), BAD_YAML (not YAML), BINARY (not text), DAMAGED (an
# evaluation and a run folder whose JSON files are not JSON).
TABLE: dict[str, dict[str, list[str] | str]] = {
    "inspect fit": {
        "missing path": ["MISSING", "-c", "brick", "-o", "OUT"],
        "unknown option": ["DATA", "-c", "brick", "-o", "OUT", "--coreset", "0.1"],
        "missing argument": ["-c", "brick", "-o", "OUT"],
        "out of range": ["DATA", "-c", "brick", "-o", "OUT", "--quantile", "1.5"],
        "unreadable config": ["DATA", "-c", "brick", "-o", "OUT", "--config", "BINARY"],
    },
    "inspect predict": {
        "missing path": ["MISSING", "IMAGE", "-o", "OUT"],
        "unknown option": ["RUN", "IMAGE", "-o", "OUT", "--save-map"],
        "missing argument": ["RUN", "-o", "OUT"],
        "out of range": ["RUN", "IMAGE", "-o", "OUT", "--batch", "0"],
        "unreadable config": ["RUN", "IMAGE", "-o", "OUT", "--config", "BAD_YAML"],
    },
    "inspect evaluate": {
        "missing path": ["MISSING", "DATA", "-c", "brick", "-o", "OUT"],
        "unknown option": ["RUN", "DATA", "-c", "brick", "-o", "OUT", "--bootstraps", "9"],
        "missing argument": ["-c", "brick", "-o", "OUT"],  # DATA may be left out (the run's own), RUN may not
        "out of range": ["RUN", "DATA", "-c", "brick", "-o", "OUT", "--gallery", "-1"],
        "unreadable config": ["RUN", "DATA", "-c", "brick", "-o", "OUT", "--config", "BINARY"],
    },
    "inspect demo": {
        "missing path": ["-o", "OUT", "--config", "MISSING"],
        "unknown option": ["-o", "OUT", "--fast"],
        "missing argument": ["-o", "OUT", "--seed"],
        "out of range": ["-o", "OUT", "--threads", "0"],
        "unreadable config": ["-o", "OUT", "--config", "BAD_YAML"],
    },
    "inspect data": {
        "missing path": ["-o", "OUT", "--config", "MISSING"],
        "unknown option": ["-o", "OUT", "--tiles", "64"],
        "missing argument": ["--tile", "64"],
        "out of range": ["-o", "OUT", "--tile", "8"],
        "unreadable config": ["-o", "OUT", "--config", "BINARY"],
    },
    "road fit": {
        "missing path": ["MISSING", "-o", "OUT"],
        "unknown option": ["DATA", "-o", "OUT", "--epoch", "3"],
        "missing argument": ["-o", "OUT"],
        "out of range": ["DATA", "-o", "OUT", "--epochs", "0"],
        "unreadable config": ["DATA", "-o", "OUT", "--config", "BAD_YAML"],
    },
    "road predict": {
        "missing path": ["MISSING", "IMAGE", "-o", "OUT"],
        "unknown option": ["RUN", "IMAGE", "-o", "OUT", "--panels"],
        "missing argument": ["RUN", "-o", "OUT"],
        "out of range": ["RUN", "IMAGE", "-o", "OUT", "--threads", "0"],
        "unreadable config": ["RUN", "IMAGE", "-o", "OUT", "--config", "BINARY"],
    },
    "road evaluate": {
        "missing path": ["RUN", "MISSING", "-o", "OUT"],
        "unknown option": ["RUN", "DATA", "-o", "OUT", "--panel", "2"],
        "missing argument": ["RUN", "-o", "OUT"],
        "out of range": ["RUN", "DATA", "-o", "OUT", "--batch-size", "0"],
        "unreadable config": ["RUN", "DATA", "-o", "OUT", "--config", "BAD_YAML"],
    },
    "road demo": {
        "missing path": ["-o", "OUT", "--config", "MISSING"],
        "unknown option": ["-o", "OUT", "--quick"],
        "missing argument": ["-o"],
        "out of range": ["-o", "OUT", "--seed", "-1"],
        "unreadable config": ["-o", "OUT", "--config", "BINARY"],
    },
    "road data": {
        "missing path": ["-o", "OUT", "--config", "MISSING"],
        "unknown option": ["-o", "OUT", "--n-tests", "3"],
        "missing argument": ["--n-test", "3"],
        "out of range": ["-o", "OUT", "--n-val", "0"],
        "unreadable config": ["-o", "OUT", "--config", "BAD_YAML"],
    },
    "video fit": {
        "missing path": ["MISSING", "-o", "OUT"],
        "unknown option": ["DATA", "-o", "OUT", "--coreset", "0.1"],
        "missing argument": ["-o", "OUT", "--model", "motion"],
        "out of range": ["DATA", "-o", "OUT", "--holdout-fraction", "1.5"],
        "unreadable config": ["DATA", "-o", "OUT", "--config", "BINARY"],
    },
    "video predict": {
        "missing path": ["MISSING", "DATA", "-o", "OUT"],
        "unknown option": ["RUN", "DATA", "-o", "OUT", "--skip-first", "2"],
        "missing argument": ["RUN", "-o", "OUT"],
        "out of range": ["RUN", "DATA", "-o", "OUT", "--threads", "0"],
        "unreadable config": ["RUN", "DATA", "-o", "OUT", "--config", "BAD_YAML"],
    },
    "video evaluate": {
        "missing path": ["MISSING", "DATA", "-o", "OUT"],
        "unknown option": ["RUN", "DATA", "-o", "OUT", "--skip", "2"],
        "missing argument": ["RUN", "-o", "OUT"],
        "out of range": ["RUN", "DATA", "-o", "OUT", "--skip-first", "-1"],
        "unreadable config": ["RUN", "DATA", "-o", "OUT", "--config", "BINARY"],
    },
    "video demo": {
        "missing path": ["-o", "OUT", "--config", "MISSING"],
        "unknown option": ["-o", "OUT", "--fast"],
        "missing argument": ["-o", "OUT", "--device"],
        "out of range": ["-o", "OUT", "--threads", "100000"],
        "unreadable config": ["-o", "OUT", "--config", "BAD_YAML"],
    },
    "video data": {
        "missing path": ["-o", "OUT", "--config", "MISSING"],
        "unknown option": ["-o", "OUT", "--videos", "2"],
        "missing argument": ["--frames", "60"],
        "out of range": ["-o", "OUT", "--frames", "10"],
        "unreadable config": ["-o", "OUT", "--config", "BINARY"],
    },
    "report": {
        "missing path": ["MISSING"],
        "unknown option": ["DAMAGED", "--gallery", "3"],
        "missing argument": ["--top", "3"],
        "out of range": ["DAMAGED", "--thumb", "100000"],
        "unreadable config": ["DAMAGED"],  # its metrics.json is not JSON
    },
    "upgrade": {
        "missing path": ["MISSING"],
        "unknown option": ["DAMAGED", "--force"],
        "missing argument": ["--out", "OUT"],
        "out of range": "upgrade has no numeric option",
        "unreadable config": ["DAMAGED"],  # its model.json is not JSON
    },
    "export": {
        "missing path": ["MISSING", "-o", "OUT"],
        "unknown option": ["RUN", "-o", "OUT", "--fmt", "onnx"],
        "missing argument": ["-o", "OUT"],
        "out of range": ["RUN", "-o", "OUT", "--samples", "0"],
        "unreadable config": ["DAMAGED", "-o", "OUT"],  # its model.json is not JSON
    },
    "serve": {
        "missing path": ["MISSING"],
        "unknown option": ["RUN", "--workers", "2"],
        "missing argument": ["--port", "0"],
        "out of range": ["RUN", "--max-batch", "0"],
        "unreadable config": ["DAMAGED"],  # its model.json is not JSON
    },
    "experiment": {
        "missing path": ["MISSING"],
        "unknown option": ["BAD_YAML", "--dry-run"],
        "missing argument": ["--list"],
        "out of range": ["BAD_YAML", "--threads", "0"],
        "unreadable config": ["BINARY"],
    },
    "compare": {
        "missing path": ["MISSING", "DAMAGED"],
        "unknown option": ["DAMAGED", "DAMAGED", "--resamples", "9"],
        "missing argument": ["DAMAGED"],
        "out of range": ["DAMAGED", "DAMAGED", "--level", "1.5"],
        "unreadable config": ["DAMAGED", "DAMAGED"],  # its metrics.json is not JSON
    },
    "sweep-gate": {
        "missing path": ["MISSING", "DATA", "-c", "brick", "-o", "OUT"],
        "unknown option": ["RUN", "DATA", "-c", "brick", "-o", "OUT", "--step", "3"],
        "missing argument": ["-c", "brick", "-o", "OUT"],
        "out of range": ["RUN", "DATA", "-c", "brick", "-o", "OUT", "--steps", "0"],
        "unreadable config": ["DAMAGED", "DATA", "-c", "brick", "-o", "OUT"],  # its model.json is not JSON
    },
    "shift": {
        "missing path": ["MISSING", "-o", "OUT"],
        "unknown option": ["DATA", "-o", "OUT", "--severity-scale", "2"],
        "missing argument": ["-o", "OUT"],
        "out of range": ["DATA", "-o", "OUT", "--seed", "-1"],
        "unreadable config": "shift reads no config file",
    },
}
ROWS = [(verb, kind) for verb, rows in TABLE.items() for kind in KINDS if isinstance(rows.get(kind), list)]
# The row of each verb that also runs through the installed entry point: a usage error, found before any work.
ENTRY_ROWS = [(verb, "missing argument") for verb in TABLE]


def commands(group: click.Group = cli, path: tuple[str, ...] = ()) -> Iterator[tuple[str, click.Command]]:
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            yield from commands(command, (*path, name))
        else:
            yield " ".join((*path, name)), command


def test_every_verb_has_every_kind_of_bad_input():
    inspect_verbs = cli.commands["inspect"].commands
    verbs = {path for path, command in commands() if inspect_verbs.get(path) is not command}  # aliases: their inspect row
    assert verbs == set(TABLE)
    for verb, rows in TABLE.items():
        assert set(rows) == set(KINDS), verb
        assert all(isinstance(v, list) or (isinstance(v, str) and v) for v in rows.values()), verb


@pytest.fixture(scope="module")
def paths(tmp_path_factory) -> dict[str, Path]:
    import numpy as np
    from PIL import Image

    root = tmp_path_factory.mktemp("bad-input")
    p = {"MISSING": root / "missing", "DATA": root / "data", "RUN": root / "run", "IMAGE": root / "image.png",
         "BAD_YAML": root / "bad.yaml", "BINARY": root / "binary.yaml", "DAMAGED": root / "damaged"}
    p["DATA"].mkdir()
    p["RUN"].mkdir()
    p["DAMAGED"].mkdir()
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(p["IMAGE"])
    p["BAD_YAML"].write_text("threads: [1, 2\n")
    p["BINARY"].write_bytes(b"\xff\xfe\x00\x81 not text")
    (p["DAMAGED"] / "metrics.json").write_bytes(b"{\"task\": \"inspect\", \x00")
    (p["DAMAGED"] / "model.json").write_text("{not json")
    return p


def _args(verb: str, kind: str, paths: dict[str, Path], out: Path) -> list[str]:
    return [*verb.split(), *(str(out) if a == "OUT" else str(paths.get(a, a)) for a in TABLE[verb][kind])]


def _check_one_line(exit_code: int, stdout: str, stderr: str, what: str) -> None:
    lines = stderr.splitlines()
    assert exit_code == 2, (what, exit_code, stdout, stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) > len("error: "), (what, stderr)
    assert stdout == "", (what, stdout)


def _needles(verb: str, kind: str, paths: dict[str, Path]) -> list[str]:
    """What the error line must name: the missing path, the option, or the unreadable file."""
    row = TABLE[verb][kind]
    flags = [a for a in row if a.startswith("--") and a not in ("--out", "--config")]
    if kind == "missing path":
        return [paths["MISSING"].name]
    if kind == "missing argument":
        return []  # click names the argument or option, in its own words
    if kind == "unreadable config":
        name = row[row.index("--config") + 1] if "--config" in row else row[0]
        return [{"BAD_YAML": "bad.yaml", "BINARY": "binary.yaml", "DAMAGED": ".json"}[name]]
    return [flags[-1]]


@pytest.mark.parametrize("verb, kind", ROWS, ids=[f"{v}: {k}" for v, k in ROWS])
def test_bad_input_is_one_error_line_and_exit_code_2(verb, kind, paths, tmp_path):
    result = CliRunner().invoke(cli, _args(verb, kind, paths, tmp_path / "out"))
    _check_one_line(result.exit_code, result.stdout, result.stderr, f"{verb}: {kind}")
    assert all(n in result.stderr for n in _needles(verb, kind, paths)), (_needles(verb, kind, paths), result.stderr)
    assert not (tmp_path / "out").exists(), "a refused command wrote its output folder"


@pytest.mark.parametrize("verb, kind", ENTRY_ROWS, ids=[f"{v}: {k}" for v, k in ENTRY_ROWS])
def test_the_installed_entry_point_keeps_it_too(verb, kind, paths, tmp_path):
    assert ENTRY_POINT.exists(), f"{ENTRY_POINT}: the console script is missing; install oddspot (make install)"
    done = subprocess.run([str(ENTRY_POINT), *_args(verb, kind, paths, tmp_path / "out")], capture_output=True,
                          text=True, timeout=120)
    _check_one_line(done.returncode, done.stdout, done.stderr, f"oddspot {verb}: {kind}")
    assert "Traceback" not in done.stderr


def test_top_level_aliases_and_unknown_verbs_keep_it():
    for args in (["fit", "-c", "brick"], ["evaluate", "--nope"], ["no-such-verb"], ["video", "fits"], ["--nope"]):
        result = CliRunner().invoke(cli, args)
        _check_one_line(result.exit_code, result.stdout, result.stderr, " ".join(args))


@pytest.mark.parametrize("args", [[], ["road"], ["inspect"], ["video"]], ids=["oddspot", "road", "inspect", "video"])
def test_a_group_without_a_verb_shows_its_help_not_an_error(args):
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0 and result.stderr == "", result.output
    assert result.stdout == CliRunner().invoke(cli, [*args, "--help"]).stdout
