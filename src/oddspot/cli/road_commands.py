"""Road-task verbs: `oddspot road fit|predict|evaluate|demo|data`, each with the common options
(`--out/-o`, `--config`, `--seed`, `--threads`, `--device`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from oddspot.cli.engine_options import engine_options
from oddspot.cli.common import (
    FiniteFloat,
    apply_runtime,
    check_out,
    check_replaceable,
    common_options,
    echo_err,
    max_pixels_option,
    read_yaml_mapping,
    runtime_options,
)
from oddspot.choices import FEATURE_SOURCES, HEAT_RELIABILITY, ROAD_LAYOUTS
from oddspot.errors import OddspotError

DEMO_OUT = Path("runs/demo-road")
# Fit flags: option name -> (section of RoadConfig, key); section None = a top-level option.
FIT_FLAGS: dict[str, tuple[str | None, str]] = {
    "num_classes": ("model", "num_classes"), "aspp_rates": ("model", "aspp_rates"),
    "aspp_channels": ("model", "aspp_channels"), "decoder_channels": ("model", "decoder_channels"),
    "epochs": ("train", "epochs"), "batch_size": ("train", "batch_size"), "optimizer": ("train", "optimizer"),
    "lr": ("train", "lr"), "schedule": ("train", "schedule"), "patience": ("train", "patience"),
    "freeze": ("train", "freeze"), "max_train_images": ("train", "max_train_images"),
    "eval_size": ("train", "eval_size"), "class_weighting": ("train", "class_weighting"),
    "features": ("scores", "features"), "temperature": ("scores", "temperature"), "sigma": ("scores", "sigma"),
    "score": (None, "score"),
    "sml_boundary_width": ("scores", "sml_boundary_width"), "sml_boundary_iterations": ("scores", "sml_boundary_iterations"),
    "sml_smoothing_dilation": ("scores", "sml_smoothing_dilation"), "heat_reliability": ("scores", "heat_reliability"),
    "heat_test_normalization": ("scores", "heat_test_normalization"),
}
# Augmentation flags of fit: option name -> key of train.augment (AugmentConfig).
AUGMENT_FLAGS: dict[str, str] = {"augment_scale": "scale", "augment_flip": "flip", "augment_rotate": "rotate",
                                 "augment_colour": "colour", "augment_blur": "blur", "rotation": "rotation_degrees"}


def _pair(text: str, option: str, cast: Any = int, sep: str = "x") -> tuple[Any, Any]:
    parts = text.lower().split(sep)
    try:
        if len(parts) != 2:
            raise ValueError
        return cast(parts[0]), cast(parts[1])
    except ValueError:
        raise OddspotError(f"{option} {text!r}: expected two numbers like 1{sep}2") from None


def _section(options: dict[str, Any], name: str, source: str) -> dict[str, Any]:
    value = options.setdefault(name, {})
    if not isinstance(value, dict):
        raise OddspotError(f"{source}: {name} must be a mapping of option: value")
    return value


def fit_options(config: Path | None, seed: int, seed_given: bool, flags: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """RoadConfig options: the --config YAML (nested model / train / scores mappings), then the flags
    given on the command line (flags win). `--seed` seeds training and score fitting unless the
    YAML sets those seeds and --seed is not given. Returns (options, where they came from)."""
    source = str(config) if config is not None else "road fit options"
    options = read_yaml_mapping(config) if config is not None else {}
    train, scores = _section(options, "train", source), _section(options, "scores", source)
    for section in (train, scores):
        if seed_given or "seed" not in section:
            section["seed"] = seed
    given = {k: v for k, v in flags.items() if v is not None}
    if "aspp_rates" in given:
        try:
            given["aspp_rates"] = [int(r) for r in given["aspp_rates"].split(",")]
        except ValueError:
            raise OddspotError(f"--aspp-rates {given['aspp_rates']!r}: expected integers like 6,12,18") from None
    if "eval_size" in given:
        given["eval_size"] = list(_pair(given["eval_size"], "--eval-size"))
    if "freeze" in given and given["freeze"].lower() == "none":
        given["freeze"] = None
    for name, value in given.items():
        if name in ("crop", "scale_range") or name in AUGMENT_FLAGS:
            continue
        section, key = FIT_FLAGS[name]
        (options if section is None else _section(options, section, source))[key] = value
    if "crop" in given or "scale_range" in given or set(AUGMENT_FLAGS) & set(given):
        augment = train.setdefault("augment", {})
        if not isinstance(augment, dict):
            raise OddspotError(f"{source}: train.augment must be a mapping of option: value")
        if "crop" in given:
            augment["crop_size"] = list(_pair(given["crop"], "--crop"))
        if "scale_range" in given:
            augment["scale_range"] = list(_pair(given["scale_range"], "--scale-range", float, "-"))
        augment.update({key: given[name] for name, key in AUGMENT_FLAGS.items() if name in given})
    return options, source


TTA_SCALES_HELP = ("Test-time multi-scale averaging: network input scales relative to the model's input size, "
                   "e.g. 0.75,1.0,1.25 (0.25..4; torch runtime) [default: 1.0].")
TTA_FLIP_HELP = "Test-time averaging with the mirrored image too (horizontal flip)."


def local_tta(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Refuse --scales / --flip with --engine ray (its workers run one plain pass), instead of ignoring them."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        if kwargs.get("engine") == "ray" and (kwargs.get("scales") is not None or kwargs.get("flip")):
            raise OddspotError("--scales/--flip: test-time augmentation runs with --engine local only; leave them out")
        return fn(*args, **kwargs)

    return run


def miou_summary(metrics: dict[str, Any]) -> str:
    """One line: validation and test mIoU in both conventions, and the test-time augmentation."""
    seg, test, tta = metrics["segmentation"], metrics["segmentation_test"], metrics.get("tta") or {}
    augmentation = (f"scales {','.join(f'{s:g}' for s in tta.get('scales', [1.0]))}"
                    + (" + flip" if tta.get("flip") else "")) if tta.get("passes", 1) > 1 else "none"
    return (f"mIoU over classes present / over all classes (absent = 0, StreetHazards code): validation "
            f"{seg['miou_present_classes']:.3f} / {seg['miou_all_classes']:.3f}, test {test['miou_present_classes']:.3f} / "
            f"{test['miou_all_classes']:.3f} (anomaly pixels count as false positives); test-time augmentation: {augmentation}")


def register(group: click.Group) -> None:
    """Attach the `road` group to the top-level CLI."""

    @group.group("road")
    def road() -> None:
        """Road scenes: segmentation network + per-pixel anomaly scores (StreetHazards layout)."""

    @road.command("fit")
    @click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
    @common_options("Run folder to write (model.json + model.safetensors, and the training state).", config="model",
                    seed_help="Seed of training and score fitting (crops, batches, pixel subsets).")
    @click.option("--resume", is_flag=True, help="Continue the interrupted fit whose training state is in --out.")
    @click.option("--epochs", type=click.IntRange(1, 100_000), default=None, help="[default: 30]")
    @click.option("--batch-size", type=click.IntRange(1, 1024), default=None, help="[default: 8]")
    @click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default=None, help="[default: adamw]")
    @click.option("--lr", type=FiniteFloat(0.0, 10.0, min_open=True), default=None, help="[default: 0.001]")
    @click.option("--schedule", type=click.Choice(["poly", "cosine"]), default=None, help="[default: poly]")
    @click.option("--patience", type=click.IntRange(0, 100_000), default=None, help="Early stopping: epochs without mIoU gain [default: 5].")
    @click.option("--crop", default=None, help="Training crop HxW; smaller where every image of a batch, scaled, is "
                                               "[default: 384x384].")
    @click.option("--scale-range", default=None, help="Multi-scale crop range, a scale per image; > 1 zooms in "
                                                      "[default: 0.5-2.0].")
    @click.option("--augment-scale/--no-augment-scale", default=None, help="Multi-scale crops [default: on].")
    @click.option("--augment-flip/--no-augment-flip", default=None, help="Horizontal flips [default: on].")
    @click.option("--augment-rotate/--no-augment-rotate", default=None, help="Random rotation [default: off].")
    @click.option("--rotation", type=FiniteFloat(0.0, 180.0), default=None,
                  help="Rotation range in +- degrees, with --augment-rotate [default: 10].")
    @click.option("--augment-colour/--no-augment-colour", default=None,
                  help="Brightness / contrast / saturation jitter [default: on].")
    @click.option("--augment-blur/--no-augment-blur", default=None, help="Random Gaussian blur [default: on].")
    @click.option("--freeze", default=None, help="Freeze the backbone up to this stage, or 'none' [default: stage1].")
    @click.option("--num-classes", type=click.IntRange(2, 254), default=None, help="Known classes, checked against the data [default: 13].")
    @click.option("--aspp-rates", default=None, help="[default: 6,12,18]")
    @click.option("--aspp-channels", type=click.IntRange(1, 4096), default=None, help="[default: 128]")
    @click.option("--decoder-channels", type=click.IntRange(1, 4096), default=None, help="[default: 128]")
    @click.option("--eval-size", default=None, help="Run the network at HxW for validation, scoring and prediction.")
    @click.option("--max-train-images", type=click.IntRange(1, 10**9), default=None, help="Seeded subset of the training split.")
    @click.option("--class-weighting", type=click.Choice(["sqrt_inverse", "none"]), default=None,
                  help="Cross-entropy class weights from training pixel frequencies [default: sqrt_inverse].")
    @click.option("--features", type=click.Choice(FEATURE_SOURCES), default=None,
                  help="Feature map of the mahalanobis, fusion and heat scores: a decoder map or a backbone tap "
                       "(backbone_low: model.low_level; backbone_high: model.high_level) [default: low_level].")
    @click.option("--temperature", type=FiniteFloat(0.0, 100.0, min_open=True), default=None, help="Energy temperature [default: 1].")
    @click.option("--sigma", type=FiniteFloat(0.0, 50.0), default=None, help="Fusion smoothing in pixels [default: 1].")
    @click.option("--score", default=None, help="Score the decisions use [default: fusion].")
    @click.option("--sml-boundary-width", type=click.IntRange(0, 64), default=None,
                  help="sml_full: boundary band suppressed, in pixels [default: 4].")
    @click.option("--sml-boundary-iterations", type=click.IntRange(0, 64), default=None,
                  help="sml_full: suppression iterations; divides the width [default: 4].")
    @click.option("--sml-smoothing-dilation", type=click.IntRange(1, 64), default=None,
                  help="sml_full: spacing of the 7 x 7 Gaussian's taps [default: 6].")
    @click.option("--heat-reliability", type=click.Choice(HEAT_RELIABILITY), default=None,
                  help="heat: per-pixel weights of its components [default: variance].")
    @click.option("--heat-test-normalization/--no-heat-test-normalization", default=None,
                  help="heat: normalize each image by its OWN statistics (uses test data) [default: off].")
    @click.pass_context
    def fit(ctx: click.Context, data: Path, out: Path, config: Path | None, seed: int, threads: int, device: str,
            resume: bool, **flags: Any) -> None:
        """Train DeepLabV3+ on DATA (StreetHazards layout), fit the anomaly scores and thresholds, save to --out.

        --config is a YAML file of RoadConfig options (nested `model`, `train`, `scores` mappings,
        and `score`, `image_quantile`); flags given on the command line override it.
        """
        from oddspot.configs import from_mapping
        from oddspot.road.estimator import RoadConfig, RoadModel
        from oddspot.runs.contract import MODEL_FILE

        check_out(out, data)
        dev = apply_runtime(threads, device)
        seed_given = ctx.get_parameter_source("seed") == click.core.ParameterSource.COMMANDLINE
        options, source = fit_options(config, seed, seed_given, flags)
        cfg = from_mapping(RoadConfig, options, source)
        if (out / MODEL_FILE).exists():
            raise OddspotError(f"{out}: already holds a fitted model; choose another --out")
        if (out / "config.json").exists():
            raise OddspotError(f"{out}: holds an oddspot 0.1 road run; choose another --out "
                               f"(convert that run with `oddspot upgrade {out}`)")
        model = RoadModel(cfg, device=dev).fit(data, out, resume=resume, log=echo_err)
        model.save(out)
        best = model.state["best"]
        rule = model.image_rule.rule if model.image_rule is not None else "none"
        click.echo(f"best validation mIoU {best['miou']:.3f} at epoch {best['epoch']}; decision score {cfg.score} "
                   f"(image threshold: {rule}); model in {out}")

    @road.command("predict")
    @local_tta
    @engine_options("road", "predict")
    @click.argument("run", type=click.Path(path_type=Path))
    @click.argument("images", nargs=-1, required=True)
    @common_options("Folder for scores.csv, errors.csv, score maps (.npy) and panels.")
    @click.option("--save-score", "save_scores", multiple=True,
                  help="Also save this score's maps (repeatable; the decision score's are always saved).")
    @click.option("--no-panels", is_flag=True, help="Only write scores and score maps.")
    @click.option("--scales", default=None, help=TTA_SCALES_HELP)
    @click.option("--flip", is_flag=True, help=TTA_FLIP_HELP)
    @runtime_options
    @max_pixels_option
    def predict(run: Path, images: tuple[str, ...], out: Path, config: Path | None, seed: int, threads: int, device: str,
                save_scores: tuple[str, ...], no_panels: bool, scales: str | None, flip: bool, runtime: str, precision: str,
                search: str) -> None:
        """Score IMAGES (files or folders) with the model in RUN.

        Writes scores.csv (path,score,normalized,anomalous,flagged_pixels), `<name>_<score>.npy` maps,
        `<name>_panel.png` panels (input | prediction | overlay | confidence | anomaly) and errors.csv
        (images that could not be read; the others are still scored).
        """
        from oddspot.export import load_for_inference
        from oddspot.road.predict import predict as predict_images
        from oddspot.road.tta import TTA, parse_scales

        tta = TTA(parse_scales(scales), flip)
        check_replaceable(out, run, *images)
        dev = apply_runtime(threads, device, lazy=True)
        model = load_for_inference(run, "road", runtime, precision, device=dev, search=search)
        result = predict_images(model, images, out, save_scores=save_scores, panels=not no_panels, log=echo_err,
                                tta=tta)
        if not result["images"]:
            raise OddspotError(f"none of the {result['errors']} images could be read; they are listed in "
                               f"{out / 'errors.csv'}")
        flagged = ("no decisions (model without an image threshold)" if result["anomalous"] is None
                   else f"{result['anomalous']} anomalous")
        failed = f"; {result['errors']} skipped (see {out / 'errors.csv'})" if result["errors"] else ""
        click.echo(f"{result['score']}: {result['images']} images scored on {getattr(model, 'runtime', 'torch')}, "
                   f"{flagged}{failed} -> {out / 'scores.csv'}")

    @road.command("evaluate")
    @local_tta
    @engine_options("road", "evaluate")
    @click.argument("run", type=click.Path(path_type=Path))
    @click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
    @common_options("Folder for the evaluation record (metrics.json, scores.csv, curves.json, panels/).")
    @click.option("--batch-size", type=click.IntRange(1, 1024), default=8, show_default=True,
                  help="Images per batch of the validation mIoU pass.")
    @click.option("--panels", type=click.IntRange(0, 1000), default=4, show_default=True,
                  help="Prediction panels of the first test images, for the report.")
    @click.option("--report", is_flag=True, help="Also write OUT/report.html.")
    @click.option("--layout", type=click.Choice(ROAD_LAYOUTS), default="auto", show_default=True,
                  help="DATA's layout; the benchmarks with binary labels (Fishyscapes, Road Anomaly, "
                       "SegmentMeIfYouCan) pool their labelled pixels, without mIoU.")
    @click.option("--scales", default=None, help=TTA_SCALES_HELP)
    @click.option("--flip", is_flag=True, help=TTA_FLIP_HELP)
    @runtime_options
    @max_pixels_option
    def evaluate(run: Path, data: Path, out: Path, config: Path | None, seed: int, threads: int, device: str,
                 batch_size: int, panels: int, report: bool, layout: str, scales: str | None, flip: bool, runtime: str,
                 precision: str, search: str) -> None:
        """mIoU on DATA's validation split and every anomaly score over every pixel of its test split.

        With a benchmark of binary labels (--layout, detected by default), every anomaly score over
        every labelled pixel of the set, void excluded, on the runtime --runtime picks (an exported
        model is checked on the benchmark as it will run). A StreetHazards folder is evaluated with the
        torch model (its validation mIoU runs the network itself).
        """
        from rich import box
        from rich.console import Console
        from rich.table import Table

        from oddspot.road.estimator import RoadModel
        from oddspot.road.evaluate import evaluate as evaluate_model
        from oddspot.road.evaluate import summary_rows

        from oddspot.data.road_benchmarks import detect_road_layout
        from oddspot.road.external import evaluate_benchmark

        from oddspot.road.tta import TTA, parse_scales

        tta = TTA(parse_scales(scales), flip)
        check_out(out, run, data)
        kind = detect_road_layout(data) if layout == "auto" else layout
        if tta.active and kind != "streethazards":
            raise OddspotError(f"--scales/--flip: test-time augmentation runs on the streethazards layout only, not "
                               f"{kind}; leave them out")
        dev = apply_runtime(threads, device)
        if kind == "streethazards":
            if search != "exact":
                raise OddspotError(f"--search {search}: only PatchCore models search a memory bank; use --search exact")
            if runtime not in ("auto", "torch") or precision != "fp32":
                raise OddspotError(f"--runtime {runtime} --precision {precision}: a StreetHazards folder is evaluated with "
                                   "the torch model (its validation mIoU runs the network); leave them out, or use them "
                                   "on a benchmark of binary labels")
            metrics = evaluate_model(RoadModel.load(run, device=dev), data, out, batch_size=batch_size, panels=panels,
                                     run=run, log=echo_err, tta=tta)
        else:
            from oddspot.export import load_for_inference

            model = load_for_inference(run, "road", runtime, precision, device=dev, search=search)
            metrics = evaluate_benchmark(model, data, kind, out, panels=panels, run=run, log=echo_err)
        seg = metrics["segmentation"]
        console = Console()
        if seg["miou"] is None:
            click.echo(f"{kind}: {seg['note']}")
        else:
            table = Table(title=f"validation mIoU {seg['miou']:.3f} ({seg['n_images']} images)")
            table.add_column("class")
            table.add_column("IoU", justify="right")
            for name, v in seg["iou"].items():
                table.add_row(name, f"{v:.3f}")
            console.print(table)
            if "segmentation_test" in metrics:
                click.echo(miou_summary(metrics))
        t2 = Table(title=f"{metrics['anomaly']['split']} pixel anomaly scores ({metrics['anomaly']['n_pixels']} pixels)",
                   box=box.SIMPLE)
        cols = ("score", "auroc", "ap", "fpr95_first", "fpr95_nearest", "per_image_auroc", "f1_at_threshold")
        heads = ("score", "AUROC", "AP", "FPR95 1st", "FPR95 near", "AUROC/img", "F1@thr")
        for head in heads:
            t2.add_column(head, justify="left" if head == "score" else "right")
        for row in summary_rows(metrics):
            t2.add_row(*(row["score"],) + tuple("n/a" if row[c] is None else f"{row[c]:.3f}" for c in cols[1:]))
        console.print(t2)
        click.echo("AUROC/AP/FPR95 pool all test pixels; FPR95 1st = first point with TPR >= 0.95, near = recall nearest "
                   "0.95 (StreetHazards); AUROC/img = mean over images with anomalies; F1@thr at the validation threshold")
        comp = metrics["anomaly"].get("components")
        if comp:
            click.echo(f"components ({comp['score']} >= {comp['threshold']:.4g}, the stored threshold; "
                       f"{comp['n_gt_components']} anomalies, {comp['n_pred_components']} predicted): "
                       f"sIoU {comp['siou_gt']:.3f}  PPV {comp['ppv']:.3f}  mean F1 {comp['mean_f1']:.3f}")
        if report:
            from oddspot.report import write_report

            click.echo(f"report: {write_report(out, warn=echo_err)}")
        if metrics.get("skipped_files"):
            click.echo(f"{len(metrics['skipped_files'])} files skipped (listed under skipped_files in metrics.json)")
        if (metrics.get("unlabeled_images") or {}).get("n_images"):
            click.echo(f"{metrics['unlabeled_images']['n_images']} images without labels not evaluated "
                       "(score them with `oddspot road predict`)")
        click.echo(f"wrote {out / 'metrics.json'}")

    @road.command("demo")
    @common_options(f"Folder for the demo data, model, evaluation and report [default: {DEMO_OUT}].", out_required=False,
                    seed_help="Seed of the toy streets, training and score fitting.")
    @click.option("--n-train", type=click.IntRange(1, 100_000), default=240, show_default=True, help="Training scenes.")
    @click.option("--n-val", type=click.IntRange(1, 100_000), default=40, show_default=True, help="Validation scenes.")
    @click.option("--n-test", type=click.IntRange(1, 100_000), default=60, show_default=True, help="Test scenes.")
    @click.option("--size", default="128x256", show_default=True, help="Scene size HxW.")
    @click.option("--epochs", type=click.IntRange(1, 100_000), default=12, show_default=True, help="Training epochs.")
    def demo(out: Path | None, config: Path | None, seed: int, threads: int, device: str, n_train: int, n_val: int,
             n_test: int, size: str, epochs: int) -> None:
        """Generate toy streets, fit, evaluate and write the report (minutes on 2 cores).

        The data and training options (also settable in --config) shrink it, e.g. to seconds.
        """
        from oddspot.report import write_report
        from oddspot.road.demo import run_road_demo

        dev = apply_runtime(threads, device)
        folder = out if out is not None else DEMO_OUT
        check_out(folder)
        h, w = _pair(size, "--size")
        run_road_demo(folder, seed=seed, device=dev, epochs=epochs,
                      data_options={"height": h, "width": w, "n_train": n_train, "n_val": n_val, "n_test": n_test})
        click.echo(f"report: {write_report(folder, warn=echo_err)}")

    @road.command("data")
    @common_options("Folder to write the toy streets to.", seed_help="Seed of the generated scenes.")
    @click.option("--n-train", type=click.IntRange(1, 100_000), default=240, show_default=True, help="Training scenes.")
    @click.option("--n-val", type=click.IntRange(1, 100_000), default=40, show_default=True, help="Validation scenes.")
    @click.option("--n-test", type=click.IntRange(1, 100_000), default=60, show_default=True, help="Test scenes (with unseen objects).")
    @click.option("--size", default="128x256", show_default=True, help="Scene size HxW.")
    def data(out: Path, config: Path | None, seed: int, threads: int, device: str, n_train: int, n_val: int,
             n_test: int, size: str) -> None:
        """Write procedural toy street scenes in the StreetHazards layout to --out."""
        from oddspot.data.toy_streets import ToyStreetConfig, generate_toy_streets

        check_out(out)
        apply_runtime(threads, device)
        h, w = _pair(size, "--size")
        from oddspot.files import staged_folder

        with staged_folder(out) as stage:  # an earlier data set in --out is replaced whole
            generate_toy_streets(stage, ToyStreetConfig(height=h, width=w, n_train=n_train, n_val=n_val,
                                                        n_test=n_test, seed=seed))
        click.echo(f"wrote toy streets to {out} ({n_train} train, {n_val} val, {n_test} test)")
