"""One command shape: every task has the same verbs, and every verb the same common options."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from oddspot.cli import cli

TASKS = ("inspect", "road", "video")
VERBS = {"fit", "predict", "evaluate", "demo", "data"}
COMMON = ("out", "config", "seed", "threads", "device")


def _option(command: click.Command, name: str) -> click.Option:
    found = [p for p in command.params if isinstance(p, click.Option) and p.name == name]
    assert found, f"{command.name}: no --{name}"
    return found[0]


@pytest.mark.parametrize("task", TASKS)
def test_every_task_has_the_same_verbs(task):
    group = cli.commands[task]
    assert isinstance(group, click.Group)
    assert set(group.commands) == VERBS
    help_text = CliRunner().invoke(cli, [task, "--help"]).output
    for verb in VERBS:
        assert f"  {verb} " in help_text


def test_common_options_are_the_same_everywhere():
    reference = {name: _option(cli.commands["inspect"].commands["predict"], name) for name in COMMON}
    for task in TASKS:
        for verb, command in cli.commands[task].commands.items():
            for name in COMMON:
                opt = _option(command, name)
                ref = reference[name]
                assert opt.opts[-1] == ref.opts[-1], (task, verb, name)
                if name in ("seed", "threads", "device"):
                    assert repr(opt.type) == repr(ref.type) and opt.default == ref.default, (task, verb, name)


@pytest.mark.parametrize("alias", ["fit", "predict", "evaluate", "demo"])
def test_top_level_verbs_are_aliases_of_inspect(alias):
    assert cli.commands[alias] is cli.commands["inspect"].commands[alias]


@pytest.mark.parametrize("task", TASKS)
def test_bad_common_option_is_one_line(task):
    result = CliRunner().invoke(cli, [task, "demo", "--threads", "0"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--threads" in lines[0]
