"""Road study configuration: a YAML file with `task: road` -> a checked `RoadStudyConfig` and its cells.

A road cell is one setting of the road model's options (`RoadConfig`) trained with one seed. The
`base` options apply to every cell; the main group is the base alone, and every entry of
`ablations` adds a grid (cartesian product) of option values over it. Grid keys are dotted paths
into `RoadConfig` (`train.augment.crop_size`, `scores.heat_reliability`, `score`, ...) or
`augment`, which picks a named augmentation preset (`augment_presets`, plus the built-in `default`
= today's options and `off` = no augmentation at all). Every cell runs once per seed of `seeds`
(the seed of training, of the score fitting and of nothing else: the data stay the same). Every
cell evaluates the scores listed in `scores` (all by default) in one pass, so scores are compared
on the same trained networks. Each combination of options is checked by `RoadConfig` itself when
the file is read: a wrong name, type or range is a one-line error before anything runs.
"""

from __future__ import annotations

import copy
import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from oddspot.configs import from_mapping
from oddspot.experiments.config import ablation_entries, check_mapping, config_error
from oddspot.errors import OddspotError
from oddspot.road.config import SCORE_NAMES, RoadConfig

TOP_KEYS = {"task", "name", "out", "data", "seeds", "base", "scores", "augment_presets", "ablations", "device"}
DATA_KEYS = {"path", "build_demo"}
DEMO_KEYS = {"height", "width", "n_train", "n_val", "n_test", "towns", "seed"}
ABLATION_KEYS = {"name", "grid", "options"}

# `off` switches off every augmentation AugmentConfig has (crops stay: they set the training size)
BUILTIN_PRESETS: dict[str, dict[str, Any]] = {
    "default": {},
    "off": {"scale": False, "flip": False, "rotate": False, "colour": False, "blur": False},
}


@dataclass(frozen=True)
class RoadCell:
    """One unit of work: train the road model with `options` and `seed`, then evaluate it."""

    group: str
    setting: str
    seed: int
    options: dict[str, Any] = field(hash=False, compare=False)

    @property
    def cell_id(self) -> str:
        return f"{self.group}/{self.setting}/seed={self.seed}"


@dataclass
class RoadStudyConfig:
    """A parsed road study config; `cells` lists the grid in a stable order (settings, then seeds)."""

    path: Path
    name: str
    out: Path
    data: Path
    build_demo: dict[str, Any] | None
    seeds: list[int]
    scores: tuple[str, ...]
    device: str | None
    cells: list[RoadCell]
    raw: dict[str, Any]

    task = "road"


def _label(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(map(str, value))
    return str(value).replace("/", "_")


def _set(options: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in nested `options`, creating the mappings on the way."""
    *parents, leaf = dotted.split(".")
    node = options
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[leaf] = copy.deepcopy(value)


def _resolve(base: Path, value: Any) -> Path:
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def load_road_config(raw: dict[str, Any], path: Path, out: str | Path | None = None) -> RoadStudyConfig:
    """Check a road study config (`raw`, the YAML read from `path`); `out` overrides the file's `out`."""
    raw = check_mapping(path, "top level", raw, TOP_KEYS)
    base_dir = path.resolve().parent
    data_cfg = check_mapping(path, "data", raw.get("data"), DATA_KEYS)
    if "path" not in data_cfg:
        raise config_error(path, "`data.path` is required (a StreetHazards-layout folder, or where to build the toy streets)")
    demo = data_cfg.get("build_demo")
    demo = None if demo in (None, False) else check_mapping(path, "data.build_demo", {} if demo is True else demo, DEMO_KEYS)
    if demo is not None:
        from oddspot.data.toy_streets import ToyStreetConfig

        from_mapping(ToyStreetConfig, demo, f"{path}: `data.build_demo`")
    seeds = raw.get("seeds", [0])
    if (not isinstance(seeds, list) or not seeds or len(set(seeds)) != len(seeds)
            or any(not isinstance(s, int) or isinstance(s, bool) or not 0 <= s < 2**32 for s in seeds)):
        raise config_error(path, f"`seeds` must be a list of distinct integers in [0, 2^32), e.g. [0, 1, 2]; got {seeds!r:.60}")
    scores = raw.get("scores", list(SCORE_NAMES))
    if isinstance(scores, str):
        scores = [scores]
    if not isinstance(scores, list) or not scores or any(s not in SCORE_NAMES for s in scores):
        raise config_error(path, f"`scores` must list scores among {', '.join(SCORE_NAMES)}; got {scores!r:.80}")
    device = raw.get("device")
    if device is not None and not isinstance(device, str):
        raise config_error(path, f"`device` must be a device name such as cpu or cuda, got {device!r:.40}")
    base = check_mapping(path, "base", raw.get("base"))
    presets = {**BUILTIN_PRESETS}
    for name, preset in check_mapping(path, "augment_presets", raw.get("augment_presets")).items():
        presets[str(name)] = check_mapping(path, f"augment_presets.{name}", preset)

    settings: list[tuple[str, str, dict[str, Any]]] = [("main", "base", copy.deepcopy(base))]
    for i, name, ab, grid in ablation_entries(path, raw.get("ablations") or [], ABLATION_KEYS,
                                              "{name, grid, options}", "option paths"):
        extra = check_mapping(path, f"ablations[{i}].options", ab.get("options"))
        keys = [str(k) for k in grid]
        for values in itertools.product(*(grid[k] for k in keys)):
            opts = copy.deepcopy(base)
            for key, value in extra.items():
                _set(opts, str(key), value)
            for key, value in zip(keys, values):
                if key == "augment":
                    if not isinstance(value, str) or value not in presets:
                        raise config_error(path, f"`ablations[{i}].grid.augment`: preset {value!r} unknown; "
                                          f"use one of {', '.join(presets)} or define it under augment_presets")
                    for k, v in presets[value].items():
                        _set(opts, f"train.augment.{k}", v)
                else:
                    _set(opts, key, value)
            setting = ",".join(f"{k.rsplit('.', 1)[-1]}={_label(v)}" for k, v in zip(keys, values))
            settings.append((name, setting, opts))

    cells: list[RoadCell] = []
    for group, setting, opts in settings:
        where = f"{path}: options of {group}/{setting}"
        for seed in seeds:
            full = copy.deepcopy(opts)
            _set(full, "train.seed", seed)
            _set(full, "scores.seed", seed)
            try:
                checked = from_mapping(RoadConfig, full, where)
            except OddspotError as exc:
                raise OddspotError(str(exc).splitlines()[0]) from None
            cells.append(RoadCell(group, setting, seed, checked.to_dict()))
    ids = [c.cell_id for c in cells]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise config_error(path, f"cell {dupes[0]} appears twice; give the ablations distinct names or values")
    out_dir = Path(out).resolve() if out is not None else _resolve(base_dir, raw.get("out", f"runs/{path.stem}"))
    return RoadStudyConfig(path=path.resolve(), name=str(raw.get("name", path.stem)), out=out_dir,
                           data=_resolve(base_dir, data_cfg["path"]), build_demo=demo, seeds=list(seeds),
                           scores=tuple(dict.fromkeys(scores)), device=device, cells=cells, raw=raw)
