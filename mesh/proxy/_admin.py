"""The proxy's admin server: /metrics, /ready, /live, /config.

Plain HTTP/1.1 on loopback (ephemeral port unless set). Small and separate
from the data path: it shares the HTTP/1 reader, nothing else.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from mesh.proxy._conn import HttpConnection, PeerClosed
from mesh.proxy.protocol.errors import RemoteProtocolError
from mesh.proxy.protocol.http1 import EndOfMessage, RequestHead, RequestReader, simple_response
from mesh.telemetry import CONTENT_TYPE

log = logging.getLogger("mesh.proxy.admin")

# A streaming handler (e.g. /tap) takes over the connection and writes itself.
StreamHandler = Callable[[RequestHead, trio.abc.Stream], Awaitable[None]]


class AdminApp:
    def __init__(
        self,
        metrics: Callable[[], str],
        config: Callable[[], dict[str, Any]],
        ready: Callable[[], bool],
        streams: dict[bytes, StreamHandler] | None = None,
    ) -> None:
        self._metrics = metrics
        self._config = config
        self._ready = ready
        self._streams = streams or {}

    def respond(self, head: RequestHead) -> bytes:
        path = head.target.split(b"?", 1)[0]
        if head.method not in (b"GET", b"HEAD"):
            return simple_response(405, b"method not allowed\n", [(b"Allow", b"GET, HEAD")])
        if path == b"/metrics":
            body = self._metrics().encode()
            return _with_type(simple_response(200, body), CONTENT_TYPE.encode())
        if path == b"/live":
            return simple_response(200, b"live\n")
        if path == b"/ready":
            if self._ready():
                return simple_response(200, b"ready\n")
            return simple_response(503, b"not ready\n")
        if path == b"/config":
            body = json.dumps(self._config(), indent=2, default=str).encode() + b"\n"
            return _with_type(simple_response(200, body), b"application/json")
        return simple_response(404, b"not found: try /metrics, /ready, /live, /config, /tap\n")

    async def serve_connection(self, stream: trio.abc.Stream) -> None:
        conn: HttpConnection[RequestReader] = HttpConnection(stream, RequestReader())
        try:
            while True:
                with trio.move_on_after(30) as idle:
                    events = await conn.receive_events()
                if idle.cancelled_caught:
                    return
                conn.pending = events
                head = conn.pending.pop(0)
                assert isinstance(head, RequestHead)
                # Admin requests have no body worth reading; skip to its end.
                while not any(isinstance(e, EndOfMessage) for e in conn.pending):
                    conn.pending += await conn.receive_events()
                conn.pending = conn.pending[
                    next(i for i, e in enumerate(conn.pending) if isinstance(e, EndOfMessage)) + 1 :
                ]
                path = head.target.split(b"?", 1)[0]
                handler = self._streams.get(path)
                if handler is not None:
                    await handler(head, stream)
                    return
                response = self.respond(head)
                if head.method == b"HEAD":
                    response = response.split(b"\r\n\r\n", 1)[0] + b"\r\n\r\n"
                await conn.send(response)
                if not head.keep_alive:
                    return
        except (PeerClosed, RemoteProtocolError):
            return
        finally:
            await conn.aclose()


def _with_type(response: bytes, content_type: bytes) -> bytes:
    return response.replace(b"text/plain; charset=utf-8", content_type, 1)
