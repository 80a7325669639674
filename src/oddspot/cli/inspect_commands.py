"""Inspect-task verbs: fit, predict, evaluate, demo."""

from __future__ import annotations

from pathlib import Path

import click

from oddspot.calibration import STRATEGIES
from oddspot.data.splits import PROTOCOLS
from oddspot.detectors.registry import DETECTORS

SPLIT_HELP = ("validation: train on 80% of train/good, validate on the rest + 30% of the defects, test on "
              "the remainder; standard: the published MVTec AD protocol (all train/good, all test).")


@click.command("fit")
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--category", "-c", required=True, help="Category folder under DATA (MVTec AD layout).")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Run folder to write the model to.")
@click.option("--model", type=click.Choice(DETECTORS), default="patchcore", show_default=True,
              help="patchcore; padim; cascade (a fast gate in front of PatchCore).")
@click.option("--config", "config_file", type=click.Path(path_type=Path), help="YAML file of detector options.")
@click.option("--split", type=click.Choice(PROTOCOLS), default="validation", show_default=True, help=SPLIT_HELP)
@click.option("--seed", default=0, show_default=True, help="Seed of the split and of every random choice.")
@click.option("--calibration", type=click.Choice(STRATEGIES), default="auto", show_default=True,
              help="Threshold strategy on the validation split: f1 (needs defects), synthetic (generated "
                   "defects), quantile (of normal scores), fixed (--threshold); auto = f1 if validation has defects, else synthetic.")
@click.option("--quantile", default=0.995, show_default=True, help="Quantile of normal validation scores for --calibration quantile.")
@click.option("--threshold", type=float, default=None, help="Image threshold for --calibration fixed.")
@click.option("--pixel-threshold", type=float, default=None, help="Pixel threshold for --calibration fixed.")
def fit_cmd(data: Path, category: str, out: Path, model: str, config_file: Path | None, split: str, seed: int,
            calibration: str, quantile: float, threshold: float | None, pixel_threshold: float | None) -> None:
    """Fit a detector on the normal training images of DATA/CATEGORY and calibrate it on validation."""
    from oddspot import inspection

    info = inspection.fit(data, category, out, model, inspection.read_config(config_file), split, seed,
                          calibration, quantile, threshold, pixel_threshold)
    cal = f", calibrated ({info['calibration']})" if info["calibration"] else ", not calibrated (no validation split)"
    click.echo(f"fitted {model} on {info['n_train']} images of {category} in {info['fit_seconds']:.1f} s{cal} -> {out}")


@click.command("predict")
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Folder for scores.csv and heatmaps.")
@click.option("--save-maps", is_flag=True, help="Also write raw float32 anomaly maps as maps/<path>.npy.")
def predict_cmd(run: Path, inputs: tuple[Path, ...], out: Path, save_maps: bool) -> None:
    """Score images (files, or folders searched recursively) with a fitted RUN."""
    from oddspot import inspection

    result = inspection.predict(run, inputs, out, save_maps, warn=lambda m: click.echo(m, err=True))
    tail = f", {result['skipped']} skipped (see {out / 'errors.csv'})" if result["skipped"] else ""
    click.echo(f"scored {result['scored']} images{tail} -> {out / 'scores.csv'}")


@click.command("evaluate")
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path))
@click.option("--category", "-c", required=True, help="Category folder under DATA.")
@click.option("--out", "-o", required=True, type=click.Path(path_type=Path), help="Folder for metrics.json.")
@click.option("--split", type=click.Choice(PROTOCOLS), default=None, help="Default: the run's own split. " + SPLIT_HELP)
@click.option("--bootstrap", default=1000, show_default=True, help="Bootstrap resamples for confidence intervals.")
@click.option("--seed", default=0, show_default=True, help="Seed of the bootstrap.")
@click.option("--report", is_flag=True, help="Also write a self-contained OUT/report.html.")
def evaluate_cmd(run: Path, data: Path, category: str, out: Path, split: str | None, bootstrap: int, seed: int,
                 report: bool) -> None:
    """Evaluate a fitted RUN on the test split of DATA/CATEGORY; write metrics.json."""
    from oddspot import inspection

    m = inspection.evaluate(run, data, category, out, split, bootstrap, seed)
    if report:
        from oddspot.report import write_report

        click.echo(f"report: {write_report(out, warn=lambda line: click.echo(line, err=True))}")
    pixel = m.get("pixel") or {}
    click.echo(f"image AUROC {m['image']['auroc']:.4f}  pixel AUROC {pixel.get('auroc', float('nan')):.4f}  "
               f"AUPRO {pixel.get('aupro', float('nan')):.4f} -> {out / 'metrics.json'}")


@click.command("demo")
@click.option("--out", "-o", default=Path("runs/demo"), type=click.Path(path_type=Path), show_default=True,
              help="Folder for the demo data, models, heatmaps and metrics.json.")
@click.option("--task", type=click.Choice(["inspect", "road", "video"]), default="inspect", show_default=True,
              help="inspect: PatchCore on textures; road: segmentation + unseen objects; video: abnormal frames.")
@click.option("--seed", default=0, show_default=True, help="Seed of the generated data and models.")
def demo_cmd(out: Path, task: str, seed: int) -> None:
    """Generate a small offline dataset for TASK, fit, evaluate, write metrics.json and print a table."""
    if task in ("road", "video"):
        from oddspot.report import write_report

        folder = out if out != Path("runs/demo") else Path(f"runs/demo-{task}")
        if task == "road":
            from oddspot.road.demo import run_road_demo

            run_road_demo(folder, seed=seed)
        else:
            from oddspot.video.demo import run_video_demo

            run_video_demo(folder, seed=seed)
        click.echo(f"report: {write_report(folder, warn=lambda line: click.echo(line, err=True))}")
    else:
        from oddspot.demo import run_inspect_demo

        run_inspect_demo(out, seed=seed)


def register(group: click.Group) -> None:
    """Attach the inspect verbs to the top-level group."""
    for command in (fit_cmd, predict_cmd, evaluate_cmd, demo_cmd):
        group.add_command(command)
