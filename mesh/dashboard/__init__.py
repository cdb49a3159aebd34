"""`mesh dashboard`: a web UI on 127.0.0.1, fed by the controller, talking to it as the operator.

    _auth     the Host check and the per-run token (pure)
    _routes   what each path is, and the static files of static/ (pure)
    _sse      server-sent events framing (pure)
    _model    topics: what the page shows, built from the controller's answers (pure)
    _feed     polls the controller (status, stats, config, routes) and runs `mesh check`
    _server   the HTTP/1.1 server (trio, the proxy's sans-IO request reader)
    static/   the page: plain HTML, CSS, JavaScript and SVG, no build step and nothing fetched from elsewhere

Nothing here changes the mesh: every route is a GET.
"""

from __future__ import annotations

import errno
import logging
from collections.abc import Callable

import trio

from mesh.dashboard._auth import Gate, new_token
from mesh.dashboard._feed import ControllerAccess, ControllerLink, Feed, Periods
from mesh.dashboard._model import Topics
from mesh.dashboard._routes import load_static
from mesh.dashboard._server import Changes, DashboardServer
from mesh.errors import MeshError

__all__ = ["DEFAULT_PORT", "ControllerAccess", "Periods", "serve_dashboard"]

log = logging.getLogger("mesh.dashboard")

DEFAULT_PORT = 50750  # Linkerd viz's; taken → any free port, unless the port was asked for


async def _listen(port: int | None) -> list[trio.SocketListener]:
    try:
        return await trio.open_tcp_listeners(DEFAULT_PORT if port is None else port, host="127.0.0.1")
    except OSError as exc:
        if exc.errno != errno.EADDRINUSE:
            raise MeshError(
                f"cannot listen on 127.0.0.1:{port if port is not None else DEFAULT_PORT}: {exc.strerror}"
            ) from None
        if port is not None:
            raise MeshError(
                f"127.0.0.1:{port} is in use", hint="choose another with --port N, or --port 0 for any free port"
            ) from None
        log.info("port %d is in use; taking a free one", DEFAULT_PORT)
        return await trio.open_tcp_listeners(0, host="127.0.0.1")


async def serve_dashboard(
    access: ControllerAccess,
    on_ready: Callable[[str], None],
    port: int | None = None,
    periods: Periods = Periods(),
) -> None:
    """Serve until cancelled. ``on_ready(url)`` once listening, with the URL that carries the token.

    The controller must answer once before the URL is given (a MeshError otherwise, with its
    hint); after that the dashboard keeps serving through controller restarts and says so.
    """
    static = load_static()
    link = ControllerLink(access)
    await link.client()
    listeners = await _listen(port)
    gate = Gate(new_token(), listeners[0].socket.getsockname()[1])
    changes = Changes()
    topics = Topics(changes.notify)
    server = DashboardServer(gate, static, topics, changes, link)
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(Feed(link, topics, access.run_check, periods).run)
            nursery.start_soon(trio.serve_listeners, server.serve_connection, listeners)
            on_ready(gate.url())
    finally:
        await link.aclose()
