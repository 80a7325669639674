"""Report verb: `oddspot report DIR` writes DIR/report.html."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--top", default=6, show_default=True,
              help="Images per gallery section (worst false negatives, worst false positives, best detections).")
@click.option("--thumb", default=176, show_default=True, help="Longest side of gallery thumbnails, in pixels.")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None, help="Output file [default: FOLDER/report.html].")
def report_cmd(folder: Path, top: int, thumb: int, out: Path | None) -> None:
    """Write a self-contained HTML report of an evaluate, demo or experiment output FOLDER."""
    from oddspot.report import write_report

    path = write_report(folder, top_k=top, output=out, thumb=thumb, warn=lambda m: click.echo(m, err=True))
    click.echo(f"report: {path} ({path.stat().st_size / 1e6:.2f} MB)")


def register(group: click.Group) -> None:
    """Add the report verb to the top-level group."""
    group.add_command(report_cmd)
