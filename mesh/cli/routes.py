"""`mesh routes SERVICE`: the routes in force, with golden metrics per route."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mesh.cli._output import OutputFormat, OutputOption, render, rows_table
from mesh.cli._state import state


def routes(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="The service whose routes to show.")],
    output: OutputOption = OutputFormat.table,
) -> None:
    """Show SERVICE's routes (first match wins) with requests, success rate and latency per route."""
    from mesh.net import controller_request, raise_for_status

    data = raise_for_status(controller_request(state(ctx).home, "GET", f"/v1/routes?service={service}"), "mesh routes")
    render(output, data, routes_view)


def _match(route: dict[str, Any]) -> str:
    match = route.get("match") or {}
    parts = [f"{k.removeprefix('path_')}={v}" for k, v in match.items() if k != "headers"]
    parts += [f"{k}: {v}" for k, v in (match.get("headers") or {}).items()]
    return ", ".join(parts) or "*"


def _split(route: dict[str, Any]) -> str:
    return (
        " / ".join(
            f"{','.join(f'{k}={v}' for k, v in t['labels'].items())} {t['weight']}%" for t in route.get("split") or []
        )
        or "-"
    )


def routes_view(data: dict[str, Any]) -> list[Any]:
    if not data["routes"]:
        return [
            f"no routes for {data['service']} (config version {data['config_version']}): requests go to every endpoint"
        ]
    rows = []
    for row in data["routes"]:
        route = row["route"]
        fault = route.get("fault") or {}
        rows.append(
            (
                row["name"],
                _match(route),
                _split(route),
                route.get("timeout", "10s"),
                (route.get("retries") or {}).get("attempts", 2),
                ", ".join(f"{k}={v}" for k, v in fault.items()) or "-",
                row["requests"],
                "-" if row["success_rate"] is None else f"{row['success_rate'] * 100:.1f}%",
                "-" if row["p50_ms"] is None else f"{row['p50_ms']:.1f}ms",
                "-" if row["p99_ms"] is None else f"{row['p99_ms']:.1f}ms",
            )
        )
    table = rows_table(
        ("ROUTE", "MATCH", "SPLIT", "TIMEOUT", "RETRIES", "FAULT", "REQUESTS", "SUCCESS", "P50", "P99"),
        rows,
        title=f"routes of {data['service']} (config version {data['config_version']}; first match wins)",
    )
    parts: list[Any] = [table]
    parts += [f"unreachable: {u}" for u in data.get("unreachable", [])]
    return parts


def register(app: typer.Typer) -> None:
    app.command()(routes)
