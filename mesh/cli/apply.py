"""`mesh apply FILE`: validate a mesh.toml and make it the config in force."""

from __future__ import annotations

from typing import Annotated

import typer

from mesh.cli._output import OutputFormat, OutputOption, render
from mesh.cli._state import state


def apply(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(metavar="FILE", help="The mesh.toml to apply.")],
    output: OutputOption = OutputFormat.table,
) -> None:
    """Apply a mesh.toml: checked here, then validated whole by the controller and pushed to proxies."""
    from mesh.config import load_config
    from mesh.net import controller_request, raise_for_status

    config = load_config(file)  # local errors name the file, line and key path
    response = controller_request(state(ctx).home, "POST", "/v1/config", {"config": config.to_dict(), "source": file})
    data = raise_for_status(response, f"the controller rejected {file}")
    render(
        output,
        {"file": file, **data},
        lambda d: [
            f"{d['file']}: applied, config version {d['version']}"
            if d["changed"]
            else f"{d['file']}: unchanged (version {d['version']})"
        ],
    )


def register(app: typer.Typer) -> None:
    app.command()(apply)
