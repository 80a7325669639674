"""The code that runs on Ray workers for `evaluate`: each block of inputs folded into one mergeable metric state.

A fold worker is an actor holding the model (`workers.ModelWorker`). Ray Data hands it a whole
block of decoded inputs (`map_batches(batch_size=None)`); it scores the block in batches as the
single-process `evaluate` does and returns ONE part: the block's metric state (the streaming
states of `oddspot.metrics`, each item keyed by its index in the dataset) and its per-item rows.
The driver merges the parts in whatever order they arrive: merging is exact, so the result is
that of one process that saw every item. A block whose actor dies is retried whole by Ray, so
each item is folded in exactly once; a part that arrives twice is recognised by its keys.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from oddspot.data.image_io import pixel_budget
from oddspot.errors import OddspotError
from oddspot.scale.workers import ModelWorker, pixels


@dataclass
class Part:
    """What one block contributes: its item keys, per-item rows, per-item errors and a metric state."""

    keys: frozenset[int] = frozenset()
    rows: dict[int, Any] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)
    state: Any = None
    seconds: float = 0.0
    extra: dict[str, float] = field(default_factory=dict)

    def merge(self, other: Part) -> Part:
        """Add a part with disjoint keys (states merged exactly, rows united, counters added); returns self."""
        if self.keys & other.keys:
            raise OddspotError(f"merging parts that share items {sorted(self.keys & other.keys)[:3]}; each item must be "
                               "folded in once")
        self.keys = self.keys | other.keys
        self.rows.update(other.rows)
        self.errors.update(other.errors)
        if other.state is not None:
            self.state = other.state if self.state is None else _merge_state(self.state, other.state)
        self.seconds += other.seconds
        for k, v in other.extra.items():
            self.extra[k] = self.extra.get(k, 0) + v
        return self


def _merge_state(mine: Any, theirs: Any) -> Any:
    """Merge a metric state or a dict of them (by name)."""
    if isinstance(mine, dict):
        for name, value in theirs.items():
            mine[name] = value if name not in mine else _merge_state(mine[name], value)
        return mine
    return mine.merge(theirs)


def _one(part: Part) -> dict[str, np.ndarray]:
    out = np.empty(1, dtype=object)
    out[0] = part
    return {"part": out}


def _order(batch: dict[str, np.ndarray]) -> list[int]:
    """Row positions of a block by item index (items are scored in dataset order, as on one machine)."""
    return sorted(range(len(batch["index"])), key=lambda i: int(batch["index"][i]))


# inspect -------------------------------------------------------------------------------------------

def decode_samples(batch: dict[str, np.ndarray], max_pixels: int | None = None) -> dict[str, np.ndarray]:
    """Decode each test sample (image and mask) of a block, or keep its error."""
    from oddspot.data.mvtec import SampleRef

    images, masks, heights, widths, errors = [], [], [], [], []
    with pixel_budget(max_pixels):
        for i in range(len(batch["index"])):
            mask_files = [Path(m) for m in json.loads(str(batch["mask"][i]))]
            ref = SampleRef(Path(str(batch["path"][i])), int(batch["label"][i]), str(batch["defect_type"][i]),
                            str(batch["category"][i]), mask_files[0] if mask_files else None, tuple(mask_files[1:]))
            try:
                s = ref.load()
            except OddspotError as exc:
                images.append(b"")
                masks.append(b"")
                heights.append(0)
                widths.append(0)
                errors.append(str(exc))
                continue
            mask = s.mask if s.mask is not None else np.zeros(s.image.shape[:2], bool)
            images.append(s.image.tobytes())
            masks.append(mask.astype(bool).tobytes())
            heights.append(s.image.shape[0])
            widths.append(s.image.shape[1])
            errors.append("")
    return {**batch, "image": np.array(images, dtype=object), "mask_bits": np.array(masks, dtype=object),
            "height": np.array(heights, np.int64), "width": np.array(widths, np.int64),
            "error": np.array(errors, dtype=object)}


@dataclass
class PixelStatsByKey:
    """The per-image pixel statistics of a block (`metrics.bootstrap.PixelStats`, one per item key);
    blocks merge by uniting their keys, and `in_order` puts them back in item order."""

    stats: dict[int, Any] = field(default_factory=dict)

    def merge(self, other: PixelStatsByKey) -> PixelStatsByKey:
        self.stats.update(other.stats)
        return self

    def in_order(self) -> Any:
        from oddspot.metrics.bootstrap import PixelStats

        return PixelStats.concatenate([self.stats[k] for k in sorted(self.stats)])


class InspectFold(ModelWorker):
    """inspect evaluate: an `InspectionEvaluator` and the pixel statistics per block, plus the scores.csv rows."""

    task = "inspect"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from oddspot.data import loco
        from oddspot.metrics import InspectionEvaluator
        from oddspot.metrics.bootstrap import PixelStats

        self.faults.tick()
        cal = self.model.postprocess
        spro = self.options.get("spro")
        evaluator = InspectionEvaluator(bootstrap=int(self.options["bootstrap"]), seed=int(self.options["seed"]),
                                        spro_groups=None if spro is None else loco.FAMILIES)
        pixel_stats = PixelStatsByKey()
        part = Part(keys=frozenset(int(i) for i in batch["index"]), state={"evaluator": evaluator, "pixels": pixel_stats})
        order = [i for i in _order(batch) if not str(batch["error"][i])]
        for i in _order(batch):
            if str(batch["error"][i]):
                part.errors[int(batch["index"][i])] = str(batch["error"][i])
        size = int(self.options["batch"])
        called = 0
        t0 = time.perf_counter()
        with pixel_budget(self.max_pixels):
            for lo in range(0, len(order), size):
                chunk = order[lo:lo + size]
                images = [pixels(batch, i) for i in chunk]
                pred = self.model.predict(images, maps=True)
                called += getattr(self.model, "last_call", {}).get("n_localizer", 0)
                for j, i in enumerate(chunk):
                    index, label, kind = int(batch["index"][i]), int(batch["label"][i]), str(batch["defect_type"][i])
                    mask = np.frombuffer(batch["mask_bits"][i], bool).reshape(images[j].shape[:2])
                    regions = None if spro is None or label == 0 else loco.spro_regions(
                        [Path(m) for m in json.loads(str(batch["mask"][i]))], spro, mask.shape)
                    evaluator.add(float(pred.scores[j]), label, pred.maps[j], mask, kind, key=index, regions=regions)
                    pixel_stats.stats[index] = PixelStats()
                    pixel_stats.stats[index].add(pred.maps[j], mask)
                    row = (str(batch["path"][i]), label, kind, float(pred.scores[j]))
                    part.rows[index] = row if cal is None else (*row, float(pred.normalized[j]), int(pred.decisions[j]))
        part.seconds = time.perf_counter() - t0
        part.extra["called"] = called
        return _one(part)


# video ---------------------------------------------------------------------------------------------

class VideoFold(ModelWorker):
    """video evaluate: the prediction of each video of a block (frame scores; the metrics need them pooled)."""

    task = "video"

    def setup(self) -> None:
        self._videos: list[Any] | None = None

    def videos(self) -> list[Any]:
        """The test videos, opened (listed, not decoded) once per actor exactly as the driver opened them."""
        if self._videos is None:
            from oddspot.video.datasets import open_video_dataset

            o = self.options
            self._videos = open_video_dataset(o["data"], "test", layout=o["layout"], labels=o["labels"],
                                              cache_dir=None if o["cache_dir"] is None else Path(o["cache_dir"]))
        return self._videos

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        self.faults.tick()
        part = Part(keys=frozenset(int(i) for i in batch["index"]))
        t0 = time.perf_counter()
        with pixel_budget(self.max_pixels):
            for i in _order(batch):
                index = int(batch["index"][i])
                v = self.videos()[index]
                try:
                    _ = v.labels
                    part.rows[index] = self.model.predict([v], protocol=self.options["protocol"])[0]
                except OddspotError as exc:
                    part.errors[index] = str(exc)
                finally:
                    v.release()
        part.seconds = time.perf_counter() - t0
        return _one(part)


# road ----------------------------------------------------------------------------------------------

def decode_scenes(batch: dict[str, np.ndarray], data: str, split: str, max_pixels: int | None = None) -> dict[str, np.ndarray]:
    """Decode each scene (image and labels) of a block; for validation, a row is a batch of scenes."""
    from oddspot.data.streethazards import load_split

    scenes = load_split(data, split)
    images, labels, shapes, errors = [], [], [], []
    with pixel_budget(max_pixels):
        for members in batch["members"]:
            imgs, labs, errs = [], [], []
            for index in [int(m) for m in members]:
                try:
                    s = scenes[index]
                except OddspotError as exc:
                    errs.append(str(exc))
                    continue
                imgs.append(s.image)
                labs.append(s.labels)
            images.append(b"".join(im.tobytes() for im in imgs))
            labels.append(b"".join(np.ascontiguousarray(lab, np.int64).tobytes() for lab in labs))
            shapes.append(np.array([len(imgs), *(imgs[0].shape[:2] if imgs else (0, 0))], np.int64))
            errors.append(errs)
    out = {**batch, "images": np.array(images, dtype=object), "labels": np.array(labels, dtype=object),
           "shape": np.empty(len(shapes), dtype=object), "errors": np.empty(len(errors), dtype=object)}
    for i, (shape, errs) in enumerate(zip(shapes, errors)):
        out["shape"][i] = shape
        out["errors"][i] = errs
    return out


def _scenes(batch: dict[str, np.ndarray], i: int) -> tuple[np.ndarray, np.ndarray]:
    n, h, w = (int(x) for x in batch["shape"][i])
    images = np.frombuffer(batch["images"][i], np.uint8).reshape(n, h, w, 3)
    labels = np.frombuffer(batch["labels"][i], np.int64).reshape(n, h, w)
    return images, labels


class RoadValidationFold(ModelWorker):
    """road evaluate, validation: a confusion matrix per block; each row is one batch of same-size scenes
    (its row in the part: the errors of the scenes that could not be read)."""

    task = "road"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from oddspot.data.streethazards import IGNORE_INDEX
        from oddspot.metrics import ConfusionMatrix
        from oddspot.road.inference import run_model

        self.faults.tick()
        network, _ = self.model._fitted()
        network.eval()
        k = network.num_classes
        cm = ConfusionMatrix(k, ignore_index=IGNORE_INDEX)
        part = Part(keys=frozenset(int(i) for i in batch["index"]), state=cm)
        n_images = 0
        for i in _order(batch):
            part.rows[int(batch["index"][i])] = [str(e) for e in batch["errors"][i]]
            images, labels = _scenes(batch, i)
            if not len(images):
                continue
            out = run_model(network, images, size=self.model.config.train.eval_size)
            target = labels.copy()
            target[target >= k] = IGNORE_INDEX
            cm.update(out["logits"].argmax(1).cpu().numpy(), target)
            n_images += len(images)
        part.extra["n_images"] = n_images
        return _one(part)


class RoadTestFold(ModelWorker):
    """road evaluate, test: pooled and per-image ranking states per score, the test confusion matrix, the image
    scores and scores.csv rows."""

    task = "road"

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        import torch

        from oddspot.data.streethazards import ANOMALY_CLASS, IGNORE_INDEX
        from oddspot.files import write_png
        from oddspot.metrics import BinaryRankingMetrics, ConfusionMatrix, PerImageMetrics
        from oddspot.road.evaluate import anomaly_row_targets
        from oddspot.road.panels import PANELS_DIR, make_panel

        self.faults.tick()
        model = self.model
        scores = tuple(self.options["scores"])
        decision = model.config.score
        names = tuple(dict.fromkeys((*scores, decision, "msp")))
        pixel_th = model.pixel_threshold
        state = {f"pooled.{s}": BinaryRankingMetrics() for s in scores}
        state.update({f"per_image.{s}": PerImageMetrics() for s in scores})
        k = model.config.model.num_classes
        state["test_confusion"] = ConfusionMatrix(k + 1, ignore_index=IGNORE_INDEX)
        part = Part(keys=frozenset(int(i) for i in batch["index"]), state=state)
        t_model = t_metrics = 0.0
        for i in _order(batch):
            index = int(batch["index"][i])
            if len(batch["errors"][i]):
                part.errors[index] = str(batch["errors"][i][0])
                continue
            images, labels = _scenes(batch, i)
            image, label = images[0], labels[0]
            path = str(batch["path"][i])
            ta = time.perf_counter()
            result = model.analyze(image, names, path)
            tb = time.perf_counter()
            maps = {k: torch.from_numpy(v) for k, v in result.maps.items()}
            lab = torch.from_numpy(label.copy())
            valid = lab != IGNORE_INDEX
            target = lab == ANOMALY_CLASS
            for name in scores:
                state[f"pooled.{name}"].update(maps[name], target, valid)
                state[f"per_image.{name}"].update(maps[name], target, valid, key=index)
            state["test_confusion"].update(result.classes, anomaly_row_targets(label, k))
            t_metrics += time.perf_counter() - tb
            t_model += tb - ta
            n_valid = int(valid.sum())
            n_anomalous = int((target & valid).sum())
            dmap = result.maps[decision]
            score = model.image_score(dmap)
            normalized, decided = model.decide(np.array([score]))
            part.rows[index] = [path, int(n_anomalous > 0), score,
                                "" if normalized is None else float(normalized[0]),
                                "" if decided is None else int(decided[0]),
                                n_anomalous, int((dmap >= pixel_th["threshold"]).sum()), n_valid]
            stem = str(batch["stem"][i])
            if stem:
                write_png(Path(self.options["panels_dir"]) / PANELS_DIR / f"{stem}_panel.png",
                          make_panel(image, result.classes, 1.0 - result.maps["msp"], dmap,
                                     pixel_th["threshold"], pixel_th["spread"]))
        part.extra.update(model_seconds=t_model, metric_seconds=t_metrics)
        return _one(part)
