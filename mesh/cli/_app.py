"""The typer application behind `mesh`: the root options and every command.

Built on first use (``mesh.cli.app``, or ``main()`` for anything but a plain
``mesh proxy`` run): typer (with pydantic, which it validates options with)
costs ~10 MB that a long-running sidecar should not carry.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Optional

import typer

from mesh.cli._state import CliState
from mesh.home import MeshHome

app = typer.Typer(
    name="mesh",
    help="A lightweight service mesh: mTLS sidecars, control plane and CA in one executable.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@app.callback()
def _root(
    ctx: typer.Context,
    home: Annotated[
        Optional[Path],
        typer.Option("--home", help="State directory (default: $MESH_HOME or ~/.mesh).", show_default=False),
    ] = None,
    debug: Annotated[bool, typer.Option("--debug", help="Show tracebacks and debug logs.")] = False,
    log_format: Annotated[
        Optional[str],
        typer.Option(
            "--log-format",
            metavar="text|json",
            help="Log lines of long-running commands: text (default) or json, one object per line "
            "(default: $MESH_LOG_FORMAT).",
            show_default=False,
        ),
    ] = None,
) -> None:
    ctx.obj = CliState(home=MeshHome.resolve(home), debug=debug)
    if home is not None:
        # Child processes (inject, up) inherit the same home.
        os.environ["MESH_HOME"] = str(ctx.obj.home.root)
    if log_format is not None:
        from mesh._logging import ENV_FORMAT, check_log_format

        # As MESH_HOME: the services `mesh up` runs and re-exec'd sidecars log the same way.
        os.environ[ENV_FORMAT] = check_log_format(log_format)


def _register() -> None:
    import importlib

    for name in (
        "version",
        "ca",
        "config",
        "proxy",
        "inject",
        "gateway",
        "controller",
        "up",
        "status",
        "apply",
        "join",
        "check",
        "tap",
        "top",
        "stat",
        "edges",
        "fault",
        "routes",
        "dashboard",
        "demo",
        "service",
        "store",
        "operator",
    ):
        importlib.import_module(f"mesh.cli.{name}").register(app)


_register()
