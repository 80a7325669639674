"""Video-task verbs: `oddspot video fit`, `oddspot video evaluate`, `oddspot video generate`."""

from __future__ import annotations

from pathlib import Path

import click

from oddspot.errors import OddspotError


def _floats(text: str, option: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise OddspotError(f"{option} {text!r} not understood; give comma-separated numbers, e.g. 1,1") from None


def _threads() -> None:
    import torch

    torch.set_num_threads(min(2, torch.get_num_threads()))


def register(group: click.Group) -> None:
    """Attach the `video` group to the top-level group."""

    @group.group("video")
    def video() -> None:
        """Video task: fixed cameras, per-frame anomaly scores (Avenue, UCSD Ped2, frame folders)."""

    @video.command("fit")
    @click.argument("data", type=click.Path(path_type=Path))
    @click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Model folder to write.")
    @click.option("--model", type=click.Choice(["autoencoder", "motion"]), default="motion", show_default=True)
    @click.option("--layout", type=click.Choice(["auto", "avenue", "ped2", "frames"]), default="auto", show_default=True)
    @click.option("--size", default="96x128", show_default=True, help="Frame size HEIGHTxWIDTH the model works at.")
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--sigma", type=float, default=3.0, show_default=True, help="Temporal Gaussian smoothing (frames); 0 = none.")
    @click.option("--normalization", type=click.Choice(["train_zscore", "none"]), default="train_zscore", show_default=True)
    @click.option("--holdout-fraction", type=float, default=0.25, show_default=True, help="Tail of each training video used only for score statistics.")
    @click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help="Keep decoded, resized frames here as .npy.")
    @click.option("--encoder", default=None, help="autoencoder: backbone name or 'scratch' [default: efficientnet_lite0].")
    @click.option("--epochs", type=int, default=None, help="autoencoder: training epochs [default: 10].")
    @click.option("--train-loss", type=click.Choice(["l1", "l2"]), default=None, help="autoencoder [default: l2].")
    @click.option("--pixel-error", type=click.Choice(["l1", "l2"]), default=None, help="autoencoder [default: l2].")
    @click.option("--pixel-weight", type=float, default=None, help="autoencoder [default: 1].")
    @click.option("--feature-weights", default=None, help="autoencoder: one weight per feature layer [default: 1,1].")
    @click.option("--tta/--no-tta", default=False, show_default=True, help="autoencoder: average identity/hflip/vflip/rot180.")
    @click.option("--power-transform/--no-power-transform", default=None, help="autoencoder: Yeo-Johnson per score component [default: on].")
    @click.option("--coreset-ratio", type=float, default=None, help="motion: memory bank fraction [default: 0.1].")
    @click.option("--gap", type=int, default=None, help="motion: frames between the stacked frames [default: 4].")
    @click.option("--flow-weight", type=float, default=None, help="motion: weight of the velocity cue [default: 4].")
    @click.option("--position-weight", type=float, default=None, help="motion: weight of the patch position [default: 3].")
    def fit(data, out, model, layout, size, seed, sigma, normalization, holdout_fraction, cache_dir, encoder, epochs,
            train_loss, pixel_error, pixel_weight, feature_weights, tta, power_transform, coreset_ratio, gap,
            flow_weight, position_weight) -> None:
        """Fit a detector on the normal training videos of DATA and save it to --out."""
        from oddspot.data.avenue import parse_size
        from oddspot.video.autoencoder import AutoencoderConfig, FrameAutoencoder
        from oddspot.video.datasets import decode_videos, open_video_dataset
        from oddspot.video.motion import MotionConfig, MotionDetector
        from oddspot.video.tta import VIEWS

        _threads()
        hw = parse_size(size)
        common = dict(size=hw, seed=seed, sigma=sigma, normalization=normalization, holdout_fraction=holdout_fraction)
        if model == "autoencoder":
            given = dict(encoder=encoder, epochs=epochs, train_loss=train_loss, pixel_error=pixel_error,
                         pixel_weight=pixel_weight, power_transform=power_transform,
                         feature_weights=None if feature_weights is None else _floats(feature_weights, "--feature-weights"),
                         tta=VIEWS if tta else ("identity",))
            det = FrameAutoencoder(AutoencoderConfig(**common, **{k: v for k, v in given.items() if v is not None}))
        else:
            given = dict(coreset_ratio=coreset_ratio, gap=gap, flow_weight=flow_weight, position_weight=position_weight)
            det = MotionDetector(MotionConfig(**common, **{k: v for k, v in given.items() if v is not None}))
        videos, skipped = decode_videos(open_video_dataset(data, "train", layout=layout, cache_dir=cache_dir), hw)
        for s in skipped:
            click.echo(f"warning: skipped training video {s['video']}: {s['error']}", err=True)
        det.fit(videos)
        det.fit_info["skipped_videos"] = skipped
        det.save(out)
        click.echo(f"fitted {model} on {len(videos)} training videos ({det.fit_info['fit_frames']} frames, "
                   f"{det.fit_info['holdout_frames']} held out for statistics) -> {out}")

    @video.command("evaluate")
    @click.argument("run", type=click.Path(path_type=Path))
    @click.argument("data", type=click.Path(path_type=Path))
    @click.option("--out", "out", required=True, type=click.Path(path_type=Path), help="Folder for evaluation.json, scores and curves.")
    @click.option("--layout", type=click.Choice(["auto", "avenue", "ped2", "frames"]), default="auto", show_default=True)
    @click.option("--labels", type=click.Path(path_type=Path), default=None, help="Frame folders: ground truth (.mat intervals or labels.json).")
    @click.option("--skip-first", type=int, default=0, show_default=True, help="Leave out the first N frames of every video.")
    @click.option("--protocol", type=click.Choice(["trained", "legacy_minmax_per_video"]), default="trained", show_default=True,
                  help="legacy_minmax_per_video rescales each test video by its own min/max (uses test statistics).")
    @click.option("--cache-dir", type=click.Path(path_type=Path), default=None)
    def evaluate(run, data, out, layout, labels, skip_first, protocol, cache_dir) -> None:
        """Score the test videos of DATA with the model in RUN; write frame-level metrics and score curves."""
        from oddspot.files import write_json
        from oddspot.video.base import load_detector
        from oddspot.video.datasets import decode_videos, open_video_dataset
        from oddspot.video.evaluate import evaluate_video_scores, write_score_curves

        _threads()
        det = load_detector(run)
        videos, skipped = decode_videos(open_video_dataset(data, "test", layout=layout, labels=labels, cache_dir=cache_dir), det.size)
        for s in skipped:
            click.echo(f"warning: skipped test video {s['video']}: {s['error']}", err=True)
        if not videos:
            raise OddspotError(f"{data}: no test video could be read; see the warnings above")
        results = [det.score_video(v, protocol=protocol) for v in videos]
        ev = evaluate_video_scores(results, videos, skip_first=skip_first)
        ev.update(model=str(run), detector=det.kind, protocol=protocol, skipped_videos=skipped)
        write_json(Path(out) / "evaluation.json", ev)
        write_score_curves(out, results, videos, title=f"{det.kind}: frame scores (red: anomalous frames)")
        click.echo(f"{det.kind}: micro AUROC {ev['micro_auroc']:.4f}  macro AUROC {ev['macro_auroc']:.4f}  AP {ev['ap']:.4f}  "
                   f"({ev['frames']} frames, {len(videos)} videos, protocol {protocol})")
        for kind, m in ev["per_event_type"].items():
            click.echo(f"  {kind}: AUROC {m['auroc']:.4f} ({m['frames']} frames)")
        click.echo(f"wrote {Path(out) / 'evaluation.json'}")

    @video.command("generate")
    @click.argument("out", type=click.Path(path_type=Path))
    @click.option("--seed", type=int, default=0, show_default=True)
    @click.option("--train-videos", type=int, default=4, show_default=True)
    @click.option("--test-videos", type=int, default=6, show_default=True)
    @click.option("--frames", type=int, default=200, show_default=True)
    @click.option("--size", default="96x128", show_default=True)
    def generate(out, seed, train_videos, test_videos, frames, size) -> None:
        """Write synthetic fixed-camera videos (frame-folder layout with labels) to OUT."""
        from oddspot.data.avenue import parse_size
        from oddspot.data.synthetic_video import generate_video_dataset

        if min(train_videos, test_videos) < 1 or frames < 60:
            raise OddspotError("need at least 1 training and 1 test video and --frames >= 60")
        summary = generate_video_dataset(out, seed=seed, num_train=train_videos, num_test=test_videos, num_frames=frames, size=parse_size(size))
        events = sum(len(v["events"]) for v in summary["videos"].values())
        click.echo(f"wrote {train_videos} training and {test_videos} test videos ({events} events) to {out}")
