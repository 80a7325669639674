"""Study configuration: one YAML file -> a checked `ExperimentConfig` and its list of cells.

A cell is one protocol x detector x parameter setting x category. The main grid crosses
`protocols`, `detectors` (each with its base options) and `categories`; every entry of
`ablations` adds a grid of option values (cartesian product) over its own protocols.
Paths in the file are relative to the file. Unknown keys are errors, never ignored, and so are
options of a known detector with a wrong type or an out-of-range value (checked by the detector's
own config, through `oddspot.configs.from_mapping`); an unknown detector name fails its cells only.
"""

from __future__ import annotations

import hashlib
import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from oddspot.configs import from_mapping, load_yaml
from oddspot.data.shift import ONLY_CHOICES, SEVERITY_SCALE
from oddspot.data.splits import PROTOCOLS as SPLITS
from oddspot.errors import OddspotError
from oddspot.runs.registry import kinds, model_class

if TYPE_CHECKING:
    from oddspot.experiments.road_config import RoadStudyConfig

PROTOCOLS = ("clean", "shift-none", "shift-threshold", "shift-refit", "global")
SHIFT_PROTOCOLS = ("shift-none", "shift-threshold", "shift-refit")
CONFIG_VERSION = 1

_TOP_KEYS = {"task", "name", "out", "seed", "bootstrap", "split", "data", "shift", "categories", "protocols",
             "detectors", "global", "ablations", "plots"}
_DATA_KEYS = {"path", "build_demo"}
_DEMO_KEYS = {"categories", "n_train", "n_test_good", "n_test_bad", "tile", "seed"}
_SHIFT_KEYS = {"path", "severity", "only", "seed"}
_GLOBAL_KEYS = {"categories"}
_ABLATION_KEYS = {"name", "detector", "protocols", "categories", "grid", "options"}
_PLOT_KEYS = {"metric"}


@dataclass(frozen=True)
class Cell:
    """One unit of work: evaluate `detector` with `options` under `protocol` on `category`."""

    group: str
    protocol: str
    detector: str
    setting: str
    options: tuple[tuple[str, Any], ...]
    category: str

    @property
    def cell_id(self) -> str:
        return f"{self.group}/{self.protocol}/{self.detector}/{self.setting}/{self.category}"

    @property
    def option_dict(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in self.options}


@dataclass
class ExperimentConfig:
    """A parsed study config; `cells` lists the grid in a stable order."""

    path: Path
    name: str
    out: Path
    seed: int
    bootstrap: int
    split: str
    data: Path
    build_demo: dict[str, Any] | None
    shift: dict[str, Any]
    categories: list[str]
    global_categories: list[str]
    cells: list[Cell] = field(default_factory=list)
    plot_metric: str = "image_auroc"
    raw: dict[str, Any] = field(default_factory=dict)

    def needs_shift(self) -> bool:
        return any(c.protocol in SHIFT_PROTOCOLS for c in self.cells)


def config_error(path: Path, message: str) -> OddspotError:
    """A one-line error about the study config file `path`."""
    return OddspotError(f"{path}: {message}")


def check_mapping(path: Path, where: str, value: Any, known: set[str] | None = None) -> dict[str, Any]:
    """`value` as a dict ({} for None); not a mapping, or a key outside `known`, is an error naming `where`."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise config_error(path, f"`{where}` must be a mapping")
    if known is not None:
        unknown = sorted(str(k) for k in set(value) - known)
        if unknown:
            raise config_error(path, f"unknown key(s) {', '.join(unknown)} in `{where}`; known: {', '.join(sorted(known))}")
    return dict(value)


def ablation_entries(path: Path, ablations: Any, known: set[str], usage: str,
                     grid_keys: str) -> list[tuple[int, str, dict[str, Any], dict[str, list[Any]]]]:
    """(index, name, entry, grid) of each `ablations` entry, checked: a list of mappings with `known` keys,
    names unique, not 'main', without '/'; each grid maps `grid_keys` to non-empty lists."""
    if not isinstance(ablations, list):
        raise config_error(path, f"`ablations` must be a list of {usage}")
    out, names = [], set()
    for i, ab in enumerate(ablations):
        ab = check_mapping(path, f"ablations[{i}]", ab, known)
        name = str(ab.get("name", f"ablation{i}"))
        if name in names or name == "main" or "/" in name:
            raise config_error(path, f"`ablations[{i}].name` {name!r} must be unique, not 'main', without '/'")
        names.add(name)
        grid = ab.get("grid")
        if not isinstance(grid, dict) or not grid or not all(isinstance(v, list) and v for v in grid.values()):
            raise config_error(path, f"`ablations[{i}].grid` must map {grid_keys} to non-empty lists of values")
        out.append((i, name, ab, grid))
    return out


def _str_list(path: Path, where: str, value: Any) -> list[str]:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
        raise config_error(path, f"`{where}` must be a non-empty list of names")
    return list(value)


def _protocols(path: Path, where: str, value: Any) -> list[str]:
    names = _str_list(path, where, value)
    bad = [p for p in names if p not in PROTOCOLS]
    if bad:
        raise config_error(path, f"`{where}`: unknown protocol(s) {', '.join(bad)}; use {', '.join(PROTOCOLS)}")
    return names


def _check_options(path: Path, where: str, detector: str, options: dict[str, Any]) -> None:
    """Options of a known inspect detector, read by its own config (wrong type or range: one-line error)."""
    if detector in kinds("inspect"):
        from_mapping(model_class("inspect", detector).config_class, options, f"{path}: `{where}`")


def _freeze(options: dict[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in options.items()))


def _fmt(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "+".join(map(str, value))
    return str(value)


def spec_hash(obj: Any) -> str:
    """Short stable hash of a JSON-able object (identifies cells and models on disk)."""
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:12]


def _resolve(base: Path, value: Any) -> Path:
    p = Path(str(value)).expanduser()
    return p if p.is_absolute() else (base / p).resolve()


def load_config(path: str | Path, out: str | Path | None = None) -> ExperimentConfig | RoadStudyConfig:
    """Read and check a study config; `out` overrides the file's `out`.

    `task: road` makes it a road study (`oddspot.experiments.road_config`); the default,
    `task: inspect`, the inspection study described above.
    """
    path = Path(path)
    if not path.exists():
        raise OddspotError(f"{path}: config file not found; check the CONFIG path")
    try:
        raw = load_yaml(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise config_error(path, f"invalid YAML ({str(exc).splitlines()[0]})") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise config_error(path, f"cannot be read as UTF-8 YAML text ({type(exc).__name__})") from None
    task = raw.get("task", "inspect") if isinstance(raw, dict) else "inspect"
    if task == "road":
        from oddspot.experiments.road_config import load_road_config

        return load_road_config(raw, path, out)
    if task != "inspect":
        raise config_error(path, f"`task` {task!r} unknown; use inspect or road")
    raw = check_mapping(path, "top level", raw, _TOP_KEYS)
    base = path.resolve().parent
    data_cfg = check_mapping(path, "data", raw.get("data"), _DATA_KEYS)
    if "path" not in data_cfg:
        raise config_error(path, "`data.path` is required (an MVTec-layout dataset folder)")
    demo = raw.get("data", {}).get("build_demo")
    demo = check_mapping(path, "data.build_demo", demo, _DEMO_KEYS) if demo not in (None, False) else None
    if demo is not None and not isinstance(raw["data"]["build_demo"], dict):
        demo = {}
    shift = check_mapping(path, "shift", raw.get("shift"), _SHIFT_KEYS)
    severity = shift.get("severity", "moderate")
    if severity not in SEVERITY_SCALE:
        raise config_error(path, f"`shift.severity` {severity!r} unknown; use {', '.join(SEVERITY_SCALE)}")
    only = shift.get("only")
    if only is not None and only not in ONLY_CHOICES:
        raise config_error(path, f"`shift.only` {only!r} unknown; use {', '.join(ONLY_CHOICES)}")
    split = raw.get("split", "validation")
    if split not in SPLITS:
        raise config_error(path, f"`split` {split!r} unknown; use {', '.join(SPLITS)}")
    if split != "validation" and any(p in raw.get("protocols", []) for p in ("shift-threshold",)):
        raise config_error(path, "`shift-threshold` needs a validation split; set `split: validation`")
    out_dir = Path(out).resolve() if out is not None else _resolve(base, raw.get("out", f"runs/{path.stem}"))
    seed = raw.get("seed", 0)
    bootstrap = raw.get("bootstrap", 1000)
    for key, value in (("seed", seed), ("bootstrap", bootstrap)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise config_error(path, f"`{key}` must be an integer >= 0, got {value!r}")
    categories = _str_list(path, "categories", raw.get("categories"))
    global_cfg = check_mapping(path, "global", raw.get("global"), _GLOBAL_KEYS)
    global_categories = _str_list(path, "global.categories", global_cfg.get("categories", categories))
    detectors = raw.get("detectors") or {"patchcore": {}}
    if not isinstance(detectors, dict) or not all(isinstance(v, dict) or v is None for v in detectors.values()):
        raise config_error(path, "`detectors` must map a detector name to its options, e.g. {patchcore: {image_size: 160}}")
    detectors = {name: dict(opts or {}) for name, opts in detectors.items()}
    plots = check_mapping(path, "plots", raw.get("plots"), _PLOT_KEYS)

    cells: list[Cell] = []
    protocols = _protocols(path, "protocols", raw.get("protocols", ["clean"]))
    to_check = [(f"detectors.{det}", det, opts) for det, opts in detectors.items()]
    for protocol in protocols:
        for det, opts in detectors.items():
            cats = global_categories if protocol == "global" else categories
            for cat in cats:
                cells.append(Cell("main", protocol, det, "default", _freeze(opts), cat))
    for i, name, ab, grid in ablation_entries(path, raw.get("ablations") or [], _ABLATION_KEYS,
                                              "{name, detector, grid, protocols}", "option names"):
        det = ab.get("detector", next(iter(detectors)))
        base_opts = {**detectors.get(det, {}), **(ab.get("options") or {})}
        ab_protocols = _protocols(path, f"ablations[{i}].protocols", ab.get("protocols", ["clean"]))
        ab_cats = _str_list(path, f"ablations[{i}].categories", ab.get("categories", categories))
        keys = list(grid)
        for values in itertools.product(*(grid[k] for k in keys)):
            opts = {**base_opts, **dict(zip(keys, values))}
            to_check.append((f"ablations[{i}]", det, opts))
            setting = ",".join(f"{k}={_fmt(v)}" for k, v in zip(keys, values))
            for protocol in ab_protocols:
                cats = global_categories if protocol == "global" else ab_cats
                for cat in cats:
                    cells.append(Cell(name, protocol, det, setting, _freeze(opts), cat))
    ids = [c.cell_id for c in cells]
    dupes = sorted({i for i in ids if ids.count(i) > 1})
    if dupes:
        raise config_error(path, f"cell {dupes[0]} appears twice; give the ablations distinct names or values")
    for where, det, opts in to_check:
        _check_options(path, where, det, opts)
    return ExperimentConfig(
        path=path.resolve(), name=str(raw.get("name", path.stem)), out=out_dir, seed=seed, bootstrap=bootstrap,
        split=split, data=_resolve(base, data_cfg["path"]), build_demo=demo,
        shift={"path": _resolve(base, shift["path"]) if shift.get("path") else out_dir / "shifted",
               "severity": severity, "only": only, "seed": int(shift.get("seed", seed))},
        categories=categories, global_categories=global_categories, cells=cells,
        plot_metric=str(plots.get("metric", "image_auroc")), raw=raw,
    )
