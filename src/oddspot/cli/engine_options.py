"""`--engine local|ray` on predict and evaluate: the same verb, run by this process or on a Ray cluster.

`@engine_options(task, verb)` (placed right under `@click.command`, or above it) adds `--engine`,
`--address`, `--actors` and `--batch-size` (unless the verb has its own `--batch-size`, which
then sizes the Ray batches too). `--engine local` (the default) runs the verb's own body; `--engine
ray` runs `oddspot.scale` with the verb's options instead. Ray is optional: without it, `--engine
ray` is a one-line error naming `pip install 'oddspot[ray]'`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from oddspot.errors import OddspotError

ENGINES = ("local", "ray")
RAY_ONLY = ("address", "actors", "batch_size")
DEFAULT_ACTORS = 2


def _options(has_batch_size: bool) -> list[Callable[[Callable], Callable]]:
    options = [
        click.option("--engine", type=click.Choice(ENGINES), default="local", show_default=True,
                     help="local: this process; ray: Ray Data over an actor pool (pip install 'oddspot[ray]')."),
        click.option("--address", default=None,
                     help="--engine ray: the cluster (auto: the running one; ray://HOST:PORT); default: a local one."),
        click.option("--actors", type=click.IntRange(1, 4096), default=DEFAULT_ACTORS, show_default=True,
                     help="--engine ray: actors, each holding the model once (--threads threads each)."),
    ]
    if not has_batch_size:
        options.append(click.option("--batch-size", "batch_size", type=click.IntRange(1, 4096), default=None,
                                    help="--engine ray: inputs per batch sent to an actor [default: the verb's --batch, else 16]."))
    return options


def engine_options(task: str, verb: str) -> Callable[[Any], Any]:
    """Decorator adding the engine options to the `verb` command of `task` (see the module docstring)."""

    def wrap(target: Any) -> Any:
        command = target if isinstance(target, click.Command) else None
        body = command.callback if command is not None else target
        params = command.params if command is not None else getattr(target, "__click_params__", [])
        own_batch_size = any(p.name == "batch_size" for p in params)

        @functools.wraps(body)
        def run(*args: Any, engine: str = "local", address: str | None = None, actors: int = DEFAULT_ACTORS,
                **kwargs: Any) -> Any:
            batch_size = kwargs.get("batch_size") if own_batch_size else kwargs.pop("batch_size", None)
            if engine == "ray":
                return run_on_ray(task, verb, kwargs, address=address, actors=actors, batch_size=batch_size)
            given = [name for name, set_ in (("--address", address is not None), ("--actors", actors != DEFAULT_ACTORS),
                                             ("--batch-size", not own_batch_size and batch_size is not None)) if set_]
            if given:
                raise OddspotError(f"{', '.join(given)}: only with --engine ray; add --engine ray or leave them out")
            return body(*args, **kwargs)

        if command is not None:
            command.callback = run
        decorated: Any = command if command is not None else run
        for option in _options(own_batch_size):
            decorated = option(decorated)  # click appends to a command's params, or to the function's
        return decorated

    return wrap


def _common(kwargs: dict[str, Any], out: Path, *inputs: Any) -> dict[str, Any]:
    """Checks and settings every Ray verb shares: --out apart from the inputs, threads, device, runtime, pixel budget."""
    from oddspot.cli.common import apply_runtime, check_out

    check_out(out, *inputs)
    threads = int(kwargs.get("threads") or 1)
    device = apply_runtime(threads, kwargs.get("device") or "auto", lazy=True)
    return {"threads": threads, "device": device, "runtime": kwargs.get("runtime") or "auto",
            "precision": kwargs.get("precision") or "fp32", "max_pixels": kwargs.get("max_pixels")}


def run_on_ray(task: str, verb: str, kwargs: dict[str, Any], address: str | None, actors: int,
               batch_size: int | None) -> None:
    """Run `task verb` on Ray with the command's own options (`kwargs`), printing what the local verb prints."""
    from oddspot.data.image_io import pixel_budget
    from oddspot.scale.engine import reachable, require_ray

    if verb not in ("predict", "evaluate"):
        raise OddspotError(f"--engine ray: `{task} {verb}` runs on this machine only; leave --engine out")
    require_ray()
    reachable(address)  # before the model loads: a wrong address is an error in seconds
    ray = {"address": address, "actors": actors}
    with pixel_budget(kwargs.get("max_pixels")):
        (_predict if verb == "predict" else _evaluate)(task, kwargs, ray, batch_size)


def _predict(task: str, kw: dict[str, Any], ray: dict[str, Any], batch_size: int | None) -> None:
    from oddspot.cli.common import echo_err
    from oddspot.scale.predict import predict

    out, run = Path(kw["out"]), Path(kw["run"])
    if task == "inspect":
        if kw.get("fast_decode"):
            raise OddspotError("--fast-decode: not with --engine ray (it decodes as `oddspot predict` does by default); "
                               "leave it out")
        sources, options = list(kw["inputs"]), {"save_maps": bool(kw.get("save_maps"))}
    elif task == "road":
        sources, options = list(kw["images"]), {"save_scores": tuple(kw.get("save_scores") or ()),
                                                "panels": not kw.get("no_panels")}
    else:
        sources, options = [kw["frames"]], {"protocol": kw.get("protocol") or "trained", "cache_dir": kw.get("cache_dir")}
    local = [s for s in sources if "://" not in str(s)]
    common = _common(kw, out, run, *local, kw.get("cache_dir"))
    size = batch_size or kw.get("batch") or 16
    result = predict(task, run, sources, out, batch_size=size, warn=echo_err, **ray, **common, **options)
    errors = out / "errors.csv"
    if not result["scored"]:
        raise OddspotError(f"none of the {result['skipped']} inputs could be read; they are listed in {errors}")
    resumed = f", {result['resumed']} already in {out / 'shards'}" if result["resumed"] else ""
    tail = f", {result['skipped']} skipped (see {errors})" if result["skipped"] else ""
    click.echo(f"scored {result['scored']} inputs on Ray ({ray['actors']} actors, {result['runtime']}){resumed}{tail} "
               f"-> {result['scores']}")


def _evaluate(task: str, kw: dict[str, Any], ray: dict[str, Any], batch_size: int | None) -> None:
    from oddspot.cli.common import echo_err, inspect_metrics_line
    from oddspot.scale import evaluate as scale

    out, run = Path(kw["out"]), Path(kw["run"])
    if task == "inspect":
        given = kw.get("data") or kw.get("normal")  # none: the data the run's run.json records
        common = _common(kw, out, run, *([Path(given)] if given else []))
        m = scale.evaluate_inspect(run, given, kw.get("category"), out, kw.get("split"), kw.get("bootstrap", 1000),
                                   kw.get("seed", 0), batch=batch_size or 32, gallery=kw.get("gallery", 12), warn=echo_err,
                                   layout="folder" if kw.get("normal") else kw.get("layout"),
                                   abnormal=kw.get("abnormal"), masks=kw.get("masks"),
                                   **ray, **common)
        line = inspect_metrics_line(m)
    elif task == "road":
        from oddspot.data.road_benchmarks import detect_road_layout

        data = Path(kw["data"])
        layout = kw.get("layout") or "auto"
        if (detect_road_layout(data) if layout == "auto" else layout) != "streethazards":
            raise OddspotError(f"{data}: --engine ray evaluates StreetHazards folders only, not the benchmarks of "
                               "binary labels; leave --engine out")
        common = _common(kw, out, run, data)
        m = scale.evaluate_road(run, data, out, batch_size=batch_size or 8, panels=kw.get("panels", 4), log=echo_err,
                                **ray, **common)
        seg = m["segmentation"]
        scores = ", ".join(f"{name} AUROC {r['pooled'].get('auroc', float('nan')):.4f}"
                           for name, r in m["anomaly"]["scores"].items())
        line = f"validation mIoU {seg['miou']:.3f}; test pixels: {scores}"
    else:
        data = Path(kw["data"])
        common = _common(kw, out, run, data, kw.get("labels"), kw.get("cache_dir"))
        m = scale.evaluate_video(run, data, out, layout=kw.get("layout", "auto"), labels=kw.get("labels"),
                                 skip_first=kw.get("skip_first", 0), protocol=kw.get("protocol", "trained"),
                                 cache_dir=kw.get("cache_dir"), warn=echo_err, **ray, **common)
        line = f"{m['kind']}: micro AUROC {m['micro_auroc']:.4f}  macro AUROC {m['macro_auroc']:.4f}  AP {m['ap']:.4f}"
    if kw.get("report"):
        from oddspot.report import write_report

        click.echo(f"report: {write_report(out, warn=echo_err)}")
    click.echo(f"{line} (Ray, {ray['actors']} actors) -> {out / 'metrics.json'}")
