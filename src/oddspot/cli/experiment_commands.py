"""Study verbs: `shift` (a shifted copy of a dataset) and `experiment` (a grid of cells from a config)."""

from __future__ import annotations

from pathlib import Path

import click

from oddspot.cli.common import SEED, THREADS, check_out
from oddspot.choices import SEVERITY_SCALE
from oddspot.choices import SHIFT_ONLY as ONLY_CHOICES


@click.command("shift")
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Folder for the shifted copy.")
@click.option("--severity", type=click.Choice(tuple(SEVERITY_SCALE)), default="moderate", show_default=True,
              help="Scale of every parameter range (moderate = the documented ranges).")
@click.option("--only", type=click.Choice(ONLY_CHOICES), default=None,
              help="Apply one transform family (geometric, photometric, illumination) or one transform.")
@click.option("--seed", type=SEED, default=0, show_default=True, help="Base seed; image i uses seed + i.")
def shift_cmd(data: Path, out: Path, severity: str, only: str | None, seed: int) -> None:
    """Write a shifted copy of the MVTec-layout dataset DATA (masks warped with their images)."""
    from oddspot.data.shift import MANIFEST_FILE, shift_dataset

    check_out(out, data)
    from oddspot.files import staged_folder

    with staged_folder(out, (data,)) as stage:  # an earlier shifted copy in --out is replaced whole
        manifest = shift_dataset(data, stage, severity, only, seed, warn=lambda m: click.echo(m, err=True))
    if manifest["errors"] and not manifest["images"]:
        from oddspot.errors import OddspotError

        raise OddspotError(f"none of the {len(manifest['errors'])} images could be shifted; they are listed under "
                           f"errors in {out / MANIFEST_FILE}")
    tail = f", {len(manifest['errors'])} skipped" if manifest["errors"] else ""
    click.echo(f"shifted {len(manifest['images'])} images ({severity}{', only ' + only if only else ''}){tail} "
               f"-> {out} (parameters in {out / MANIFEST_FILE})")


@click.command("experiment")
@click.argument("config", type=click.Path(path_type=Path))
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None,
              help="Results folder (default: the config's `out`, relative to the config file).")
@click.option("--list", "list_only", is_flag=True, help="Print the cells and whether they are done; run nothing.")
@click.option("--threads", type=THREADS, default=2, show_default=True, help="CPU threads for torch.")
def experiment_cmd(config: Path, out: Path | None, list_only: bool, threads: int) -> None:
    """Run the study in CONFIG.yaml: every protocol x detector x setting x category cell, resumably."""
    import torch

    from oddspot.errors import OddspotError
    from oddspot.experiments.config import load_config
    from oddspot.experiments.runner import cell_status, run_experiment

    check_out(out, config)
    torch.set_num_threads(threads)
    cfg = load_config(config, out)
    if list_only:
        for cell, status in cell_status(cfg):
            click.echo(f"{status:8s} {cell.cell_id}")
        return
    summary = run_experiment(cfg, echo=click.echo)
    if summary["failed"] and not summary["ok"]:
        raise OddspotError(f"all {summary['failed']} cells failed; see the error.txt of each under {cfg.out / 'cells'}")
    click.echo(f"{summary['ok']} cells ok ({summary['skipped']} already done), {summary['failed']} failed "
               f"-> {summary['results_md']}")


def register(group: click.Group) -> None:
    """Add the study verbs to the top-level group."""
    group.add_command(shift_cmd)
    group.add_command(experiment_cmd)
