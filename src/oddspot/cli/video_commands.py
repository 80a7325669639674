"""Video-task verbs: `oddspot video fit|predict|evaluate|demo|data`, each with the common options
(`--out/-o`, `--config`, `--seed`, `--threads`, `--device`)."""

from __future__ import annotations

import functools
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
from oddspot.choices import VIDEO_LAYOUTS, VIDEO_TTA
from oddspot.errors import OddspotError

LAYOUTS = list(VIDEO_LAYOUTS)
PROTOCOLS = ["trained", "legacy_minmax_per_video"]
KINDS = ["motion", "autoencoder"]
DEMO_OUT = Path("runs/demo-video")
# Flags that set an option of one model kind only: option name -> that kind.
KIND_FLAGS = {
    "encoder": "autoencoder", "epochs": "autoencoder", "train_loss": "autoencoder", "pixel_error": "autoencoder",
    "pixel_weight": "autoencoder", "feature_weights": "autoencoder", "tta": "autoencoder", "power_transform": "autoencoder",
    "coreset_ratio": "motion", "gap": "motion", "flow_weight": "motion", "position_weight": "motion",
}


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise OddspotError(f"{option} {text!r} not understood; give comma-separated numbers, e.g. 1,1") from None


def _model_options(kind: str, config: Path | None, seed: int, seed_given: bool, flags: dict[str, Any]) -> dict[str, Any]:
    """Model options: the --config YAML, then the flags given on the command line (flags win)."""
    from oddspot.data.avenue import parse_size
    from oddspot.video.tta import VIEWS

    options = read_yaml_mapping(config) if config is not None else {}
    if seed_given or "seed" not in options:
        options["seed"] = seed
    given = {k: v for k, v in flags.items() if v is not None}
    for name, owner in KIND_FLAGS.items():
        if name in given and owner != kind:
            raise OddspotError(f"--{name.replace('_', '-')} applies to --model {owner}, not {kind}")
    if "size" in given:
        given["size"] = parse_size(given["size"])
    if "feature_weights" in given:
        given["feature_weights"] = _floats(given["feature_weights"], "--feature-weights")
    if "tta" in given:
        given["tta"] = VIEWS if given["tta"] else ("identity",)
    return {**options, **given}


def study_options(fn: Any) -> Any:
    """`--tta` and `--power`: studies on a fitted model at predict and evaluate, recorded in the outputs."""
    fn = click.option("--power", type=FiniteFloat(0.0, 10.0, min_open=True), default=None,
                      help="Raise each raw frame score to this power (sign kept) before smoothing and normalization "
                           "[default: the model's scores, i.e. 1]. Decisions are withheld unless 1.")(fn)
    return click.option("--tta", type=click.Choice(VIDEO_TTA), default="model", show_default=True,
                        help="Average the autoencoder's maps over views: none (identity), hflip, flips (+vflip), all "
                             "(+rot180); model = as fitted. Decisions are withheld unless model.")(fn)


def local_only(*names: str) -> Any:
    """Refuse `names` (options left at their defaults otherwise) under --engine ray, which does not run them."""

    def wrap(run: Any) -> Any:
        @functools.wraps(run)
        def checked(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("engine") == "ray":
                given = [n for n in names if kwargs.get(n) not in (None, "model", ())]
                if given:
                    flags = ", ".join(f"--{n.replace('_', '-')}" for n in given)
                    raise OddspotError(f"{flags}: not with --engine ray (it runs each model as fitted); leave "
                                       f"{'them' if len(given) > 1 else 'it'} out or use --engine local")
            return run(*args, **kwargs)

        return checked

    return wrap


def register(group: click.Group) -> None:
    """Attach the `video` group to the top-level group."""

    @group.group("video")
    def video() -> None:
        """Video task: fixed cameras, per-frame anomaly scores (Avenue, ShanghaiTech, UCSD Ped1/Ped2, frame folders)."""

    @video.command("fit")
    @click.argument("data", type=click.Path(path_type=Path))
    @common_options("Model folder to write (model.json + model.safetensors).", config="model",
                    seed_help="Seed of the model's random choices (coreset, decoder initialisation and batches).")
    @click.option("--model", "kind", type=click.Choice(KINDS), default="motion", show_default=True)
    @click.option("--layout", type=click.Choice(LAYOUTS), default="auto", show_default=True)
    @click.option("--size", default=None, help="Frame size HEIGHTxWIDTH the model works at [default: 96x128].")
    @click.option("--sigma", type=FiniteFloat(0.0, 1000.0), default=None, help="Temporal Gaussian smoothing (frames); 0 = none [default: 3].")
    @click.option("--normalization", type=click.Choice(["train_zscore", "none"]), default=None, help="[default: train_zscore]")
    @click.option("--holdout-fraction", type=FiniteFloat(0.0, 1.0, min_open=True, max_open=True), default=None,
                  help="Tail of each training video used only for the post-processor [default: 0.25].")
    @click.option("--threshold-quantile", type=FiniteFloat(0.0, 1.0, min_open=True, max_open=True), default=None,
                  help="Decision threshold: this quantile of the held-out training scores [default: 0.995].")
    @click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help="Keep decoded, resized frames here as .npy.")
    @click.option("--encoder", default=None, help="autoencoder: backbone name or 'scratch' [default: efficientnet_lite0].")
    @click.option("--epochs", type=click.IntRange(1, 10_000), default=None, help="autoencoder: training epochs [default: 10].")
    @click.option("--train-loss", type=click.Choice(["l1", "l2"]), default=None, help="autoencoder [default: l2].")
    @click.option("--pixel-error", type=click.Choice(["l1", "l2"]), default=None, help="autoencoder [default: l2].")
    @click.option("--pixel-weight", type=FiniteFloat(0.0, 1e6), default=None, help="autoencoder [default: 1].")
    @click.option("--feature-weights", default=None, help="autoencoder: one weight per feature layer [default: 1,1].")
    @click.option("--tta/--no-tta", default=None, help="autoencoder: average identity/hflip/vflip/rot180 [default: off].")
    @click.option("--power-transform/--no-power-transform", default=None,
                  help="autoencoder: Yeo-Johnson per score component [default: on].")
    @click.option("--coreset-ratio", type=FiniteFloat(0.0, 1.0, min_open=True), default=None, help="motion: memory bank fraction [default: 0.1].")
    @click.option("--gap", type=click.IntRange(1, 1000), default=None, help="motion: frames between the stacked frames [default: 4].")
    @click.option("--flow-weight", type=FiniteFloat(0.0, 1e6), default=None, help="motion: weight of the velocity cue [default: 4].")
    @click.option("--position-weight", type=FiniteFloat(0.0, 1e6), default=None, help="motion: weight of the patch position [default: 3].")
    @click.pass_context
    def fit(ctx: click.Context, data: Path, out: Path, config: Path | None, seed: int, threads: int, device: str,
            kind: str, layout: str, cache_dir: Path | None, **flags: Any) -> None:
        """Fit a model on the normal training videos of DATA and save it to --out.

        --config is a YAML file of model options (see MotionConfig / AutoencoderConfig); flags given
        on the command line override it.
        """
        from oddspot.video import pipeline

        check_out(out, data, cache_dir)
        dev = apply_runtime(threads, device)
        seed_given = ctx.get_parameter_source("seed") == click.core.ParameterSource.COMMANDLINE
        options = _model_options(kind, config, seed, seed_given, flags)
        model = pipeline.build(kind, options, source=str(config) if config is not None else f"{kind} options", device=dev)
        pipeline.fit(data, out, model, layout=layout, cache_dir=cache_dir, warn=echo_err)
        info, threshold = model.fit_info, model.post.threshold
        decided = "no decision threshold" if threshold is None else f"threshold {threshold:.4g}"
        click.echo(f"fitted {kind} on {len(info['train_videos'])} training videos ({info['fit_frames']} frames, "
                   f"{info['holdout_frames']} held out for the post-processor; {decided}) -> {out}")

    @video.command("predict")
    @local_only("tta", "power")
    @engine_options("video", "predict")
    @click.argument("run", type=click.Path(path_type=Path))
    @click.argument("frames", type=click.Path(path_type=Path))
    @common_options("Folder for scores.csv, errors.csv and settings.json.")
    @click.option("--protocol", type=click.Choice(PROTOCOLS), default="trained", show_default=True,
                  help="legacy_minmax_per_video rescales each video by its own min/max (no decisions).")
    @click.option("--cache-dir", type=click.Path(path_type=Path), default=None)
    @study_options
    @runtime_options
    @max_pixels_option
    def predict(run: Path, frames: Path, out: Path, config: Path | None, seed: int, threads: int, device: str,
                protocol: str, cache_dir: Path | None, tta: str, power: float | None, runtime: str, precision: str,
                search: str) -> None:
        """Score videos without labels with the model in RUN.

        FRAMES is a folder of frame images (one video), a folder of such folders and/or video files
        (several videos), or one video file. Writes scores.csv (video,frame,path,score,normalized,anomalous)
        and errors.csv (videos that could not be read; the others are still scored).
        """
        from oddspot.export import load_for_inference
        from oddspot.video import pipeline

        check_replaceable(out, run, frames, cache_dir)
        dev = apply_runtime(threads, device, lazy=True)
        model = load_for_inference(run, "video", runtime, precision, device=dev, search=search)
        result = pipeline.predict(run, frames, out, protocol=protocol, cache_dir=cache_dir, device=dev, warn=echo_err,
                                  model=model, tta=tta, power=power)
        why = "withheld: --tta/--power change the scores" if "decisions_withheld" in result else "model without threshold"
        flagged = f"no decisions ({why})" if result["anomalous_frames"] is None else \
            f"{result['anomalous_frames']} flagged anomalous"
        failed = f"; {result['errors']} videos skipped (see {Path(out) / 'errors.csv'})" if result["errors"] else ""
        click.echo(f"{result['kind']}: {result['frames']} frames of {result['videos']} videos scored on "
                   f"{getattr(model, 'runtime', 'torch')}, {flagged}"
                   f"{failed} -> {Path(out) / 'scores.csv'}")

    @video.command("evaluate")
    @local_only("tta", "power", "runs")
    @engine_options("video", "evaluate")
    @click.argument("run", type=click.Path(path_type=Path))
    @click.argument("data", type=click.Path(path_type=Path))
    @common_options("Folder for the evaluation record (metrics.json, scores.csv, curves.json, score_curves.png); "
                    "with --run, one such record per model in OUT/<run name>/ and the table OUT/models.csv.")
    @click.option("--run", "runs", type=click.Path(path_type=Path), multiple=True,
                  help="Another model to evaluate on the same videos (repeatable): one table of all of them.")
    @study_options
    @click.option("--layout", type=click.Choice(LAYOUTS), default="auto", show_default=True)
    @click.option("--labels", type=click.Path(path_type=Path), default=None, help="Frame folders: ground truth (.mat intervals or labels.json).")
    @click.option("--skip-first", type=click.IntRange(0, 10**9), default=0, show_default=True, help="Leave out the first N frames of every video.")
    @click.option("--protocol", type=click.Choice(PROTOCOLS), default="trained", show_default=True,
                  help="legacy_minmax_per_video rescales each test video by its own min/max (uses test statistics).")
    @click.option("--cache-dir", type=click.Path(path_type=Path), default=None)
    @runtime_options
    @max_pixels_option
    def evaluate(run: Path, data: Path, out: Path, config: Path | None, seed: int, threads: int, device: str,
                 runs: tuple[Path, ...], tta: str, power: float | None, layout: str, labels: Path | None,
                 skip_first: int, protocol: str, cache_dir: Path | None, runtime: str, precision: str,
                 search: str) -> None:
        """Score the labelled test videos of DATA with the model in RUN; write frame-level metrics and score curves.

        With --run (repeatable), evaluate RUN and every --run model on the same videos and print one table.
        """
        from oddspot.export import load_for_inference
        from oddspot.video import pipeline

        check_replaceable(out, run, *runs, data, labels, cache_dir)
        dev = apply_runtime(threads, device, lazy=True)

        def load(path: Path) -> Any:
            return load_for_inference(path, "video", runtime, precision, device=dev, search=search)

        options = {"layout": layout, "labels": labels, "skip_first": skip_first, "protocol": protocol,
                   "cache_dir": cache_dir, "device": dev, "warn": echo_err, "tta": tta, "power": power}
        if runs:
            rows = pipeline.evaluate_runs([run, *runs], data, out, load=load, **options)
            width = max(len(r["model"]) for r in rows)
            click.echo(f"{'model':<{width}}  {'kind':<11}  micro AUROC  macro AUROC  micro AP  macro AP  (tta {tta}, "
                       f"power {rows[0]['power']:g}, protocol {protocol})")
            for r in rows:
                click.echo(f"{r['model']:<{width}}  {r['kind']:<11}  {r['micro_auroc']:11.4f}  {r['macro_auroc']:11.4f}  "
                           f"{r['micro_ap']:8.4f}  {r['macro_ap']:8.4f}")
            click.echo(f"wrote {Path(out) / pipeline.MODELS_FILE}")
            return
        ev = pipeline.evaluate(run, data, out, model=load(run), **options)
        click.echo(f"{ev['kind']}: micro AUROC {ev['micro_auroc']:.4f}  macro AUROC {ev['macro_auroc']:.4f}  AP {ev['ap']:.4f}  "
                   f"({ev['frames']} frames, {len(ev['per_video'])} videos, protocol {protocol})")
        for kind, m in ev["per_event_type"].items():
            click.echo(f"  {kind}: AUROC {m['auroc']:.4f} ({m['frames']} frames)")
        d = ev["decision"]
        if d["threshold"] is not None:
            click.echo(f"  threshold {d['threshold']:.4g}: precision {d['precision']:.4f}  recall {d['recall']:.4f}  F1 {d['f1']:.4f}")
        if ev.get("skipped_videos"):
            click.echo(f"{len(ev['skipped_videos'])} videos skipped (listed under skipped_videos in metrics.json)")
        click.echo(f"wrote {Path(out) / 'metrics.json'}")

    @video.command("demo")
    @common_options(f"Folder for the demo data, models, records and report [default: {DEMO_OUT}].", out_required=False)
    @click.option("--train-videos", type=click.IntRange(1, 1000), default=4, show_default=True)
    @click.option("--test-videos", type=click.IntRange(1, 1000), default=6, show_default=True)
    @click.option("--frames", type=click.IntRange(60, 100_000), default=200, show_default=True, help="Frames per video (at least 60).")
    @click.option("--size", default="96x128", show_default=True, help="Frame size HEIGHTxWIDTH.")
    @click.option("--epochs", type=click.IntRange(1, 10_000), default=10, show_default=True, help="Autoencoder training epochs.")
    def demo(out: Path | None, config: Path | None, seed: int, threads: int, device: str, train_videos: int,
             test_videos: int, frames: int, size: str, epochs: int) -> None:
        """Generate synthetic videos, fit both models, evaluate them and write the report (a few minutes on 2 cores).

        The data and training options (also settable in --config) shrink it, e.g. to seconds.
        """
        from oddspot.data.avenue import parse_size
        from oddspot.report import write_report
        from oddspot.video.demo import run_video_demo

        dev = apply_runtime(threads, device)
        folder = out if out is not None else DEMO_OUT
        check_out(folder)
        recipe = {"num_train": train_videos, "num_test": test_videos, "num_frames": frames, "size": parse_size(size)}
        run_video_demo(folder, seed=seed, device=dev, data_options=recipe, epochs=epochs)
        click.echo(f"report: {write_report(folder, warn=echo_err)}")

    @video.command("data")
    @common_options("Folder to write the synthetic dataset to.", seed_help="Seed of the generated videos.")
    @click.option("--train-videos", type=click.IntRange(1, 1000), default=4, show_default=True)
    @click.option("--test-videos", type=click.IntRange(1, 1000), default=6, show_default=True)
    @click.option("--frames", type=click.IntRange(60, 100_000), default=200, show_default=True, help="Frames per video (at least 60).")
    @click.option("--size", default="96x128", show_default=True, help="Frame size HEIGHTxWIDTH.")
    def data(out: Path, config: Path | None, seed: int, threads: int, device: str, train_videos: int, test_videos: int,
             frames: int, size: str) -> None:
        """Write synthetic fixed-camera videos (frame-folder layout with labels.json and gt.mat) to --out."""
        from oddspot.data.avenue import parse_size
        from oddspot.data.synthetic_video import generate_video_dataset

        check_out(out)
        apply_runtime(threads, device)
        from oddspot.files import staged_folder

        with staged_folder(out) as stage:  # an earlier data set in --out is replaced whole
            summary = generate_video_dataset(stage, seed=seed, num_train=train_videos, num_test=test_videos,
                                             num_frames=frames, size=parse_size(size))
        events = sum(len(v["events"]) for v in summary["videos"].values())
        click.echo(f"wrote {train_videos} training and {test_videos} test videos ({events} events) to {out}")
