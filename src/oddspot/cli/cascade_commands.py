"""Cascade study verb: `oddspot sweep-gate RUN [DATA -c CAT] -o OUT` sweeps the gate's two thresholds."""

from __future__ import annotations

from pathlib import Path

import click

from oddspot.choices import PROTOCOLS
from oddspot.cli.common import DEVICES, THREADS, apply_runtime, check_replaceable


@click.command("sweep-gate")
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path), required=False)
@click.option("--category", "-c", default=None, help="Category under DATA [default: the run's, or the only one there].")
@click.option("--split", type=click.Choice(PROTOCOLS), default=None, help="Test split protocol [default: the run's own].")
@click.option("--steps", type=click.IntRange(1, 100), default=10, show_default=True,
              help="Quantile steps of the gate values per threshold: (steps + 1) candidates each, 1..100.")
@click.option("--batch", type=click.IntRange(1, 1024), default=32, show_default=True, help="Images scored at a time.")
@click.option("--threads", type=THREADS, default=2, show_default=True, help="CPU threads for torch and numpy kernels.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="Where networks run: auto uses a GPU when there is one.")
@click.option("--out", "-o", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for results.csv, sweep.json and tradeoff.png (replaced as a whole).")
def sweep_gate_cmd(run: Path, data: Path | None, category: str | None, split: str | None, steps: int, batch: int, threads: int,
                   device: str, out: Path) -> None:
    """Sweep the low / high gate thresholds of a fitted cascade RUN on the test split of DATA/CATEGORY
    (default: the data the run was fitted on): localizer call rate, latency per image, image AUROC
    and F1 per setting (the model is not changed)."""
    from oddspot.inspect.gate_sweep import sweep_gate

    check_replaceable(out, run, data)
    where = apply_runtime(threads, device)
    rows = sweep_gate(run, data, category, out, split, steps, batch, device=where)
    fitted = next(r for r in rows if r["fitted"])
    click.echo(f"{len(rows)} settings -> {out / 'results.csv'}, {out / 'tradeoff.png'}")
    click.echo(f"fitted thresholds: call rate {fitted['call_rate']:.1%}, {fitted['latency_ms']:.1f} ms/image, "
               f"image AUROC {fitted['image_auroc']:.4f}")


def register(group: click.Group) -> None:
    """Add the sweep-gate verb to the top-level group."""
    group.add_command(sweep_gate_cmd)
