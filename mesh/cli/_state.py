"""What the global options of the CLI decided, handed to every command."""

from __future__ import annotations

from dataclasses import dataclass

import typer

from mesh.home import MeshHome


@dataclass(frozen=True)
class CliState:
    home: MeshHome
    debug: bool = False


def state(ctx: typer.Context) -> CliState:
    root = ctx.find_root()
    obj = root.obj
    if not isinstance(obj, CliState):  # a command invoked without the root callback (tests)
        obj = CliState(home=MeshHome.resolve())
        root.obj = obj
    return obj
