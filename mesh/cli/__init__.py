"""The `mesh` command line: one thin module per command (parse → call → render).

Heavy modules (trio, cryptography, rich, zeroconf) are imported inside the
command functions, so `mesh --help` and `mesh version` start fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from mesh.cli._output import print_error
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
) -> None:
    ctx.obj = CliState(home=MeshHome.resolve(home), debug=debug)
    if home is not None:
        # Child processes (inject, up) inherit the same home.
        os.environ["MESH_HOME"] = str(ctx.obj.home.root)


def _register() -> None:
    import importlib

    for name in ("version", "ca", "config", "proxy", "inject", "gateway", "controller", "up", "status", "apply", "join", "check",
                 "tap", "top", "stat", "edges", "fault", "routes"):
        importlib.import_module(f"mesh.cli.{name}").register(app)


_register()


def _first_leaf(group: BaseExceptionGroup) -> BaseException:
    """The first MeshError (or KeyboardInterrupt) in a tree of exception groups, else the group."""
    from mesh.errors import MeshError

    matched = group.subgroup(lambda e: isinstance(e, (MeshError, KeyboardInterrupt)))
    while isinstance(matched, BaseExceptionGroup):
        matched = matched.exceptions[0]
    return matched if matched is not None else group


def main(argv: list[str] | None = None) -> None:
    """Entry point of the `mesh` executable."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    from mesh.errors import MeshError

    try:
        try:
            app(args=args, prog_name="mesh")
        except BaseExceptionGroup as group:
            # trio wraps errors raised inside nurseries; the user wants the error itself.
            leaf = _first_leaf(group)
            if leaf is group:
                raise
            raise leaf from group
    except MeshError as exc:
        if debug:
            import traceback

            traceback.print_exc()
        print_error(exc.message, exc.hint)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # `mesh tap | head` must not print a traceback.
        sys.stderr.close()
        sys.exit(1)
    except Exception as exc:  # noqa: BLE001 - last resort: one clear line, traceback on --debug
        if debug:
            raise
        print_error(f"unexpected {type(exc).__name__}: {exc}", "run again with --debug for the traceback")
        sys.exit(1)
