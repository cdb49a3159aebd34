"""`mesh stat`: golden metrics per service and version (success rate, requests/s, latency, TCP)."""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from mesh.cli._output import OutputFormat, OutputOption, render
from mesh.cli._state import state
from mesh.home import MeshHome

WindowOption = Annotated[
    str, typer.Option("--window", "-w", help="Time window for rates and percentiles, e.g. 30s, 1m, 10m.")
]


def fetch_stats(home: MeshHome, window: str, what: str) -> dict[str, Any]:
    """The controller's /v1/stats answer for ``window`` (a duration)."""
    from mesh.config import parse_duration
    from mesh.errors import MeshError
    from mesh.net import controller_request, raise_for_status

    try:
        seconds = parse_duration(window)
    except ValueError as exc:
        raise MeshError(f"{what}: --window: {exc}", hint="e.g. --window 30s, 1m or 10m") from None
    return raise_for_status(controller_request(home, "GET", f"/v1/stats?window={seconds:g}"), what)


def unreachable_lines(stats: dict[str, Any], service: str | None = None) -> list[str]:
    return [
        f"unreachable: {u.get('service')} {u.get('instance')} ({u.get('address') or '?'}): {u.get('error')}"
        for u in stats.get("unreachable") or []
        if service is None or u.get("service") == service
    ]


def stat(
    ctx: typer.Context,
    service: Annotated[
        Optional[str], typer.Argument(metavar="SERVICE", help="Only this service.", show_default=False)
    ] = None,
    window: WindowOption = "1m",
    output: OutputOption = OutputFormat.table,
) -> None:
    """Per service and version: meshed proxies, success rate, requests/s, latency p50/p95/p99, TCP connections."""
    from mesh.debug.render import format_seconds, stat_table
    from mesh.debug.stat import covered_window, stat_json, stat_rows
    from mesh.errors import MeshError

    stats = fetch_stats(state(ctx).home, window, "mesh stat")
    rows = stat_rows(stats, service)
    if service is not None and not rows:
        raise MeshError(f"mesh stat: no service {service!r} in the mesh", hint="`mesh status` lists the services")

    def view(_: Any) -> list[Any]:
        if not rows:
            return ["no services yet: no proxy is registered with the controller"]
        parts: list[Any] = [stat_table(rows)]
        covered, asked = covered_window(stats), stats.get("window_seconds")
        if covered is not None and asked and abs(covered - asked) > max(2.0, asked * 0.1):
            parts.append(
                f"rates over the last {format_seconds(covered)} (asked for {format_seconds(asked)}): "
                "that is what the proxies' history covers so far"
            )
        parts.extend(unreachable_lines(stats, service))
        return parts

    render(output, stat_json(stats, service), view)


def register(app: typer.Typer) -> None:
    app.command()(stat)
