"""`mesh top`: a live table of the busiest request paths, from tap events (like `linkerd viz top`)."""

from __future__ import annotations

import os
import select
import sys
import threading
from collections.abc import Callable
from typing import Annotated, Any

import typer

from mesh.cli._output import OutputFormat, OutputOption
from mesh.cli._state import state
from mesh.cli.tap import (
    DEFAULT_MAX_RPS,
    AuthorityOption,
    DirectionOption,
    MaxRpsOption,
    MethodOption,
    PathOption,
    ServiceArgument,
    consume,
    follow_tap,
    tap_query,
    tap_stream,
)

REFRESH_SECONDS = 1.0
QUIT_KEYS = (b"q", b"Q")


class KeyReader:
    """Reads single keys from a terminal in a thread (cbreak mode: no Enter, no echo).

    The terminal's settings are restored on exit, whatever happens. ``on_key``
    runs in the reader thread; hand work to trio with ``trio.from_thread``.
    """

    def __init__(self, fd: int, on_key: Callable[[bytes], None]) -> None:
        self._fd = fd
        self._on_key = on_key
        self._stop = threading.Event()
        self._saved: Any = None
        self._thread = threading.Thread(target=self._run, name="mesh top keys", daemon=True)

    def __enter__(self) -> KeyReader:
        import termios
        import tty

        self._saved = termios.tcgetattr(self._fd)
        tty.setcbreak(self._fd)
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        import termios

        self._stop.set()
        self._thread.join(timeout=1.0)
        termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                ready, _, _ = select.select([self._fd], [], [], 0.1)
                if not ready:
                    continue
                key = os.read(self._fd, 1)
            except OSError:
                return
            if not key:
                return
            self._on_key(key)


def top(
    ctx: typer.Context,
    service: ServiceArgument = None,
    path: PathOption = None,
    method: MethodOption = None,
    direction: DirectionOption = None,
    authority: AuthorityOption = None,
    max_rps: MaxRpsOption = DEFAULT_MAX_RPS,
    once: Annotated[bool, typer.Option("--once", help="Collect for --seconds, print one table, exit.")] = False,
    seconds: Annotated[float, typer.Option("--seconds", help="How long --once collects.", min=0.1)] = 2.0,
    output: OutputOption = OutputFormat.table,
) -> None:
    """Live table of requests by source, destination, method and path, busiest first; q quits."""
    import trio

    from mesh.debug.top import TopModel

    home = state(ctx).home
    query = tap_query(service, path, method, direction, authority, max_rps)
    model = TopModel()
    proxies: dict[str, str] = {}  # instance → "tapping" | error

    def handle(item: dict[str, Any]) -> bool:
        kind = item.get("type")
        if kind == "request":
            model.add(item)
        elif kind == "dropped":
            model.note_dropped(int(item.get("count") or 0))
        elif kind == "tapping":
            proxies[str(item.get("instance"))] = "tapping"
        elif kind == "unreachable":
            proxies[str(item.get("instance"))] = str(item.get("error"))
        return True

    if once or output is OutputFormat.json:
        _run_once(home, query, handle, seconds)
        _print_snapshot(model, proxies, service, output)
        return
    try:
        trio.run(_live, home, query, handle, model, proxies, service)
    except KeyboardInterrupt:
        pass


def _run_once(home: Any, query: dict[str, str], handle: Callable[[dict[str, Any]], bool], seconds: float) -> None:
    import trio

    async def collect() -> None:
        with trio.move_on_after(seconds):
            await follow_tap(home, query, handle)

    try:
        trio.run(collect)
    except KeyboardInterrupt:
        pass


def _print_snapshot(model: Any, proxies: dict[str, str], service: str | None, output: OutputFormat) -> None:
    from mesh.cli._output import _console, render
    from mesh.debug.render import top_table

    data = {
        "requests": model.events,
        "dropped": model.dropped,
        "proxies": len([v for v in proxies.values() if v == "tapping"]),
        "rows": [row.to_dict() for row in model.rows()],
    }

    def view(_: Any) -> list[Any]:
        width = _console().width
        return [top_table(model.rows(), width=width, title=_title(model, proxies, service))]

    render(output, data, view)


def _title(model: Any, proxies: dict[str, str], service: str | None) -> str:
    tapping = sum(1 for v in proxies.values() if v == "tapping")
    failing = len(proxies) - tapping
    parts = [f"mesh top{' ' + service if service else ''}: {model.events} requests from {tapping} proxies"]
    if failing:
        parts.append(f"{failing} unreachable")
    if model.dropped:
        parts.append(f"{model.dropped} dropped")
    return ", ".join(parts)


async def _live(
    home: Any,
    query: dict[str, str],
    handle: Callable[[dict[str, Any]], bool],
    model: Any,
    proxies: dict[str, str],
    service: str | None,
) -> None:
    import contextlib

    import trio
    from rich.console import Console, Group
    from rich.live import Live
    from rich.text import Text

    from mesh.debug.render import top_table
    from mesh.net import controller_client

    console = Console(highlight=False)
    interactive = console.is_terminal
    token = trio.lowlevel.current_trio_token()

    def view() -> Any:
        width, height = console.size
        rows = model.rows(limit=max(1, height - 5)) if interactive else model.rows()
        hint = "  (q quits)" if interactive else ""
        return Group(
            Text(_title(model, proxies, service) + hint, style="bold"),
            top_table(rows, width=width),
        )

    # Connect first: a controller that is not there is an error, not an empty screen.
    async with controller_client(home) as client, tap_stream(client, query) as events, trio.open_nursery() as nursery:

        def on_key(key: bytes) -> None:
            if key in QUIT_KEYS:
                with contextlib.suppress(trio.RunFinishedError):
                    trio.from_thread.run_sync(nursery.cancel_scope.cancel, trio_token=token)

        keys: Any = contextlib.nullcontext()
        if interactive and sys.stdin.isatty():
            keys = KeyReader(sys.stdin.fileno(), on_key)
        with keys, Live(view(), console=console, screen=interactive, auto_refresh=False, transient=False) as live:

            async def stream() -> None:
                await consume(events, handle)
                nursery.cancel_scope.cancel()  # the controller ended the stream

            nursery.start_soon(stream)
            try:
                while True:
                    live.update(view(), refresh=True)
                    await trio.sleep(REFRESH_SECONDS)
            finally:
                live.update(view(), refresh=True)


def register(app: typer.Typer) -> None:
    app.command()(top)
