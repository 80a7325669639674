"""`oddspot serve RUN [RUN ...]`: score images over HTTP, with a page to inspect them by hand."""

from __future__ import annotations

import importlib.util
import os

import click

from oddspot.choices import DEFAULT_MAX_PIXELS, MAX_PIXELS_LIMIT
from oddspot.cli.common import DEVICES, THREADS, FiniteFloat, apply_runtime, runtime_options
from oddspot.errors import OddspotError

NEEDS = ("fastapi", "fastapi_offline", "uvicorn", "prometheus_client", "multipart")


@click.command("serve")
@click.argument("runs", nargs=-1, required=True, metavar="RUN [RUN ...]")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; only this machine can connect unless you pass another (e.g. 0.0.0.0).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="TCP port (0: any free one).")
@click.option("--max-batch", type=click.IntRange(1, 1024), default=16, show_default=True,
              help="Images per model call at most.")
@click.option("--max-wait-ms", type=FiniteFloat(0, 10_000), default=5.0, show_default=True,
              help="How long the oldest queued image waits for a fuller batch.")
@click.option("--queue", type=click.IntRange(1, 1_000_000), default=256, show_default=True,
              help="Images that may wait per model; beyond it requests get 503 with Retry-After.")
@click.option("--timeout", type=FiniteFloat(0.001, 3600), default=30.0, show_default=True,
              help="Seconds a request may take before it gets 504.")
@click.option("--max-body-mb", type=FiniteFloat(0.001, 4096), default=32.0, show_default=True,
              help="Largest request body in MB (413 above).")
@click.option("--max-pixels", type=click.IntRange(1, MAX_PIXELS_LIMIT), default=DEFAULT_MAX_PIXELS, show_default=True,
              help="Pixel budget per image, checked from its header before decoding (400 above).")
@click.option("--token-env", default="ODDSPOT_TOKEN", show_default=True,
              help="Environment variable holding a bearer token; when it is set, /v1/* and /metrics need "
                   "`Authorization: Bearer <token>`.")
@runtime_options
@click.option("--threads", type=THREADS, default=2, show_default=True, help="CPU threads for torch and numpy kernels.")
@click.option("--device", type=click.Choice(DEVICES), default="auto", show_default=True,
              help="Where networks run: auto uses a GPU when there is one.")
def serve_cmd(runs: tuple[str, ...], host: str, port: int, max_batch: int, max_wait_ms: float, queue: int, timeout: float,
              max_body_mb: float, max_pixels: int, token_env: str, runtime: str, precision: str, search: str, threads: int,
              device: str) -> None:
    """Serve fitted inspect and road RUNs over HTTP (name one NAME=RUN; by default its folder's name).

    POST /v1/models/NAME/predict scores images; GET / is a page to drop images on; GET /docs
    describes the API. Video runs are not served.
    """
    missing = [m for m in NEEDS if importlib.util.find_spec(m) is None]
    if missing:
        raise OddspotError(f"`oddspot serve` needs {missing[0]}: pip install 'oddspot[serve]'")
    from oddspot.serve.models import load_served
    from oddspot.serve.server import bind, serve, url_of
    from oddspot.serve.settings import ServeSettings

    token = os.environ.get(token_env) or None
    explicit = click.get_current_context().get_parameter_source("token_env") != click.core.ParameterSource.DEFAULT
    if explicit and token is None:
        raise OddspotError(f"--token-env {token_env}: that environment variable is not set or empty; set it to the token")
    settings = ServeSettings(host=host, port=port, max_batch=max_batch, max_wait_ms=max_wait_ms, queue=queue,
                             timeout_s=timeout, max_body_bytes=int(max_body_mb * 2**20), max_pixels=max_pixels, token=token)
    where = apply_runtime(threads, device, lazy=True)
    sock = bind(host, port)  # a taken port fails before minutes of loading
    try:
        models = [load_served(spec, runtime, precision, where, search) for spec in runs]
    except BaseException:
        sock.close()
        raise
    url = url_of(sock)
    for m in models:
        click.echo(f"{m.name}: {m.task} {m.kind} {m.version} on {m.runtime} ({m.run})")
    guard = f"bearer token from ${token_env}" if token else "no token"
    click.echo(f"serving {len(models)} model{'s' * (len(models) > 1)} on {url} ({guard}); page {url}/, API {url}/docs; "
               "Ctrl-C stops")
    if not settings.loopback and token is None:
        click.echo(f"warning: --host {host} without a token: anyone who can reach this machine can use the service; "
                   f"set ${token_env}", err=True)
    serve(models, settings, sock)


def register(group: click.Group) -> None:
    """Attach `serve` to the top-level group."""
    group.add_command(serve_cmd)
