"""What every Ray job of oddspot shares: connecting, the actor pool's options, and the test-only fault hook.

Ray and pyarrow are optional (`pip install 'oddspot[ray]'`) and imported only inside these
functions. Scoring runs on Ray Data: `map_batches` over a callable class in an actor pool, so the
model is loaded once per actor (in the class's `__init__`) and every batch reuses it. Actors that
die are restarted by Ray and their batch retried (Ray Data sets `max_restarts` and
`max_task_retries` to -1 for actor pools; older Ray gets them here).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from oddspot.errors import OddspotError
from oddspot.progress import enabled as progress_enabled

RAY_EXTRA = "pip install 'oddspot[ray]'"
KILL_AFTER_ENV = "ODDSPOT_TEST_KILL_AFTER"
KILL_MARKER_ENV = "ODDSPOT_TEST_KILL_MARKER"
WORKER_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}
"""Environment of every worker: idle OpenMP threads sleep (spinning ones starve the other actors of a node)."""
DECODE_CPUS = 0.25
"""Logical CPUs a decode task asks for: decoding interleaves with the actors instead of waiting for a free core."""


def require_ray() -> Any:
    """The `ray` module with Ray Data and pyarrow, or a one-line error saying how to install them."""
    try:
        import pyarrow  # noqa: F401
        import ray
        import ray.data
    except ImportError:
        raise OddspotError(f"--engine ray needs Ray Data and pyarrow, which are not installed; {RAY_EXTRA}") from None
    return ray


def connect(address: str | None = None) -> Any:
    """Ray, connected: to `address` ('auto': the running cluster; 'ray://HOST:PORT': a remote one), or to a
    local instance started here when it is None. A session already connected is reused."""
    ray = require_ray()
    if not ray.is_initialized():
        reachable(address)
        options: dict[str, Any] = {"runtime_env": {"env_vars": WORKER_ENV}}
        if address is None:  # a local instance: its workers inherit this environment (a runtime env costs seconds)
            for name, value in WORKER_ENV.items():
                os.environ.setdefault(name, value)
            options = {}
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, logging_level="warning", **options)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise OddspotError(f"--address {address}: cannot connect to a Ray cluster ({first}); start one with "
                               "`ray start --head`, or leave --address out for a local one") from None
    context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False  # oddspot draws its own bar over the inputs (`row_progress`)
    context.print_on_execution_start = False
    return ray


def reachable(address: str | None, timeout: float = 5.0) -> None:
    """A one-line error when `address` (HOST:PORT or ray://HOST:PORT) does not answer within `timeout` seconds
    (Ray itself would keep retrying for minutes); `auto` and a local instance are left to Ray."""
    import socket

    if address is None or address in ("auto", "local"):
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    if not host or not port.isdigit():
        raise OddspotError(f"--address {address}: use auto, HOST:PORT or ray://HOST:PORT")
    try:
        socket.create_connection((host, int(port)), timeout=timeout).close()
    except OSError as exc:
        raise OddspotError(f"--address {address}: no Ray cluster answers there ({exc.strerror or exc}); start one "
                           "with `ray start --head`, or leave --address out for a local one") from None


def cluster_cpus(ray: Any) -> float:
    """Logical CPUs of the cluster (at least 1)."""
    return max(1.0, float(ray.cluster_resources().get("CPU", 1.0)))


def actor_cpus(ray: Any, actors: int, threads: int) -> float:
    """CPUs each actor reserves: its torch threads, but never so many that no decode task can run beside the pool."""
    spare = (cluster_cpus(ray) - DECODE_CPUS) / actors
    return max(0.05, min(float(threads), spare))


def pool_options(ray: Any, actors: int, threads: int) -> dict[str, Any]:
    """Keyword arguments of `map_batches` for a fixed pool of `actors` actors that Ray restarts when they die."""
    if actors < 1:
        raise OddspotError(f"--actors {actors}: use at least 1")
    options: dict[str, Any] = {"compute": ray.data.ActorPoolStrategy(size=actors),
                               "num_cpus": actor_cpus(ray, actors, threads)}
    if tuple(int(p) for p in ray.__version__.split(".")[:2]) < (2, 50):  # newer Ray sets these itself for actors
        options.update(max_restarts=-1, max_task_retries=-1)
    return options


def blocks(n_items: int, actors: int, per_block: int) -> int:
    """How many blocks a dataset of `n_items` is cut into: enough to keep every actor busy and to retry small parts."""
    return max(1, min(n_items, max(2 * actors, -(-n_items // per_block))))


def fault_hook() -> dict[str, Any] | None:
    """The test-only fault hook read on the driver: {after, marker} from ODDSPOT_TEST_KILL_AFTER and _MARKER."""
    after = os.environ.get(KILL_AFTER_ENV)
    if not after:
        return None
    marker = os.environ.get(KILL_MARKER_ENV)
    if not after.isdigit() or not marker:
        raise OddspotError(f"{KILL_AFTER_ENV}={after!r:.20}: set it to a number of batches, and {KILL_MARKER_ENV} to a "
                           "file path (test-only: one actor exits once after that many batches)")
    return {"after": int(after), "marker": marker}


class FaultInjector:
    """Test-only: the first actor to reach `after` batches exits the process, once per marker file."""

    def __init__(self, hook: dict[str, Any] | None) -> None:
        self.hook = hook
        self.calls = 0

    def tick(self) -> None:
        """Count one batch; exit abruptly (as a crash would) when the hook says so and nobody did yet."""
        self.calls += 1
        if self.hook is None or self.calls <= self.hook["after"]:
            return
        try:
            fd = os.open(self.hook["marker"], os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os._exit(1)


@contextmanager
def row_progress(total: int, description: str) -> Iterator[Callable[[int], None]]:
    """A progress bar over `total` inputs on stderr (when interactive); yields `advance(n)`."""
    if not progress_enabled():
        yield lambda n: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    columns = (TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    with Progress(*columns, transient=True) as progress:
        task = progress.add_task(description, total=total)
        yield lambda n: progress.advance(task, n)


def one_line(exc: BaseException) -> OddspotError | None:
    """The OddspotError a Ray error carries (a worker's one-line error, wrapped by Ray), or None."""
    seen: set[int] = set()
    stack: list[Any] = [exc]
    while stack:
        e = stack.pop()
        if not isinstance(e, BaseException) or id(e) in seen:
            continue
        seen.add(id(e))
        if isinstance(e, OddspotError):
            return OddspotError(str(e))
        stack += [e.__cause__, e.__context__, getattr(e, "cause", None)]
    return None


def broadcast_model(run: str | Path, runtime: str, precision: str) -> dict[str, Any]:
    """The model every actor loads: its folder's files (for a fitted run on an exported runtime, the
    cached export) and the runtime that loads them; `share` puts the files in the object store once."""
    from oddspot.export.choice import inference_folder, model_files

    folder, loads_with = inference_folder(run, runtime, precision)
    return {"files": model_files(folder), "runtime": loads_with}


def share(ray: Any, worker_kwargs: dict[str, Any]) -> dict[str, Any]:
    """`worker_kwargs` with the broadcast model's files put once in the object store (actors fetch them from there)."""
    model = worker_kwargs.get("model")
    if model is None or not isinstance(model.get("files"), dict):
        return worker_kwargs
    return {**worker_kwargs, "model": {**model, "files": ray.put(model["files"])}}
