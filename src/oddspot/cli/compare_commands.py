"""Compare verb: `oddspot compare A B` tests whether two evaluations of one test set differ."""

from __future__ import annotations

from pathlib import Path

import click

from oddspot.cli.common import FiniteFloat


@click.command("compare")
@click.argument("a", type=click.Path(path_type=Path))
@click.argument("b", type=click.Path(path_type=Path))
@click.option("--bootstrap", "-n", type=click.IntRange(1, 100_000), default=1000, show_default=True,
              help="Paired bootstrap resamples of the test items, 1..100000.")
@click.option("--level", type=FiniteFloat(0.5, 0.999), default=0.95, show_default=True,
              help="Confidence level of the intervals; a difference is claimed when p < 1 - level.")
@click.option("--seed", type=click.IntRange(0, 2**32 - 1), default=0, show_default=True,
              help="Seed of the resamples (recorded in comparison.json).")
@click.option("--pixel/--no-pixel", default=True, show_default=True,
              help="Also compare pixel AUROC / AP and AUPRO (needs pixel_stats.npz in both folders).")
@click.option("--out", "-o", type=click.Path(path_type=Path), default=None,
              help="Folder for comparison.json and comparison.csv (replaced as a whole).")
def compare_cmd(a: Path, b: Path, bootstrap: int, level: float, seed: int, pixel: bool, out: Path | None) -> None:
    """Paired bootstrap of the difference A - B of every metric, for two evaluation folders A and B
    (`oddspot evaluate --out`) of the SAME test set: difference, interval, two-sided p-value and a verdict."""
    from oddspot.records.compare import compare

    result = compare(a, b, out, n=bootstrap, level=level, seed=seed, pixel=pixel)
    width = max(len(f"{r['level']} {r['metric']}") for r in result["rows"])
    click.echo(f"A = {a}\nB = {b}\n{result['n_items']} items, {bootstrap} paired resamples, seed {seed}, "
               f"level {level:g}")
    click.echo(f"{'metric':{width}s}  {'A':>8s}  {'B':>8s}  {'A - B':>8s}  {'interval':>20s}  {'p':>6s}")
    for r in result["rows"]:
        ci = f"[{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}]"
        click.echo(f"{r['level'] + ' ' + r['metric']:{width}s}  {r['a']:8.4f}  {r['b']:8.4f}  {r['difference']:+8.4f}  "
                   f"{ci:>20s}  {r['p_value']:6.3g}")
    for r in result["rows"]:
        click.echo(r["verdict"])
    bound = result.get("pixel_error_bound")
    if bound:
        click.echo("pixel metrics use a fixed score grid; largest error it can cause in a difference: "
                   + ", ".join(f"{k} {v:.2g}" for k, v in bound.items()))
    for note in result["notes"]:
        click.echo(f"note: {note}", err=True)
    if out is not None:
        click.echo(f"wrote {out}/comparison.json and comparison.csv")


def register(group: click.Group) -> None:
    """Add the compare verb to the top-level group."""
    group.add_command(compare_cmd)
