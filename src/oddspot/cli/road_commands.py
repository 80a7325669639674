"""Road-task verbs: `oddspot road toy-data | train | evaluate | predict`."""

from __future__ import annotations

from pathlib import Path

import click

from oddspot.errors import OddspotError


def _pair(text: str | None, option: str, cast=int, sep: str = "x") -> tuple | None:
    if text is None:
        return None
    parts = text.lower().split(sep)
    try:
        if len(parts) != 2:
            raise ValueError
        return cast(parts[0]), cast(parts[1])
    except ValueError:
        raise OddspotError(f"{option} {text!r}: expected two numbers like 1{sep}2") from None


def _threads(n: int) -> None:
    import torch

    if n < 1:
        raise OddspotError(f"--threads {n}: use at least 1")
    torch.set_num_threads(n)


def _echo(msg: str) -> None:
    click.echo(msg, err=True)


def register(group: click.Group) -> None:
    """Attach the `road` group to the top-level CLI."""

    @group.group("road")
    def road() -> None:
        """Road scenes: segmentation network + per-pixel anomaly scores (StreetHazards layout)."""

    @road.command("toy-data")
    @click.argument("out", type=click.Path(file_okay=False, path_type=Path))
    @click.option("--n-train", default=240, show_default=True, help="Training scenes.")
    @click.option("--n-val", default=40, show_default=True, help="Validation scenes.")
    @click.option("--n-test", default=60, show_default=True, help="Test scenes (with unseen objects).")
    @click.option("--size", default="128x256", show_default=True, help="Scene size HxW.")
    @click.option("--seed", default=0, show_default=True)
    def toy_data(out: Path, n_train: int, n_val: int, n_test: int, size: str, seed: int) -> None:
        """Write procedural toy street scenes in the StreetHazards layout to OUT."""
        from oddspot.data.toy_streets import ToyStreetConfig, generate_toy_streets

        h, w = _pair(size, "--size")
        generate_toy_streets(out, ToyStreetConfig(height=h, width=w, n_train=n_train, n_val=n_val, n_test=n_test, seed=seed))
        click.echo(f"wrote toy streets to {out} ({n_train} train, {n_val} val, {n_test} test)")

    @road.command("train")
    @click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
    @click.option("--out", "run", required=True, type=click.Path(file_okay=False, path_type=Path), help="Run folder.")
    @click.option("--epochs", default=30, show_default=True)
    @click.option("--batch-size", default=8, show_default=True)
    @click.option("--optimizer", type=click.Choice(["adamw", "sgd"]), default="adamw", show_default=True)
    @click.option("--lr", default=1e-3, show_default=True)
    @click.option("--schedule", type=click.Choice(["poly", "cosine"]), default="poly", show_default=True)
    @click.option("--patience", default=5, show_default=True, help="Early stopping: epochs without mIoU gain.")
    @click.option("--crop", default="384x384", show_default=True, help="Training crop HxW (smaller when the scale needs).")
    @click.option("--scale-range", default="0.5-2.0", show_default=True, help="Multi-scale crop range.")
    @click.option("--freeze", default="stage1", show_default=True, help="Freeze the backbone up to this stage ('none').")
    @click.option("--num-classes", type=int, default=None, help="Known classes (checked against the data).")
    @click.option("--aspp-rates", default="6,12,18", show_default=True)
    @click.option("--aspp-channels", default=128, show_default=True)
    @click.option("--decoder-channels", default=128, show_default=True)
    @click.option("--eval-size", default=None, help="Run the network at HxW for validation/scoring.")
    @click.option("--max-train-images", type=int, default=None, help="Seeded subset of the training split.")
    @click.option("--class-weighting", type=click.Choice(["sqrt_inverse", "none"]), default="sqrt_inverse",
                  show_default=True, help="Cross-entropy class weights from training pixel frequencies.")
    @click.option("--features", type=click.Choice(["low_level", "decoder_input", "decoder_output"]), default="low_level",
                  show_default=True, help="Decoder feature map for the Mahalanobis score.")
    @click.option("--temperature", default=1.0, show_default=True, help="Energy temperature.")
    @click.option("--sigma", default=1.0, show_default=True, help="Fusion smoothing (pixels).")
    @click.option("--seed", default=0, show_default=True)
    @click.option("--resume", is_flag=True, help="Continue the run saved in --out.")
    @click.option("--device", default=None, help="cpu or cuda (default: cuda when present).")
    @click.option("--threads", default=2, show_default=True, help="CPU threads for torch.")
    def train_cmd(data: Path, run: Path, epochs: int, batch_size: int, optimizer: str, lr: float, schedule: str,
                  patience: int, crop: str, scale_range: str, freeze: str, num_classes: int | None, aspp_rates: str,
                  aspp_channels: int, decoder_channels: int, eval_size: str | None, max_train_images: int | None,
                  class_weighting: str, features: str, temperature: float, sigma: float, seed: int, resume: bool,
                  device: str | None, threads: int) -> None:
        """Train DeepLabV3+ on DATA (StreetHazards layout) into RUN and fit the anomaly scores."""
        from oddspot.data.streethazards import NUM_KNOWN_CLASSES
        from oddspot.road.augment import AugmentConfig
        from oddspot.road.model import ModelConfig
        from oddspot.road.scorer import ScoreConfig
        from oddspot.road.train import TrainConfig, train

        _threads(threads)
        try:
            rates = tuple(int(r) for r in aspp_rates.split(","))
        except ValueError:
            raise OddspotError(f"--aspp-rates {aspp_rates!r}: expected integers like 6,12,18") from None
        mcfg = ModelConfig(num_classes=num_classes or NUM_KNOWN_CLASSES, aspp_rates=rates, aspp_channels=aspp_channels,
                           decoder_channels=decoder_channels)
        aug = AugmentConfig(crop_size=_pair(crop, "--crop"), scale_range=_pair(scale_range, "--scale-range", float, "-"))
        tcfg = TrainConfig(epochs=epochs, batch_size=batch_size, optimizer=optimizer, lr=lr, schedule=schedule,
                           patience=patience, freeze=None if freeze.lower() == "none" else freeze,
                           max_train_images=max_train_images, eval_size=_pair(eval_size, "--eval-size"), seed=seed,
                           class_weighting=class_weighting, augment=aug)
        scfg = ScoreConfig(features=features, temperature=temperature, sigma=sigma, seed=seed)
        summary = train(data, run, mcfg, tcfg, scfg, resume=resume, device=device, log=_echo)
        click.echo(f"best validation mIoU {summary['best_miou']:.3f} at epoch {summary['best_epoch']}; run in {run}")

    @road.command("evaluate")
    @click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
    @click.argument("data", type=click.Path(exists=True, file_okay=False, path_type=Path))
    @click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
    @click.option("--batch-size", default=8, show_default=True)
    @click.option("--device", default=None)
    @click.option("--threads", default=2, show_default=True)
    def evaluate_cmd(run: Path, data: Path, out_dir: Path, batch_size: int, device: str | None, threads: int) -> None:
        """mIoU on DATA's validation split and every anomaly score on its test split; writes OUT/metrics.json."""
        from rich import box
        from rich.console import Console
        from rich.table import Table

        from oddspot.road.evaluate import evaluate, summary_rows

        _threads(threads)
        metrics = evaluate(run, data, out_dir, batch_size=batch_size, device=device, log=_echo)
        seg = metrics["segmentation"]
        table = Table(title=f"validation mIoU {seg['miou']:.3f} ({seg['n_images']} images)")
        table.add_column("class")
        table.add_column("IoU", justify="right")
        for name, v in seg["iou"].items():
            table.add_row(name, f"{v:.3f}")
        console = Console()
        console.print(table)
        t2 = Table(title=f"test pixel anomaly scores ({metrics['anomaly']['n_pixels']} pixels)", box=box.SIMPLE)
        cols = ("score", "auroc", "ap", "fpr95_first", "fpr95_nearest", "per_image_auroc", "f1_at_threshold")
        heads = ("score", "AUROC", "AP", "FPR95 1st", "FPR95 near", "AUROC/img", "F1@thr")
        for head in heads:
            t2.add_column(head, justify="left" if head == "score" else "right")
        for row in summary_rows(metrics):
            t2.add_row(*(row["score"],) + tuple("n/a" if row[c] is None else f"{row[c]:.3f}" for c in cols[1:]))
        console.print(t2)
        click.echo("AUROC/AP/FPR95 pool all test pixels; FPR95 1st = first point with TPR >= 0.95, near = recall nearest "
                   "0.95 (StreetHazards); AUROC/img = mean over images with anomalies; F1@thr at the validation threshold")
        click.echo(f"wrote {out_dir / 'metrics.json'}")

    @road.command("predict")
    @click.argument("run", type=click.Path(exists=True, file_okay=False, path_type=Path))
    @click.argument("images", nargs=-1, required=True)
    @click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path))
    @click.option("--score", default="fusion", show_default=True, help="Score shown in the panels.")
    @click.option("--save-score", "save_scores", multiple=True, help="Scores to save as .npy (default: --score).")
    @click.option("--no-panels", is_flag=True, help="Only write score maps.")
    @click.option("--device", default=None)
    @click.option("--threads", default=2, show_default=True)
    def predict_cmd(run: Path, images: tuple[str, ...], out_dir: Path, score: str, save_scores: tuple[str, ...],
                    no_panels: bool, device: str | None, threads: int) -> None:
        """Score maps and panels (input | prediction | overlay | confidence | anomaly) for IMAGES."""
        from oddspot.road.predict import predict

        _threads(threads)
        record = predict(run, images, out_dir, score=score, save_scores=save_scores or None, panels=not no_panels,
                         device=device, log=_echo)
        click.echo(f"wrote {len(record['images'])} images to {out_dir}; skipped {len(record['skipped'])}")
