"""`mesh fault SERVICE`: inject delays or errors for a while, for chaos testing."""

from __future__ import annotations

import time
from typing import Annotated, Optional

import typer

from mesh.cli._output import OutputFormat, OutputOption, render
from mesh.cli._state import state


def fault(
    ctx: typer.Context,
    service: Annotated[str, typer.Argument(help="The service whose callers see the fault.")],
    delay: Annotated[Optional[str], typer.Option(help="Delay to add, e.g. 200ms.")] = None,
    abort: Annotated[Optional[int], typer.Option(help="Answer with this status instead (e.g. 503).")] = None,
    percent: Annotated[float, typer.Option(help="Share of requests affected, 0-100.")] = 100.0,
    for_: Annotated[str, typer.Option("--for", help="How long; the fault removes itself after.")] = "5m",
    clear: Annotated[bool, typer.Option("--clear", help="Remove the fault on SERVICE now.")] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Make calls to SERVICE slow or failing for a while (every caller's proxy applies it)."""
    from mesh.config import parse_duration
    from mesh.errors import ConfigError
    from mesh.net import controller_request, raise_for_status

    home = state(ctx).home
    if clear:
        response = controller_request(home, "DELETE", f"/v1/faults?service={service}")
        data = raise_for_status(response, "mesh fault --clear")
        render(output, data, lambda d: [f"fault on {service} removed"])
        return
    try:
        seconds = parse_duration(for_)
        delay_seconds = parse_duration(delay) if delay else None
    except ValueError as exc:
        raise ConfigError(f"invalid duration: {exc}", hint="write durations like 200ms, 30s, 5m") from None
    body = {
        "service": service,
        "delay_seconds": delay_seconds,
        "abort_status": abort,
        "percent": percent,
        "for_seconds": seconds,
    }
    data = raise_for_status(controller_request(home, "POST", "/v1/faults", body), f"mesh fault {service}")

    def view(d: dict) -> list[str]:
        what = []
        if d["delay_seconds"] is not None:
            what.append(f"delay {d['delay_seconds'] * 1000:g}ms")
        if d["abort_status"] is not None:
            what.append(f"abort {d['abort_status']}")
        left = d["expires_at"] - time.time()
        return [
            f"fault on {service}: {' and '.join(what)} for {d['delay_percent']:g}% of calls, for the next {left:.0f}s"
        ]

    render(output, data, view)


def register(app: typer.Typer) -> None:
    app.command()(fault)
