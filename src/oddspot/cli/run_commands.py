"""Verbs on run folders of any task: `oddspot upgrade RUN`."""

from __future__ import annotations

from pathlib import Path

import click

from oddspot.cli.common import check_out


@click.command("upgrade")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None,
              help="Write the converted run here and leave RUN as it is (default: convert RUN in place).")
def upgrade_cmd(run: Path, out: Path | None) -> None:
    """Convert a run folder written by oddspot 0.1 (format 1) to the current run contract (format 2)."""
    from oddspot.runs.upgrade import upgrade

    check_out(out, run)
    written = upgrade(run, out)
    click.echo(f"upgraded {run} to format 2 -> {written}")


def register(group: click.Group) -> None:
    """Attach the run-folder verbs to the top-level group."""
    group.add_command(upgrade_cmd)
