"""Verbs on run folders of any task: `oddspot upgrade RUN`, `oddspot export RUN`."""

from __future__ import annotations

from pathlib import Path

import click

from oddspot.choices import EXPORT_FORMATS, PRECISIONS
from oddspot.cli.common import SEED, THREADS, apply_runtime, check_out


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


@click.command("export")
@click.argument("run", type=click.Path(path_type=Path))
@click.option("--format", "fmt", type=click.Choice(EXPORT_FORMATS), default="openvino", show_default=True,
              help="openvino: an OpenVINO IR (.xml + .bin); onnx: one .onnx file for ONNX Runtime.")
@click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
              help="fp32: equal to torch within 1e-4; bf16: OpenVINO computes in bf16 where the CPU has it; "
                   "int8: post-training static quantization calibrated on normal images.")
@click.option("--calibration", type=click.Path(path_type=Path), default=None,
              help="Folder of normal images for int8 (default: the run's own training images).")
@click.option("--samples", type=click.IntRange(1, 10_000), default=64, show_default=True,
              help="Calibration images for int8 (a seeded sample).")
@click.option("--out", "-o", "out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for the exported model (a run folder that `predict` runs without torch).")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Seed of the calibration sample (recorded).")
@click.option("--threads", type=THREADS, default=2, show_default=True, help="CPU threads.")
def export_cmd(run: Path, fmt: str, precision: str, calibration: Path | None, samples: int, out: Path, seed: int,
               threads: int) -> None:
    """Export the network of a fitted RUN to OpenVINO or ONNX; `oddspot predict OUT ...` runs it without torch."""
    from oddspot.export.folder import export_run

    check_out(out, run, calibration)
    apply_runtime(threads, "cpu")
    info = export_run(run, fmt, precision, out, calibration, samples, seed)
    extra = f", int8 calibrated on {info['calibration_images']} images" if info["calibration_images"] else ""
    click.echo(f"exported {', '.join(info['graphs'])} of {run} as {fmt} {precision} ({info['bytes'] / 1e6:.1f} MB{extra}) -> {out}")


def register(group: click.Group) -> None:
    """Attach the run-folder verbs to the top-level group."""
    group.add_command(upgrade_cmd)
    group.add_command(export_cmd)
