"""Inspect-task verbs: `oddspot inspect fit | predict | evaluate | demo | data`.

`oddspot fit | predict | evaluate | demo` are aliases: the very same commands, registered at the
top level too.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import click

from oddspot.cli.engine_options import engine_options
from oddspot.cli.common import (
    FiniteFloat,
    apply_runtime,
    check_out,
    check_replaceable,
    common_options,
    echo_err,
    inspect_metrics_line,
    max_pixels_option,
    read_yaml_mapping,
    runtime_options,
)
from oddspot.choices import CALIBRATION_STRATEGIES as STRATEGIES
from oddspot.choices import BACKBONES, INSPECT_LAYOUTS, PROTOCOLS, TEXTURES
from oddspot.errors import OddspotError
from oddspot.runs.registry import kinds

SPLIT_HELP = ("validation: train on 80% of train/good, validate on the rest + 30% of the defects, test on "
              "the remainder; standard: the published MVTec AD protocol (all train/good, all test).")
DEMO_OUT = Path("runs/demo")
LAYOUT_HELP = ("Dataset layout of DATA: mvtec, mvtec_ad2, visa, loco, btech, ksdd2, or folder (--normal/--abnormal/"
               "--masks) [default: detected from the folder]. See docs/datasets.md.")


def layout_options(fn: Callable) -> Callable:
    """--layout and the folder layout's --normal / --abnormal / --masks, shared by fit and evaluate."""
    fn = click.option("--masks", type=click.Path(path_type=Path), default=None,
                      help="Folder layout: masks of the abnormal images, matched by stem (x.png or x_mask.png for x.jpg).")(fn)
    fn = click.option("--abnormal", type=click.Path(path_type=Path), default=None,
                      help="Folder layout: folder of abnormal (defective) images, all test images.")(fn)
    fn = click.option("--normal", type=click.Path(path_type=Path), default=None,
                      help="Folder layout: folder of normal images (every 5th, sorted, is a test image); instead of DATA.")(fn)
    return click.option("--layout", type=click.Choice(INSPECT_LAYOUTS), default=None, help=LAYOUT_HELP)(fn)


def data_folder(data: Path | None, normal: Path | None, layout: str | None, required: bool) -> Path | None:
    """DATA, or --normal (the folder layout's name for it); both, or neither when `required`, is a one-line error."""
    if data is not None and normal is not None:
        raise OddspotError("DATA and --normal both given; pass the normal images' folder once (--normal for the folder layout)")
    if normal is not None and layout not in (None, "folder"):
        raise OddspotError(f"--normal belongs to the folder layout, not --layout {layout}; pass DATA instead")
    if required and data is None and normal is None:
        raise OddspotError("no dataset given; pass DATA (a dataset folder) or --normal DIR (a folder of normal images)")
    return data if data is not None else normal


@click.command("fit")
@click.argument("data", type=click.Path(path_type=Path), required=False)
@click.option("--category", "-c", default=None, help="Category folder under DATA [default: the only one there].")
@layout_options
@click.option("--model", type=click.Choice(kinds("inspect")), default="patchcore", show_default=True,
              help="patchcore; padim; cascade (a fast gate in front of PatchCore).")
@click.option("--split", type=click.Choice(PROTOCOLS), default="validation", show_default=True, help=SPLIT_HELP)
@click.option("--calibration", type=click.Choice(STRATEGIES), default="auto", show_default=True,
              help="Threshold strategy on the validation split: f1 (needs defects), synthetic (generated "
                   "defects), quantile (of normal scores), fixed (--threshold); auto = f1 if validation has defects, else synthetic.")
@click.option("--quantile", type=FiniteFloat(0.5, 1.0, min_open=True, max_open=True), default=0.995,
              show_default=True, help="Quantile of normal validation scores for --calibration quantile.")
@click.option("--threshold", type=FiniteFloat(-1e30, 1e30), default=None, help="Image threshold for --calibration fixed.")
@click.option("--pixel-threshold", type=FiniteFloat(-1e30, 1e30), default=None,
              help="Pixel threshold for --calibration fixed.")
@click.option("--new-split", is_flag=True,
              help="Draw a new split with --seed even if --out holds one (by default an existing split.json is "
                   "reused when its --split and --seed match, and is an error otherwise).")
@click.option("--backbone", type=click.Choice(BACKBONES), default=None,
              help="Feature network [default: the config's, else efficientnet_lite0]; overrides --config. "
                   "ResNets need --weights. See docs/backbones.md.")
@click.option("--weights", default=None, metavar="FILE|URL",
              help="Backbone weights: a torchvision-format state dict (.pth/.pt/.safetensors) or an http(s)/file URL "
                   "(downloaded once to $ODDSPOT_CACHE or ~/.cache/oddspot); its sha256 is recorded in model.json.")
@common_options("Run folder to write the model to (replaced as a whole when the fit succeeds).", config="model",
                seed_help="Seed of the split, the model and synthetic defects (recorded in run.json).")
def fit_cmd(data: Path | None, category: str | None, layout: str | None, normal: Path | None, abnormal: Path | None,
            masks: Path | None, model: str, split: str, calibration: str, quantile: float,
            threshold: float | None, pixel_threshold: float | None, new_split: bool, backbone: str | None,
            weights: str | None, out: Path, config: Path | None, seed: int, threads: int, device: str) -> None:
    """Fit a detector on the normal training images of DATA/CATEGORY and calibrate it on validation.

    The calibration (thresholds, normalization) is saved inside the model (model.json).
    """
    from oddspot import inspect

    data = data_folder(data, normal, layout, required=True)
    check_out(out, data, abnormal, masks)
    where = apply_runtime(threads, device)
    options = read_yaml_mapping(config) if config is not None else {}
    options.update({k: v for k, v in (("backbone", backbone), ("weights", weights)) if v is not None})
    info = inspect.fit(data, category, out, model, options, split, seed, calibration, quantile, threshold,
                       pixel_threshold, device=where, source=str(config) if config is not None else "model options",
                       new_split=new_split, layout="folder" if normal is not None else layout, abnormal=abnormal,
                       masks=masks)
    cal = f", calibrated ({info['calibration']})" if info["calibration"] else ", not calibrated (no validation split)"
    origin = {"drawn": "drew the split", "reused": "reused the split in --out",
              "redrawn": "drew a new split (--new-split)"}[info["split_origin"]]
    click.echo(f"{origin} ({split}, seed {seed})")
    click.echo(f"fitted {model} on {info['n_train']} images of {info['category']} ({info['layout']} layout) in "
               f"{info['fit_seconds']:.1f} s{cal} -> {out}")


@click.command("predict")
@engine_options("inspect", "predict")
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("inputs", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--save-maps", is_flag=True, help="Also write raw float32 anomaly maps as maps/<path>.npy.")
@click.option("--heatmaps/--no-heatmaps", default=True, show_default=True, help="Write heatmaps/<path>.png overlays.")
@click.option("--fast-decode", is_flag=True,
              help="Decode JPEGs at a reduced scale that keeps twice the model's input size (faster; maps at that size).")
@click.option("--batch", type=click.IntRange(1, 1024), default=16, show_default=True, help="Images decoded and scored at a time.")
@runtime_options
@common_options("Folder for scores.csv, heatmaps/ and masks/.",
                seed_help="Seed of every random choice (predict makes none; accepted on every verb).")
@max_pixels_option
def predict_cmd(run: Path, inputs: tuple[Path, ...], save_maps: bool, heatmaps: bool, fast_decode: bool, batch: int,
                runtime: str, precision: str, search: str, out: Path, config: Path | None, seed: int, threads: int,
                device: str) -> None:
    """Score images (files, or folders searched recursively) with a fitted or exported RUN.

    scores.csv holds path,score and, when the model is calibrated, normalized,anomalous.
    """
    from oddspot import inspect
    from oddspot.export import load_for_inference

    check_replaceable(out, run, *inputs)
    where = apply_runtime(threads, device, lazy=True)
    model = load_for_inference(run, "inspect", runtime, precision, device=where, search=search)
    result = inspect.predict(run, inputs, out, save_maps, batch, warn=echo_err, model=model, heatmaps=heatmaps,
                             fast_decode=fast_decode)
    if not result["scored"]:
        raise OddspotError(f"none of the {result['skipped']} images could be read; they are listed in {out / 'errors.csv'}")
    tail = f", {result['skipped']} skipped (see {out / 'errors.csv'})" if result["skipped"] else ""
    click.echo(f"scored {result['scored']} images{tail} -> {out / 'scores.csv'} (runtime: {result['runtime']})")


@click.command("evaluate")
@engine_options("inspect", "evaluate")
@click.argument("run", type=click.Path(path_type=Path))
@click.argument("data", type=click.Path(path_type=Path), required=False)
@click.option("--category", "-c", default=None, help="Category folder under DATA [default: the run's category].")
@layout_options
@click.option("--split", type=click.Choice(PROTOCOLS), default=None, help="Default: the run's own split. " + SPLIT_HELP)
@click.option("--bootstrap", type=click.IntRange(0, 100_000), default=1000, show_default=True,
              help="Bootstrap resamples of the test images for image- and pixel-level confidence intervals (0: none).")
@click.option("--gallery", type=click.IntRange(0, 100), default=12, show_default=True,
              help="Images per gallery group stored for the report (0: no gallery material).")
@click.option("--report", is_flag=True, help="Also write a self-contained OUT/report.html.")
@runtime_options
@common_options("Folder for metrics.json, scores.csv, curves.json and gallery/.",
                seed_help="Seed of the bootstrap (recorded in metrics.json).")
@max_pixels_option
def evaluate_cmd(run: Path, data: Path | None, category: str | None, layout: str | None, normal: Path | None,
                 abnormal: Path | None, masks: Path | None, split: str | None, bootstrap: int, gallery: int, report: bool,
                 runtime: str, precision: str, search: str, out: Path, config: Path | None, seed: int, threads: int,
                 device: str) -> None:
    """Evaluate a fitted RUN on the test split of DATA/CATEGORY; write the evaluation record to OUT.

    Without DATA, --layout or --category, the run's own (recorded in RUN/run.json) are used.
    """
    from oddspot import inspect

    from oddspot.export import load_for_inference

    data = data_folder(data, normal, layout, required=False)
    check_replaceable(out, run, data, abnormal, masks)
    where = apply_runtime(threads, device, lazy=True)
    model = load_for_inference(run, "inspect", runtime, precision, device=where, search=search)
    m = inspect.evaluate(run, data, category, out, split, bootstrap, seed, gallery=gallery, warn=echo_err, device=where,
                         model=model, layout="folder" if normal is not None else layout, abnormal=abnormal, masks=masks)
    if report:
        from oddspot.report import write_report

        click.echo(f"report: {write_report(out, warn=echo_err)}")
    click.echo(f"{inspect_metrics_line(m)} on {m['run']['runtime']} -> {out / 'metrics.json'}")


def dataset_options(fn: Callable) -> Callable:
    """The demo dataset's size options, shared by `data` and `demo` (so `demo --config` can make a tiny demo)."""
    fn = click.option("--tile", type=click.IntRange(32, 512), default=160, show_default=True, help="Tile size in pixels.")(fn)
    fn = click.option("--n-test-bad", type=click.IntRange(0, 10_000), default=30, show_default=True,
                      help="Defective test tiles (with masks) per category.")(fn)
    fn = click.option("--n-test-good", type=click.IntRange(0, 10_000), default=20, show_default=True,
                      help="Good test tiles per category.")(fn)
    fn = click.option("--n-train", type=click.IntRange(1, 10_000), default=60, show_default=True,
                      help="Good training tiles per category.")(fn)
    return click.option("--category", "-c", "categories", multiple=True, type=click.Choice(TEXTURES),
                        help=f"Texture categories (repeatable) [default: {', '.join(TEXTURES)}].")(fn)


@click.command("demo")
@dataset_options
@common_options(f"Folder for the demo data, models, heatmaps and metrics.json [default: {DEMO_OUT}].", out_required=False,
                seed_help="Seed of the generated data and the models (recorded in metrics.json).")
def demo_cmd(categories: tuple[str, ...], n_train: int, n_test_good: int, n_test_bad: int, tile: int, out: Path | None,
             config: Path | None, seed: int, threads: int, device: str) -> None:
    """PatchCore on generated texture photos: build the data, fit, evaluate, print a table, write a report.

    The dataset options (also settable in --config) shrink it: e.g. one category, a few 64-px tiles.
    """
    from oddspot import inspect
    from oddspot.report import write_report

    where = apply_runtime(threads, device)
    out = out if out is not None else DEMO_OUT
    check_out(out)
    inspect.demo(out, seed=seed, categories=categories or TEXTURES, device=where, n_train=n_train,
                 n_test_good=n_test_good, n_test_bad=n_test_bad, tile=tile)
    report = write_report(out, warn=echo_err)
    click.echo(f"metrics: {out / 'metrics.json'}   heatmaps: {out / 'heatmaps'}   report: {report}")


@click.command("data")
@dataset_options
@common_options("Folder to write the dataset to (MVTec AD layout).", seed_help="Seed of the tiles and defects.")
def data_cmd(categories: tuple[str, ...], n_train: int, n_test_good: int, n_test_bad: int, tile: int, out: Path,
             config: Path | None, seed: int, threads: int, device: str) -> None:
    """Write the demo's dataset: tiles of texture photos, with synthetic defects and their masks."""
    from oddspot import inspect

    check_out(out)
    apply_runtime(threads, device)
    cats = categories or TEXTURES
    inspect.data(out, seed, cats, n_train=n_train, n_test_good=n_test_good, n_test_bad=n_test_bad, tile=tile)
    click.echo(f"wrote {len(cats)} categories ({', '.join(cats)}) -> {out}; try `oddspot inspect fit {out} -c {cats[0]} -o RUN`")


VERBS = (fit_cmd, predict_cmd, evaluate_cmd, demo_cmd, data_cmd)
ALIASES = (fit_cmd, predict_cmd, evaluate_cmd, demo_cmd)


def register(group: click.Group) -> None:
    """Add the `inspect` group and, as aliases, its fit / predict / evaluate / demo at the top level."""

    @group.group("inspect")
    def inspect_group() -> None:
        """Images (MVTec AD layout): PatchCore, PaDiM, Cascade. `oddspot fit|predict|evaluate|demo` are aliases."""

    for command in VERBS:
        inspect_group.add_command(command)
    for command in ALIASES:
        group.add_command(command)
