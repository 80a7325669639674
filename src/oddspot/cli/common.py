"""Options every task verb shares, with the same names, meanings and checks everywhere.

`--out/-o`, `--config`, `--seed`, `--threads`, `--device` on every `oddspot <task> <verb>`:

- `--config FILE.yaml`: for `fit`, the model's options (a flat mapping); for every other verb, values
  for that verb's own options (keys are option names with `_` for `-`); unknown keys are an error.
- `--seed N` (>= 0): every random choice of the verb; recorded in what the verb writes.
- `--threads N` (>= 1): CPU threads for torch and numpy kernels.
- `--device auto|cpu|cuda`: where networks run; `auto` uses a GPU when there is one.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from oddspot.choices import DEFAULT_MAX_PIXELS, MAX_PIXELS_LIMIT, PRECISIONS, RUNTIMES, SEARCHES
from oddspot.errors import OddspotError
from oddspot.paths import check_out as _check_out

DEVICES = ("auto", "cpu", "cuda")
SEED = click.IntRange(0, 2**32 - 1)
THREADS = click.IntRange(1, 1024)


class FiniteFloat(click.FloatRange):
    """A float option in a range that also refuses nan and inf (click's FloatRange lets nan through)."""

    name = "float"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{value!r} is not a finite number.", param, ctx)
        return super().convert(number, param, ctx)


def check_out(out: Path | None, *inputs: Path | str | None) -> None:
    """Refuse an `--out` that is a file, an input, inside an input folder or holding an input (one line)."""
    _check_out(out, inputs)


def check_replaceable(out: Path, *inputs: Path | str | None) -> None:
    """`check_out`, and refuse now an `--out` the verb could not replace as a whole (a folder of the
    user's own files), before any slow work such as exporting the model."""
    from oddspot.files import check_out_folder

    _check_out(out, inputs)
    check_out_folder(out, inputs)


def max_pixels_option(fn: Callable) -> Callable:
    """Add `--max-pixels N`: every image, frame and mask the verb reads is held to N pixels (from its header)."""

    @functools.wraps(fn)
    def run(*args: Any, max_pixels: int, **kwargs: Any) -> Any:
        from oddspot.data.image_io import pixel_budget

        with pixel_budget(max_pixels):
            return fn(*args, **kwargs)

    return click.option("--max-pixels", type=click.IntRange(1, MAX_PIXELS_LIMIT), default=DEFAULT_MAX_PIXELS,
                        show_default=True,
                        help="Pixel budget per image, frame and mask, checked from the file header before "
                             "decoding; a larger file is skipped and listed in errors.csv.")(run)


MAX_CONFIG_BYTES = 2**20


def read_yaml_mapping(path: Path, what: str = "--config") -> dict[str, Any]:
    """A YAML file holding one mapping (no key twice); anything else is a one-line error naming the file."""
    import yaml

    from oddspot.configs import load_yaml

    if not path.exists():
        raise OddspotError(f"{path}: config file not found; check {what}")
    if path.is_dir():
        raise OddspotError(f"{path}: is a folder; {what} takes a YAML file")
    try:
        with open(path, "rb") as fh:  # a pipe such as <(...) is fine; /dev/zero is bounded
            raw = fh.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise OddspotError(f"{path}: larger than {MAX_CONFIG_BYTES // 2**20} MB; {what} takes a small YAML file")
        data = load_yaml(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise OddspotError(f"{path}: invalid YAML ({first}); fix {what}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise OddspotError(f"{path}: {what} must hold a mapping of option: value")
    return data


def _verb_defaults(ctx: click.Context, param: click.Parameter, value: Path | None) -> Path | None:
    """Eager callback of `--config` on verbs other than fit: the file sets the verb's option defaults."""
    if value is None:
        return None
    values = read_yaml_mapping(value)
    # a key is an option's long name with `_` for `-` (`n_train`, `category` for --category), or its parameter name
    names: dict[str, str] = {}
    for p in ctx.command.params:
        if isinstance(p, click.Option) and p.name not in ("config", "help"):
            names[p.name] = p.name
            names.update({o.lstrip("-").replace("-", "_"): p.name for o in p.opts if o.startswith("--")})
    unknown = sorted(str(k) for k in values if str(k).replace("-", "_") not in names)
    if unknown:
        raise click.UsageError(f"{value}: unknown option(s) {', '.join(unknown)} for `{ctx.command_path}`; "
                               f"known: {', '.join(sorted(names))}")
    given = {names[str(k).replace("-", "_")]: v for k, v in values.items()}
    ctx.default_map = {**(ctx.default_map or {}), **given}
    return value


def common_options(out_help: str, out_required: bool = True, config: str = "verb",
                   seed_help: str = "Seed of every random choice (recorded in the outputs).") -> Callable:
    """Decorator adding the five common options. `config="model"` makes --config the model options (fit)."""

    def wrap(fn: Callable) -> Callable:
        fn = click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
                          help="Where networks run: auto uses a GPU when there is one.")(fn)
        fn = click.option("--threads", type=THREADS, default=2, show_default=True,
                          help="CPU threads for torch and numpy kernels.")(fn)
        fn = click.option("--seed", type=SEED, default=0, show_default=True, help=seed_help)(fn)
        if config == "model":
            fn = click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path), default=None,
                              help="YAML file of model options (a flat mapping; unknown keys are an error).")(fn)
        else:
            fn = click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path), default=None,
                              is_eager=True, expose_value=True, callback=_verb_defaults,
                              help="YAML file of values for this verb's options (unknown keys are an error).")(fn)
        # No explicit default on a required --out: click >= 8.3 treats `default=None` as a given value.
        fn = click.option("--out", "-o", "out", required=out_required, type=click.Path(file_okay=False, path_type=Path),
                          help=out_help)(fn)
        return fn

    return wrap


def apply_runtime(threads: int, device: str, lazy: bool = False) -> str | None:
    """Set the thread count of every kernel library and resolve `--device`: 'cpu', 'cuda', or (lazy) None.

    With `lazy` (verbs that may run an exported model without torch), torch is not imported here:
    its thread count goes through OMP_NUM_THREADS, read when torch first loads, and `--device auto`
    is resolved by whichever runtime loads the model (None).
    """
    import os
    import sys

    from oddspot.runtime.engine import set_threads

    if threads < 1:
        raise OddspotError(f"--threads {threads}: use at least 1")
    if device not in DEVICES:
        raise OddspotError(f"--device {device!r} unknown; use one of {', '.join(DEVICES)}")
    set_threads(threads)
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(threads)
    else:
        os.environ["OMP_NUM_THREADS"] = str(threads)
    if lazy and "torch" not in sys.modules and device != "cuda":
        return None if device == "auto" else device
    try:
        import torch
    except ImportError:
        if device == "cuda":
            raise OddspotError("--device cuda needs PyTorch: pip install 'oddspot[train]'") from None
        return "cpu"
    torch.set_num_threads(threads)
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise OddspotError("--device cuda: no CUDA device is available here; use --device cpu or auto")
    return device


def runtime_options(fn: Callable) -> Callable:
    """`--runtime` and `--precision` on verbs that score with a fitted or exported model."""
    fn = click.option("--search", type=click.Choice(SEARCHES), default="exact", show_default=True,
                      help="PatchCore's memory-bank search: exact (flat scan); ivf (k-means cells) or hnsw (a graph): "
                           "much faster on a large bank, recall below 1 (benchmarks/predict.py), exact distances.")(fn)
    fn = click.option("--precision", type=click.Choice(PRECISIONS), default="fp32", show_default=True,
                      help="Precision of the exported graph when --runtime exports a fitted run (bf16: OpenVINO only; "
                           "int8: calibrated on the run's training images).")(fn)
    return click.option("--runtime", type=click.Choice(RUNTIMES), default="auto",
                        show_default=True,
                        help="What runs the network: auto = OpenVINO, else ONNX Runtime, else torch (the fastest installed "
                             "within fp32 tolerance). A fitted run is exported once and cached in RUN/exports/.")(fn)


def echo_err(message: str) -> None:
    """One line to stderr (warnings and skipped items)."""
    click.echo(message, err=True)


def inspect_metrics_line(metrics: dict[str, Any]) -> str:
    """The headline figures of an inspect evaluation record, on one line (sPRO at FPR 0.05 for MVTec LOCO AD)."""
    pixel = metrics.get("pixel") or {}
    line = (f"image AUROC {metrics['image']['auroc']:.4f}  pixel AUROC {pixel.get('auroc', math.nan):.4f}  "
            f"AUPRO {pixel.get('aupro', math.nan):.4f}")
    spro = (pixel.get("spro") or {}).get("all")
    return line if spro is None else f"{line}  sPRO@0.05 {spro['auc'].get('0.05', math.nan):.4f}"
