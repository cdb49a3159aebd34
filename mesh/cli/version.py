"""`mesh version`."""

from __future__ import annotations

import platform

import typer

from mesh import __version__
from mesh.cli import version_line
from mesh.cli._output import OutputFormat, OutputOption, render


def version(output: OutputOption = OutputFormat.table) -> None:
    """Print the mesh version."""
    data = {"version": __version__, "python": platform.python_version()}
    render(output, data, lambda d: [version_line()])


def register(app: typer.Typer) -> None:
    app.command()(version)
