"""One output helper for every command: a rich view for people, ``-o json`` for scripts.

Commands build plain data (dicts, lists, str, int, float, bool, None), then call
``render``. The view function turns the same data into rich renderables; JSON
output never goes through it, so scripts see exactly the data.
"""

from __future__ import annotations

import enum
import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any

import typer

# Re-exported: commands import it from here; it lives apart so `mesh proxy` needs no typer.
from mesh.cli._errors import print_error as print_error


class OutputFormat(str, enum.Enum):
    table = "table"
    json = "json"


OutputOption = Annotated[
    OutputFormat,
    typer.Option("--output", "-o", help="Output format: table (for people) or json (for scripts)."),
]


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output (scripts, grep, tests) is not folded at 80 columns.
    width = None if stream.isatty() else 200
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


def render(fmt: OutputFormat, data: Any, view: Callable[[Any], Iterable[Any]] | None = None) -> None:
    """Print ``data`` as JSON or through ``view`` (which yields rich renderables or str)."""
    if fmt is OutputFormat.json:
        sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
        return
    console = _console()
    if view is None:
        console.print(key_value_table(data) if isinstance(data, dict) else str(data))
        return
    for part in view(data):
        console.print(part)


def key_value_table(data: dict[str, Any], title: str | None = None) -> Any:
    from rich.table import Table

    table = Table(show_header=False, box=None, title=title, title_justify="left", pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    for key, value in data.items():
        table.add_row(key, _cell(value))
    return table


def rows_table(columns: Sequence[str], rows: Iterable[Sequence[Any]], title: str | None = None) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left", header_style="bold")
    for column in columns:
        table.add_column(column)
    for row in rows:
        table.add_row(*(_cell(v) for v in row))
    return table


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


def print_ok(message: str) -> None:
    sys.stdout.write(message + "\n")
