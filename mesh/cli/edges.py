"""`mesh edges`: who calls whom, with the SPIFFE identity on each side and whether it is mTLS."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from mesh.cli._output import OutputFormat, OutputOption, render
from mesh.cli._state import state
from mesh.cli.stat import WindowOption, fetch_stats, unreachable_lines


def edges(
    ctx: typer.Context,
    service: Annotated[
        Optional[str], typer.Argument(metavar="SERVICE", help="Only edges from or to this service.", show_default=False)
    ] = None,
    window: WindowOption = "1m",
    output: OutputOption = OutputFormat.table,
) -> None:
    """Every source → destination service pair the proxies have carried traffic for."""
    from mesh.debug.edges import edge_rows
    from mesh.debug.render import edges_table

    stats = fetch_stats(state(ctx).home, window, "mesh edges")
    rows = edge_rows(stats, service)
    data = {
        "edges": [row.to_dict() for row in rows],
        "unreachable": [u for u in stats.get("unreachable") or [] if service is None or u.get("service") == service],
    }

    def view(_: Any) -> list[Any]:
        if not rows:
            return ["no edges yet: no proxy has carried a request" + (f" from or to {service}" if service else "")]
        return [edges_table(rows), *unreachable_lines(stats, service)]

    render(output, data, view)


def register(app: typer.Typer) -> None:
    app.command()(edges)
