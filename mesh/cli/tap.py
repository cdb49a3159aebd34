"""`mesh tap`: watch requests live, one line each, from every proxy (through the controller)."""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Annotated, Any, Optional

import typer

from mesh.cli._output import OutputFormat, OutputOption
from mesh.cli._state import state
from mesh.home import MeshHome

DEFAULT_MAX_RPS = 100.0

ServiceArgument = Annotated[
    Optional[str], typer.Argument(metavar="SERVICE", help="Only requests from or to this service.", show_default=False)
]
PathOption = Annotated[
    Optional[str], typer.Option("--path", help="Only paths starting with this prefix.", show_default=False)
]
MethodOption = Annotated[Optional[str], typer.Option("--method", help="Only this HTTP method.", show_default=False)]
AuthorityOption = Annotated[
    Optional[str], typer.Option("--authority", help="Only this :authority (Host).", show_default=False)
]
MaxRpsOption = Annotated[
    float, typer.Option("--max-rps", help="At most this many events per second (per proxy, and merged).", min=0.001)
]


DirectionOption = Annotated[
    Optional[str],
    typer.Option("--direction", help="inbound or outbound (as the reporting proxy sees it).", show_default=False),
]


def tap_query(
    service: str | None,
    path: str | None,
    method: str | None,
    direction: str | None,
    authority: str | None,
    max_rps: float | None,
) -> dict[str, str]:
    """The /v1/tap query; checked here so a typo fails before anything connects."""
    from mesh.errors import MeshError
    from mesh.telemetry import TapFilter

    query = {
        "service": service,
        "path": path,
        "method": method,
        "direction": direction,
        "authority": authority,
        "max_rps": f"{max_rps:g}" if max_rps else None,
    }
    given = {k: v for k, v in query.items() if v}
    try:
        TapFilter.from_query(given)
    except ValueError as exc:
        raise MeshError(f"mesh tap: {exc}") from None
    return given


@asynccontextmanager
async def tap_stream(client: Any, query: dict[str, str]) -> AsyncIterator[AsyncIterator[Any]]:
    """The /v1/tap stream on an operator client; the controller's refusals become MeshErrors."""
    from urllib.parse import urlencode

    from mesh.errors import ControllerError
    from mesh.net import ApiError

    path = "/v1/tap" + (f"?{urlencode(query)}" if query else "")
    try:
        async with client.stream("GET", path) as events:
            yield events
    except ApiError as exc:
        raise ControllerError(f"tap: {exc.message}", hint=exc.hint) from None


async def follow_tap(home: MeshHome, query: dict[str, str], handle: Callable[[dict[str, Any]], bool]) -> None:
    """Stream /v1/tap; ``handle(item)`` for each item until it returns False or the stream ends."""
    from mesh.net import controller_client

    async with controller_client(home) as client, tap_stream(client, query) as events:
        await consume(events, handle)


async def consume(events: AsyncIterator[Any], handle: Callable[[dict[str, Any]], bool]) -> None:
    async for item in events:
        if isinstance(item, dict) and handle(item) is False:
            return


def notice(item: dict[str, Any]) -> str | None:
    """The stderr line for a stream item that is not a request (None: say nothing)."""
    kind = item.get("type")
    where = f"{item.get('service', '?')} ({item.get('address') or item.get('instance') or '?'})"
    if kind == "tapping":
        return f"tapping {where}"
    if kind == "unreachable":
        return f"cannot tap {where}: {item.get('error')}"
    if kind == "waiting":
        return str(item.get("message") or "waiting for proxies")
    if kind == "dropped":
        return (
            f"{item.get('count')} events dropped by {item.get('proxy') or item.get('instance') or 'a proxy'}: "
            "this listener was too slow (narrow the filter or lower --max-rps)"
        )
    return None


def tap(
    ctx: typer.Context,
    service: ServiceArgument = None,
    path: PathOption = None,
    method: MethodOption = None,
    direction: DirectionOption = None,
    authority: AuthorityOption = None,
    max_rps: MaxRpsOption = DEFAULT_MAX_RPS,
    max_events: Annotated[
        Optional[int], typer.Option("--max", help="Stop after this many requests.", min=1, show_default=False)
    ] = None,
    show_query: Annotated[
        bool,
        typer.Option(
            "--show-query",
            help="Show query-string values (redacted by default: they may hold tokens); logged by the controller.",
        ),
    ] = False,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Show requests live as the proxies see them; Ctrl-C stops.

    Each call between two meshed services shows twice: proxy=out at the caller, proxy=in at the callee.
    """
    import trio

    from mesh.debug.render import tap_line
    from mesh.telemetry import TapEvent

    home = state(ctx).home
    query = tap_query(service, path, method, direction, authority, max_rps)
    if show_query:
        from mesh.telemetry import SHOW_QUERY

        query[SHOW_QUERY] = "1"
    as_json = output is OutputFormat.json
    seen = 0

    def handle(item: dict[str, Any]) -> bool:
        nonlocal seen
        if item.get("type") != "request":
            line = notice(item)
            if line:
                sys.stderr.write(line + "\n")
                sys.stderr.flush()
            return True
        if as_json:
            sys.stdout.write(json.dumps(item, separators=(",", ":")) + "\n")
        else:
            sys.stdout.write(tap_line(TapEvent.from_dict(item)) + "\n")
        sys.stdout.flush()
        seen += 1
        return max_events is None or seen < max_events

    try:
        trio.run(follow_tap, home, query, handle)
    except KeyboardInterrupt:
        raise typer.Exit(0) from None


def register(app: typer.Typer) -> None:
    app.command()(tap)
