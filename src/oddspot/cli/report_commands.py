"""Report verb: `oddspot report DIR` writes DIR/report.html from the evaluation records in DIR."""

from __future__ import annotations

from pathlib import Path

import click


@click.command("report")
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("--top", default=6, show_default=True, type=click.IntRange(0, 100),
              help="Images per gallery section (worst false negatives, worst false positives, best detections), "
                   "0..100; capped by the gallery material evaluate stored.")
@click.option("--thumb", default=None, type=click.IntRange(16, 1024),
              help="Longest side of gallery thumbnails in pixels, 16..1024; can only shrink them [default: as stored].")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None, help="Output file [default: FOLDER/report.html].")
def report_cmd(folder: Path, top: int, thumb: int | None, out: Path | None) -> None:
    """Write a self-contained HTML report of an evaluation, demo or experiment FOLDER.

    Reads only the files evaluate wrote (metrics.json, scores.csv, curves.json, gallery/): the
    model and the dataset are not needed.
    """
    from oddspot.errors import OddspotError
    from oddspot.report import write_report

    if out is not None and (out.suffix.lower() not in (".html", ".htm") or out.is_dir()):
        raise OddspotError(f"-o {out}: the report is one .html file; pass a file name ending in .html "
                           "(nothing was overwritten)")
    path = write_report(folder, top_k=top, output=out, thumb=thumb, warn=lambda m: click.echo(m, err=True))
    click.echo(f"report: {path} ({path.stat().st_size / 1e6:.2f} MB)")


def register(group: click.Group) -> None:
    """Add the report verb to the top-level group."""
    group.add_command(report_cmd)
